"""fsck: prove the repository is whole (every object, every root, everything reached)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import codecs
from .errors import CorruptObject, ObjectNotFound
from .ids import hash_bytes, to_hex
from .kinds import File, PackedTensor
from .reach import mark

if TYPE_CHECKING:
    from .repository import Repository


@dataclass
class FsckReport:
    objects: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(repo: Repository, progress: Callable[[int, int], None] | None = None) -> FsckReport:
    """Re-verify every stored object (SHA-256 of decoded bytes), every root (refs,
    reflogs, pins: the roots() of reach) and that everything they reach is there."""
    with repo.write_session():  # holds off gc: a half-done sweep is not damage
        return _fsck(repo, progress)


def _fsck(repo: Repository, progress: Callable[[int, int], None] | None) -> FsckReport:
    rep = FsckReport()
    odb = repo.odb
    ids = list(odb.store)
    for i, oid in enumerate(ids):
        rep.objects += 1
        try:
            frame = odb.store.get(oid)
            h = codecs.parse_header(frame, oid)
            data = codecs.decode(frame, oid, odb.read_chunk, header=h)
            if hash_bytes(data) != oid:
                raise CorruptObject(to_hex(oid), "content does not hash to its id")
        except (CorruptObject, ObjectNotFound) as e:
            rep.problems.append(str(e))
        except Exception as e:  # noqa: BLE001 - fsck reports every object, never stops at one
            rep.problems.append(f"object {to_hex(oid)}: does not decode ({type(e).__name__}: {e})")
        if progress:
            progress(i + 1, len(ids))
    m, problems = mark(repo)
    if repo.config_problem:
        rep.problems.append(repo.config_problem)
    rep.problems.extend(problems)
    rep.problems.extend(p for p in m.problems if p not in rep.problems)
    if not rep.problems:
        rep.problems.extend(_check_packed_digests(repo, m.packed))
    return rep


def _check_packed_digests(repo: Repository, packed: list[tuple[File, str]]) -> list[str]:
    """A packed tensor's digest stands in for a tensor id (diff trusts it): it must be
    the SHA-256 of the bytes it names. Run once every chunk verified, so a failure here
    is a file object that lies, not a damaged chunk."""
    from .reader import FileView
    out = []
    for f, where in packed:
        view = FileView(repo.odb, f)
        for name, (off, t) in f.tensor_offsets().items():
            if isinstance(t, PackedTensor) and hash_bytes(view.read(off, t.length)) != t.digest:
                out.append(f"{where}[{name}]: packed tensor digest does not match its bytes")
    return out
