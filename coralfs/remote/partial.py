"""The store of a partial clone (``coralfs clone --filter GLOB``): the repository's own
DiskStore first, then the remote it was cloned from.

A frame the local store lacks is read from the remote's packs (one range GET), verified
like a fetched one (header, decode, SHA-256 against its id) and written locally before
it is returned, so each object crosses the network once and every command (export, show,
mount, diff) works on a partial clone unchanged. The remote is opened on the first miss:
commands that need nothing from it work offline. Configured by ``remote.NAME.partial`` in
the clone's config; coralfs/__init__.py installs it for every Repository that has one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from ..objects import codecs
from ..objects.config import Config, remotes
from ..objects.errors import CorruptObject, ObjectNotFound
from ..objects.ids import ObjectId, hash_bytes, to_hex
from ..objects.stores import ObjectStore

log = logging.getLogger(__name__)


def partial_remote(config: Config) -> str | None:
    """The remote a partial clone reads missing objects from, if this is one."""
    for name, fields in remotes(config).items():
        if fields.get("partial") and fields.get("url"):
            return name
    return None


class FallbackStore(ObjectStore):
    def __init__(self, local: ObjectStore, config: Config, remote: str) -> None:
        self.local = local
        self.remote = remote
        self._fields = remotes(config)[remote]
        self._objs = None
        self._lock = threading.Lock()
        self.fetched = 0        # objects read from the remote (tests and reports)
        self.fetched_bytes = 0

    def _remote(self):
        with self._lock:
            if self._objs is None:
                from .graph import RemoteObjects, open_configured
                self._objs = RemoteObjects(open_configured(self._fields))
            return self._objs

    def _fetch(self, oid: ObjectId) -> bytes:
        objs = self._remote()
        try:
            frame, key = objs.read(oid)
        except (KeyError, ObjectNotFound):
            raise ObjectNotFound(to_hex(oid), f"object (neither here nor in the remote {self.remote})") from None
        h = codecs.parse_header(frame, oid)
        try:
            data = codecs.decode(frame, oid, _full_decoder(self), header=h)
            if hash_bytes(data) != oid:
                raise CorruptObject(to_hex(oid), "content does not hash to its id")
        except CorruptObject as e:
            raise CorruptObject(to_hex(oid), f"{e.why} (as read from {key} of the remote {self.remote})") from None
        self.local.put(oid, frame)
        self.fetched += 1
        self.fetched_bytes += len(frame)
        log.debug("fetched %s on demand from %s (%d bytes)", to_hex(oid)[:12], key, len(frame))
        return frame

    # -- the ObjectStore interface -------------------------------------------------------
    def has(self, oid: ObjectId) -> bool:
        # The remote only if it is open already: a commit on a partial clone must not need
        # the network to check for duplicates (it stores a chunk here that the remote may
        # have too; every reference a walk follows is read through get, which fetches).
        return self.local.has(oid) or (self._objs is not None and oid in self._objs)

    def put(self, oid: ObjectId, frame: bytes) -> bool:
        return self.local.put(oid, frame)

    def get(self, oid: ObjectId) -> bytes:
        try:
            return self.local.get(oid)
        except ObjectNotFound:
            return self._fetch(oid)

    def get_head(self, oid: ObjectId, n: int) -> bytes:
        try:
            return self.local.get_head(oid, n)
        except ObjectNotFound:
            pass
        objs = self._remote()
        loc = objs.location(oid)
        if loc is None or loc.length < 0:
            return self._fetch(oid)[:n]
        # A header only (gc's mark, a walk over delta chains): no need for the body.
        return objs.blobs.get_range(loc.pack, loc.offset, min(n, loc.length))

    def replace(self, oid: ObjectId, frame: bytes) -> None:
        if not self.local.has(oid):
            self._fetch(oid)
        self.local.replace(oid, frame)

    def sync_object(self, oid: ObjectId) -> None:
        self.local.sync_object(oid)

    def size(self, oid: ObjectId) -> int:
        try:
            return self.local.size(oid)
        except ObjectNotFound:
            loc = self._remote().location(oid)
            if loc is None:
                raise
            return loc.length if loc.length >= 0 else len(self._fetch(oid))

    def age(self, oid: ObjectId) -> float:
        try:
            return self.local.age(oid)
        except ObjectNotFound:
            if oid in self._remote():
                return time.time()   # lives in the remote: as old as can be, never swept here
            raise

    def delete(self, oid: ObjectId) -> None:
        self.local.delete(oid)

    def __iter__(self) -> Iterator[ObjectId]:
        return iter(self.local)

    def iter_prefix(self, prefix: str) -> Iterator[ObjectId]:
        return self.local.iter_prefix(prefix)

    def stale_temps(self, older_than: float):
        """The local store's temp files of killed writers (what gc sweeps)."""
        stale = getattr(self.local, "stale_temps", None)
        return stale(older_than) if stale is not None else iter(())

    def sync(self) -> None:
        self.local.sync()


def _full_decoder(store: FallbackStore):
    """Decoded bytes of a delta's base (fetched too if it is missing here)."""
    def get_base(oid: ObjectId) -> bytes:
        frame = store.get(oid)
        return codecs.decode(frame, oid, get_base, header=codecs.parse_header(frame, oid))
    return get_base
