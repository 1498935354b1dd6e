"""What push, fetch, pull and clone share (sync.py): the remote's errors, opening a
configured remote, reading its objects (packs and loose keys), and the object graph a
push and a fetch walk."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from ..objects import codecs
from ..objects.config import REMOTE_NOT_OPTIONS, remotes
from ..objects.errors import CoralError, ObjectNotFound, ObjectUnavailable
from ..objects.ids import ObjectId, from_hex, to_hex
from ..objects.kinds import BytesSegment, Commit, File, PackSegment, Tag, Tensor, TensorSegment, Tree
from ..objects.repository import Repository
from ..objects.stores import ObjectStore
from . import layout
from .blobs import BlobStore, RemoteError
from .packs import Location, PackIndexes
from .url import open_blobs

log = logging.getLogger(__name__)


class RemoteRefMoved(RemoteError):
    """The remote's branch is not an ancestor of what is pushed (or moved during the push)."""

    exit_code = 4


class DamagedRemoteObject(RemoteError):
    exit_code = 3

    def __init__(self, where: str, oid: ObjectId, key: str, why: str) -> None:
        self.oid, self.key = oid, key
        super().__init__(f"{where}: object {to_hex(oid)} in {key} is damaged ({why}); nothing of it was stored; "
                         f"run `coralfs fsck --remote` and push it again from a repository that has it")


NEWER = " (a newer coralfs wrote it"   # in the why of a frame or object of a later format


class NewerRemoteObject(RemoteError):
    """A correctly framed object of a format version (or kind) this coralfs does not read."""

    def __init__(self, where: str, oid: ObjectId, key: str, why: str) -> None:
        self.oid, self.key = oid, key
        super().__init__(f"{where}: object {to_hex(oid)} in {key} needs a newer coralfs ({why.split(NEWER)[0]}); "
                         f"nothing of it was stored; upgrade coralfs to fetch from this remote")


def refused_object(where: str, oid: ObjectId, key: str, why: str) -> RemoteError:
    """The error for a remote frame that did not verify: damaged, or of a later format."""
    return (NewerRemoteObject if NEWER in why else DamagedRemoteObject)(where, oid, key, why)


# -- opening remotes ---------------------------------------------------------------------

def remote_settings(repo: Repository, name: str | None) -> tuple[str, dict[str, str]]:
    """(name, its url/endpoint/profile/partial) of a configured remote; ``None``: origin,
    or the only remote there is."""
    all_remotes = remotes(repo.config)
    if name is None:
        if "origin" in all_remotes:
            name = "origin"
        elif len(all_remotes) == 1:
            name = next(iter(all_remotes))
        else:
            raise CoralError("no remote named: add one with `coralfs remote add origin URL`"
                             if not all_remotes else f"several remotes ({', '.join(all_remotes)}): name one")
    if name not in all_remotes or not all_remotes[name].get("url"):
        raise CoralError(f"no remote {name!r}: add it with `coralfs remote add {name} URL` (see `coralfs remote list`)")
    return name, all_remotes[name]


def open_remote(repo: Repository, name: str | None) -> tuple[str, BlobStore]:
    name, s = remote_settings(repo, name)
    with naming(name):
        return name, open_configured(s)


def open_configured(fields: dict) -> BlobStore:
    """The BlobStore of a configured remote: its URL, endpoint and backend options."""
    options = {k: v for k, v in fields.items() if k not in REMOTE_NOT_OPTIONS and v != ""}
    return open_blobs(fields["url"], endpoint=fields.get("endpoint") or None, options=options or None)


@contextlib.contextmanager
def naming(remote: str) -> Iterator[None]:
    """Errors of a remote (what it answered, or an object it did not deliver in time)
    say which of the configured remotes it was."""
    try:
        yield
    except (RemoteError, ObjectUnavailable) as e:
        if not str(e).startswith(f"remote {remote}: "):
            e.args = (f"remote {remote}: {e}",)
        raise


def local_store(store: ObjectStore) -> ObjectStore:
    """The repository's own store under a partial clone's fallback (what is really here)."""
    return getattr(store, "local", store)


class RemoteObjects:
    """What a remote has: its pack indexes and its loose keys, loaded once."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.indexes = PackIndexes(blobs)
        self.loose: set[ObjectId] = set()
        for key in blobs.list(layout.LOOSE):
            try:
                self.loose.add(from_hex(key[len(layout.LOOSE):]))
            except ValueError:
                continue

    def __contains__(self, oid: ObjectId) -> bool:
        return oid in self.indexes or oid in self.loose

    def location(self, oid: ObjectId) -> Location | None:
        loc = self.indexes.where.get(oid)
        if loc is None and oid in self.loose:
            loc = Location(layout.loose_key(to_hex(oid)), 0, -1)
        return loc

    def read(self, oid: ObjectId) -> tuple[bytes, str]:
        """(frame, key it came from); ObjectNotFound if the remote has no such object."""
        loc = self.location(oid)
        if loc is None:
            raise ObjectNotFound(to_hex(oid), f"object (not in {self.blobs.url})")
        if loc.length < 0:
            return self.blobs.get(loc.pack), loc.pack
        return self.indexes.read(oid), loc.pack


# -- the object graph --------------------------------------------------------------------

# Kinds by level: everything an object references is of a lower level, or of its own
# (a delta's base, a commit's parents, a tag's tag), which the post-order keeps first.
LEVEL = {"chunk": 0, "tensor": 1, "file": 2, "tree": 3, "commit": 4, "tag": 5}


def children(repo: Repository, oid: ObjectId) -> tuple[str, list[ObjectId]]:
    """(kind, the ids the object references; a chunk: its delta base)."""
    h = codecs.parse_header(repo.store.get_head(oid, codecs.HEADER_SIZE), oid)
    if not h.structured:
        return "chunk", [h.base] if h.base is not None else []
    obj = repo.odb.get_object(oid)
    if isinstance(obj, Commit):
        return "commit", [obj.tree] + ([] if oid in repo.shallow else list(obj.parents))
    if isinstance(obj, Tag):
        return "tag", [obj.target]
    if isinstance(obj, Tree):
        return "tree", [e.file for e in obj.entries.values()]
    if isinstance(obj, File):
        out: list[ObjectId] = []
        for s in obj.segments:
            if isinstance(s, (BytesSegment, PackSegment)):
                out += [c for c, _n in s.chunks]
            elif isinstance(s, TensorSegment):
                out.append(s.tensor)
        return "file", out
    if isinstance(obj, Tensor):
        return "tensor", list(obj.chunks)
    return "chunk", []


def plan_push(repo: Repository, tips: Iterable[ObjectId], have: Callable[[ObjectId], bool]) -> list[ObjectId]:
    """Every object reachable from ``tips`` that the remote lacks, children before parents
    (so a remote never holds an object without what it references). The walk stops at
    objects the remote has: by that same order, it has everything they reach.

    The post-order is then sorted by level (stable: chunks, tensors, files, trees,
    commits, tags), which keeps every reference pointing backwards and puts the small
    structured objects next to each other at the end: a partial or shallow fetch reads
    them with a few range GETs instead of one per object."""
    order: list[tuple[ObjectId, str]] = []
    seen: set[ObjectId] = set()
    stack: list[tuple[ObjectId, str | None]] = [(t, None) for t in tips]
    while stack:
        oid, kind = stack.pop()
        if kind is not None:
            order.append((oid, kind))
            continue
        if oid in seen or have(oid):
            continue
        seen.add(oid)
        kind, kids = children(repo, oid)
        stack.append((oid, kind))
        stack.extend((c, None) for c in kids if c not in seen)
    order.sort(key=lambda x: LEVEL[x[1]])
    return [oid for oid, _kind in order]
