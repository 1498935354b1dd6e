"""The derivation history of one file or one weight: every commit that changed it, newest
first, with the size of each change, how its bytes are stored (a keyframe, a delta of the
same path's previous version, or of a similar tensor found by the similarity index),
merges with their strategy, and where it came from when a commit records ``derived_from``."""

from __future__ import annotations

from dataclasses import dataclass

from ..diff import delta_stats, tensor_changes
from ..objects import history
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, to_hex
from ..objects.kinds import File, Tensor, TensorSegment
from ..objects.repository import Repository
from .bump import tensor_signatures
from .lineage import derived_sources


@dataclass
class Event:
    commit: str
    time: int
    message: str
    kind: str                      # added, changed, merged, removed
    rel_l2: float | None = None
    max_abs: float | None = None
    changed_frac: float | None = None
    tensors_changed: int | None = None   # for a file: how many of its tensors changed
    stored: str = ""               # keyframe, delta of the same path, delta of a similar tensor
    merge: str | None = None       # the strategy of a merge
    derived_from: list[str] | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


def parse_target(repo: Repository, spec: str) -> tuple[str, str, str | None]:
    """``REF:PATH[:TENSOR]`` -> (ref, path, tensor or None)."""
    ref, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise CoralError(f"ancestry takes REF:PATH or REF:PATH:TENSOR, not {spec!r}")
    entries = repo.tree_of(ref or "HEAD").entries
    if rest in entries:
        return ref or "HEAD", rest, None
    path, sep, tensor = rest.rpartition(":")
    if sep and path in entries:
        f = repo.read_file(entries[path].file)
        if tensor not in f.tensors():
            raise CoralError(f"{path} at {ref} has no tensor {tensor!r} (`coralfs show {ref}:{path}` lists them)")
        return ref or "HEAD", path, tensor
    raise CoralError(f"{rest.rpartition(':')[0] if sep else rest!r} is not a file of {ref or 'HEAD'}")


class _Ids:
    """What the target is in a commit (None: absent), cached by file id."""

    def __init__(self, repo: Repository, path: str, tensor: str | None) -> None:
        self.repo, self.path, self.tensor = repo, path, tensor
        self.sigs: dict[ObjectId, dict] = {}

    def file(self, commit: ObjectId) -> File | None:
        e = self.repo.tree_of(commit).entries.get(self.path)
        if e is None or e.is_symlink or e.is_dir:
            return None
        return self.repo.read_file(e.file)

    def __call__(self, commit: ObjectId):
        e = self.repo.tree_of(commit).entries.get(self.path)
        if e is None:
            return None
        if self.tensor is None:
            return e.file
        if e.file not in self.sigs:
            self.sigs[e.file] = tensor_signatures(self.repo, self.repo.read_file(e.file))
        return self.sigs[e.file].get(self.tensor)


def _stored(repo: Repository, f: File, tensor: str, parent_chunks: set[ObjectId]) -> str:
    ref = f.tensors().get(tensor)
    if not isinstance(ref, TensorSegment):
        return "packed with the file's small tensors"
    t = repo.odb.get_object(ref.tensor, Tensor)
    if not t.chunks:
        return "empty"
    bases = [repo.odb.chunk_header(c).base for c in t.chunks]
    if all(b is None for b in bases):
        return "keyframe"
    if any(b in parent_chunks for b in bases if b is not None):
        return "delta of the same path"
    return "delta of a similar tensor (similarity index)"


def _chunks(repo: Repository, f: File | None, tensor: str) -> set[ObjectId]:
    ref = f.tensors().get(tensor) if f else None
    if isinstance(ref, TensorSegment):
        return set(repo.odb.get_object(ref.tensor, Tensor).chunks)
    return set()


def ancestry(repo: Repository, spec: str) -> tuple[str, str, str | None, list[Event]]:
    ref, path, tensor = parse_target(repo, spec)
    ident = _Ids(repo, path, tensor)
    events: list[Event] = []
    seen_chunks: set[ObjectId] = set()   # chunks of the versions newer than the one looked at
    for oid in history.topo_order(repo, [repo.resolve(ref)]):
        c = repo.read_commit(oid)
        me = ident(oid)
        parents = [ident(p) for p in c.parents]
        if me is None:
            if parents and any(p is not None for p in parents):
                events.append(Event(to_hex(oid), c.time, c.message, "removed"))
            continue
        if parents and any(p == me for p in parents):
            continue   # unchanged from (one of) its parents
        merge = c.metadata.get("merge") if len(c.parents) > 1 else None
        kind = "merged" if merge else "added" if all(p is None for p in parents) else "changed"
        ev = Event(to_hex(oid), c.time, c.message, kind,
                   merge=merge.get("strategy") if isinstance(merge, dict) else None,
                   derived_from=[s for s, _ in derived_sources(c.metadata)] or None)
        fb = ident.file(oid)
        fa = ident.file(c.parents[0]) if c.parents and parents[0] is not None else None
        if tensor is None:
            if fa is not None and fb is not None:
                ch = [t for t in tensor_changes(repo, fa, fb) if t.status != "changed" or t.changed_frac != 0.0]
                ev.tensors_changed = len(ch)
                rels = [t.rel_l2 for t in ch if t.rel_l2 is not None]
                ev.rel_l2 = max(rels) if rels else None
        else:
            ra, rb = (fa.tensors().get(tensor) if fa else None), fb.tensors().get(tensor)
            if isinstance(ra, TensorSegment) and isinstance(rb, TensorSegment):
                ev.max_abs, ev.rel_l2, ev.changed_frac = delta_stats(
                    repo, repo.odb.get_object(ra.tensor, Tensor), repo.odb.get_object(rb.tensor, Tensor))
            near = seen_chunks | _chunks(repo, fa, tensor)
            ev.stored = _stored(repo, fb, tensor, near)
            seen_chunks |= _chunks(repo, fb, tensor)
        events.append(ev)
    return ref, path, tensor, events
