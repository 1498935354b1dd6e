"""Reachability: the roots of a repository and the walk from them that gc and fsck share."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from . import codecs
from .errors import CoralError, CorruptObject, ObjectNotFound
from .ids import ObjectId, to_hex
from .kinds import BytesSegment, Commit, File, PackSegment, ShaObject, Tag, Tensor, Tree, object_type
from .refs import EXPERIMENTS, HEAD, HEADS, REMOTES, TAGS

if TYPE_CHECKING:
    from .repository import Repository

K = TypeVar("K", bound=ShaObject)
Root = tuple[str, ObjectId]  # (where it was found, e.g. "refs/heads/main", the id)


def roots(repo: Repository) -> tuple[list[Root], list[str]]:
    """Every root of ``repo``, and one problem per metadata file that does not parse (a
    damaged ref, reflog or pin is never treated as absent: gc would delete what it keeps).

    The roots are branches, tags, experiment records, remote-tracking refs, a detached HEAD, both ids of every
    reflog entry and every
    pinned id. gc keeps exactly what they reach and fsck checks exactly that, through this
    one function, so the two cannot disagree about what must be there.
    """
    found: list[Root] = []
    problems: list[str] = []
    for prefix in (HEADS, TAGS, EXPERIMENTS, REMOTES):
        refs, bad = repo.refs.scan(prefix)
        found += [(prefix + short, oid) for short, oid in refs.items()]
        problems += [str(e) for e in bad]
    try:
        if repo.refs.head_target() is None:
            head = repo.refs.read(HEAD)
            if head:
                found.append((HEAD, head))
    except CoralError as e:
        problems.append(str(e))
    for name, entries, bad in repo.refs.all_logs():
        if bad is not None:
            problems.append(str(bad))
        found += [(f"logs/{name}", x) for e in entries for x in (e.old, e.new) if x]
    pins, bad_pins = repo.pins.read_all()
    found += [(f"pin {name}", oid) for name, ids in pins.items() for oid in sorted(ids)]
    problems += bad_pins
    return found, problems


def mark(repo: Repository) -> tuple[Marker, list[str]]:
    """Walk everything :func:`roots` reaches: (the walk, with what it saw and the problems
    it met on the way; the problems of the roots themselves)."""
    found, problems = roots(repo)
    m = Marker(repo)
    for where, oid in found:
        m.root(oid, where)
    return m, problems


class Marker:
    """Walks everything reachable; records problems instead of stopping at the first."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.seen: set[ObjectId] = set()
        self.problems: list[str] = []
        self.packed: list[tuple[File, str]] = []  # files with packs, for fsck's digest check

    def _obj(self, oid: ObjectId, kind: type[K], where: str) -> K | None:
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
            if c_id not in getattr(self.repo, "shallow", ()):  # a shallow boundary's parents are not here
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
