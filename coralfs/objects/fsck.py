"""fsck: prove the repository is whole (every object, every root, everything reached)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import codecs
from .errors import CorruptObject, ObjectNotFound
from .ids import ObjectId, hash_bytes, to_hex
from .kinds import File, PackedTensor, Tree, object_type
from .reach import mark

# What a symbolic link entry's File may hold: a kernel's link target (PATH_MAX - 1 bytes,
# no NUL); mounts and export refuse anything else, fsck names it.
MAX_LINK_TARGET = 4095
EMPTY_FILE = File("bytes", [])  # the file of every empty-directory entry

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
    trees = []
    for i, oid in enumerate(ids):
        rep.objects += 1
        try:
            frame = odb.store.get(oid)
            h = codecs.parse_header(frame, oid)
            data = codecs.decode(frame, oid, odb.read_chunk, header=h)
            if hash_bytes(data) != oid:
                raise CorruptObject(to_hex(oid), "content does not hash to its id")
            if h.structured and object_type(data) == "tree":
                trees.append(oid)
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
    rep.problems.extend(_check_special_entries(repo, [t for t in trees if t in m.seen]))
    if not rep.problems:
        rep.problems.extend(_check_packed_digests(repo, m.packed))
    return rep


def _check_special_entries(repo: Repository, trees: list) -> list[str]:
    """A symbolic link entry's File is its target text (1..MAX_LINK_TARGET bytes, no
    NUL); an empty-directory entry's File is the empty File. Checked on every reachable
    tree; a File that is missing or damaged is already reported by the walk."""
    out = []
    checked: dict = {}  # (file id, mode) -> problem or None
    empty = EMPTY_FILE.id
    for tid in trees:
        try:
            tree = repo.odb.get_object(tid, Tree)
        except Exception:  # noqa: BLE001 - reported by the walk
            continue
        for path, e in tree.entries.items():
            if not (e.is_symlink or e.is_dir):
                continue
            key = (e.file, e.mode)
            if key not in checked:
                checked[key] = _special_problem(repo, e.file, e.is_dir, empty)
            if checked[key]:
                out.append(f"tree {to_hex(tid)[:12]}:{path}: {checked[key]}")
    return out


def _special_problem(repo: Repository, fid: ObjectId, is_dir: bool, empty: ObjectId) -> str | None:
    if is_dir:
        return None if fid == empty else f"an empty-directory entry whose file {to_hex(fid)[:12]} is not the empty file"
    try:
        problem = _target_problem(repo, fid)[1]
    except (CorruptObject, ObjectNotFound):
        return None  # the walk names the damaged or missing object
    return f"a symbolic link whose target {problem}" if problem else None


def _target_problem(repo: Repository, fid: ObjectId) -> tuple[bytes, str | None]:
    """(the target text, None) of a link entry's File, or (b"", what is wrong with it);
    a File too large to be a target is never read."""
    from .reader import FileView
    f = repo.read_file(fid)
    if f.size == 0 or f.size > MAX_LINK_TARGET:
        return b"", f"is {f.size} bytes (a link holds 1 to {MAX_LINK_TARGET})"
    if f.tensors():
        return b"", "holds tensors, not a target text"
    data = FileView(repo.odb, f).read(0, f.size)
    if b"\0" in data:
        return b"", "holds NUL"
    return data, None


def read_link(repo: Repository, file_id: ObjectId, where: str = "") -> bytes:
    """The target text of a MODE_SYMLINK entry's File (mounts, export, diff). One that
    cannot be a target (too large, empty, NUL) is a damaged or crafted tree: CorruptObject,
    never served."""
    data, problem = _target_problem(repo, file_id)
    if problem:
        what = f"the target of the symbolic link {where}" if where else "a symbolic link's target"
        raise CorruptObject(to_hex(file_id), f"{what} {problem}")
    return data


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
