"""gc (remove what nothing reaches) and fsck (prove the repository is whole)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import codecs
from .errors import CoralError, CorruptObject, ObjectNotFound
from .ids import ObjectId, hash_bytes, to_hex
from .objects import BytesSegment, Commit, File, PackedTensor, PackSegment, Tag, Tensor, Tree, object_type
from .refs import HEAD, HEADS, TAGS

log = logging.getLogger(__name__)


def collect_roots(repo, with_logs: bool) -> tuple[list[tuple[str, ObjectId]], list[str]]:
    """(where, id) of every root (refs, detached HEAD, pins and, ``with_logs``, reflog
    entries), and one problem per metadata file that does not parse: a damaged
    ref is never treated as absent."""
    roots: list[tuple[str, ObjectId]] = []
    problems: list[str] = []
    for prefix in (HEADS, TAGS):
        refs, bad = repo.refs.scan(prefix)
        roots += [(prefix + short, oid) for short, oid in refs.items()]
        problems += [str(e) for e in bad]
    try:
        if repo.refs.head_target() is None:
            head = repo.refs.read(HEAD)
            if head:
                roots.append((HEAD, head))
    except CoralError as e:
        problems.append(str(e))
    for name, entries, bad in repo.refs.all_logs():
        if bad is not None:
            problems.append(str(bad))
        if with_logs:
            roots += [(f"logs/{name}", x) for e in entries for x in (e.old, e.new) if x]
    pins, bad_pins = repo.pins.read_all()
    roots += [(f"pin {name}", oid) for name, ids in pins.items() for oid in sorted(ids)]
    problems += bad_pins
    return roots, problems


class _Marker:
    """Walks everything reachable; records problems instead of stopping at the first."""

    def __init__(self, repo) -> None:
        self.repo = repo
        self.seen: set[ObjectId] = set()
        self.problems: list[str] = []
        self.packed: list[tuple[File, str]] = []  # files with packs, for fsck's digest check

    def _obj(self, oid: ObjectId, kind, where: str):
        try:
            return self.repo.odb.get_object(oid, kind)
        except (ObjectNotFound, CorruptObject) as e:
            self.problems.append(f"{where}: {e}")
        except Exception as e:  # noqa: BLE001 - a crafted object is reported, never a crash
            self.problems.append(f"{where}: object {to_hex(oid)} does not parse ({type(e).__name__}: {e})")
        return None

    def root(self, oid: ObjectId, where: str) -> None:
        if oid in self.seen:
            return
        if not self.repo.odb.store.has(oid):
            self.problems.append(f"{where}: missing object {to_hex(oid)}")
            return
        try:
            data = codecs.decode(self.repo.odb.store.get(oid), oid)
        except Exception as e:  # noqa: BLE001 - CorruptObject, or a frame that does not parse
            self.problems.append(f"{where}: {e}")
            self.seen.add(oid)
            return
        kind = object_type(data)
        if kind == "commit":
            self.commit(oid, where)
        elif kind == "tag":
            self.seen.add(oid)
            t = self._obj(oid, Tag, where)
            if t is not None:
                self.root(t.target, f"tag {t.name}")
        else:
            # Pins may name trees, files or chunks; each walker marks its own.
            if kind == "tree":
                self.tree(oid, where)
            elif kind == "file":
                self.file(oid, where)
            elif kind == "tensor":
                self.tensor(oid, where)
            elif kind is None:
                self.chunk(oid, where)

    def commit(self, oid: ObjectId, where: str) -> None:
        stack = [oid]
        while stack:
            c_id = stack.pop()
            if c_id in self.seen:
                continue
            self.seen.add(c_id)
            c = self._obj(c_id, Commit, where)
            if c is None:
                continue
            here = f"commit {to_hex(c_id)[:12]}"
            self.tree(c.tree, here)
            stack.extend(c.parents)

    def tree(self, oid: ObjectId, where: str) -> None:
        if oid in self.seen:
            return
        self.seen.add(oid)
        t = self._obj(oid, Tree, where)
        if t is None:
            return
        for path, e in t.entries.items():
            self.file(e.file, f"{where}:{path}")

    def file(self, oid: ObjectId, where: str) -> None:
        if oid in self.seen:
            return
        self.seen.add(oid)
        f = self._obj(oid, File, where)
        if f is None:
            return
        if any(isinstance(s, PackSegment) for s in f.segments):
            self.packed.append((f, where))
        for s in f.segments:
            if isinstance(s, (BytesSegment, PackSegment)):
                for c, _n in s.chunks:
                    self.chunk(c, where)
            else:
                t = self.tensor(s.tensor, f"{where}[{s.name}]")
                if t is not None and t.nbytes != s.length:
                    self.problems.append(f"{where}[{s.name}]: tensor length {t.nbytes} != segment {s.length}")

    def tensor(self, oid: ObjectId, where: str) -> Tensor | None:
        if oid in self.seen:
            return None
        self.seen.add(oid)
        t = self._obj(oid, Tensor, where)
        if t is not None:
            for c in t.chunks:
                self.chunk(c, where)
        return t

    def chunk(self, oid: ObjectId, where: str) -> None:
        while oid is not None and oid not in self.seen:
            self.seen.add(oid)
            try:
                h = self.repo.odb.chunk_header(oid)
            except (ObjectNotFound, CorruptObject) as e:
                self.problems.append(f"{where}: {e}")
                return
            oid = h.base  # a delta's base must stay alive too
            where = f"base of {where}"


@dataclass
class FsckReport:
    objects: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(repo, progress=None) -> FsckReport:
    """Re-verify every stored object (SHA-256 of decoded bytes) and every reference."""
    with repo.write_session():  # holds off gc: a half-done sweep is not damage
        return _fsck(repo, progress)


def _fsck(repo, progress) -> FsckReport:
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
    roots, problems = collect_roots(repo, with_logs=False)
    if getattr(repo, "config_problem", None):
        rep.problems.append(repo.config_problem)
    rep.problems.extend(problems)
    m = _Marker(repo)
    for name, oid in roots:
        m.root(oid, name)
    rep.problems.extend(p for p in m.problems if p not in rep.problems)
    if not rep.problems:
        rep.problems.extend(_check_packed_digests(repo, m.packed))
    return rep


class GcRefused(CoralError):
    exit_code = 3

    def __init__(self, problems: list[str]) -> None:
        count = f" ({len(problems)} problems; the first)" if len(problems) > 1 else ""
        hint = "" if "coralfs fsck" in problems[0] else "; run `coralfs fsck`"
        super().__init__(f"gc refused, nothing was removed{count}: {problems[0]}{hint}")


def _check_packed_digests(repo, packed: list[tuple[File, str]]) -> list[str]:
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


@dataclass
class GcReport:
    kept: int = 0
    removed: int = 0
    freed: int = 0


def gc(repo, grace_seconds: float = 3600.0, dry_run: bool = False) -> GcReport:
    """Remove objects no ref, reflog entry or pin reaches.

    Marks and sweeps under the repository's exclusive session lock, so no commit is
    between storing or reusing an object and moving its ref (docs/decisions.md). Objects
    younger than ``grace_seconds`` are spared as well (a second line of defence for
    writers of older versions).
    """
    with repo.exclusive_session():
        return _gc_locked(repo, grace_seconds, dry_run)


def _gc_locked(repo, grace_seconds: float, dry_run: bool) -> GcReport:
    roots, problems = collect_roots(repo, with_logs=True)
    if problems:
        raise GcRefused(problems)
    m = _Marker(repo)
    for where, oid in roots:
        m.root(oid, where)
    if m.problems:
        raise GcRefused(m.problems)
    rep = GcReport()
    store = repo.odb.store
    for oid in list(store):
        if oid in m.seen:
            rep.kept += 1
            continue
        if store.age(oid) < grace_seconds:
            rep.kept += 1
            continue
        rep.freed += store.size(oid)
        rep.removed += 1
        if not dry_run:
            store.delete(oid)
    if not dry_run and repo.similarity is not None:
        repo.similarity.remove_missing(set(store))
    return rep
