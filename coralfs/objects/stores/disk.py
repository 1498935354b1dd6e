"""DiskStore: loose objects under ``REPO/objects``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from ..durable import fsync_dir, make_dirs, write_durable
from ..errors import ObjectNotFound
from ..ids import HEX_LEN, ObjectId, from_hex, is_hex_prefix, to_hex
from .base import ObjectStore


class DiskStore(ObjectStore):
    """Loose objects: ``objects/ab/cdef...``, each written once, durably.

    Files are fsynced before their rename; the fan-out directories touched are fsynced
    together in :meth:`sync`, which a commit calls before it moves a ref.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._dirty: set[str] = set()
        self._lock = threading.Lock()

    def _path(self, oid: ObjectId) -> str:
        h = to_hex(oid)
        return os.path.join(self.root, h[:2], h[2:])

    def has(self, oid: ObjectId) -> bool:
        return os.path.exists(self._path(oid))

    def put(self, oid: ObjectId, frame: bytes) -> bool:
        path = self._path(oid)
        d = os.path.dirname(path)
        if not os.path.isdir(d):
            make_dirs(d)
            with self._lock:
                self._dirty.add(self.root)
        written = write_durable(path, frame, readonly=True, sync_dir=False, exclusive=True)
        if written:
            with self._lock:
                self._dirty.add(d)
        return written

    def get(self, oid: ObjectId) -> bytes:
        try:
            with open(self._path(oid), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(to_hex(oid)) from None

    def get_head(self, oid: ObjectId, n: int) -> bytes:
        try:
            with open(self._path(oid), "rb") as f:
                return f.read(n)
        except FileNotFoundError:
            raise ObjectNotFound(to_hex(oid)) from None

    def replace(self, oid: ObjectId, frame: bytes) -> None:
        path = self._path(oid)
        if not os.path.exists(path):
            raise ObjectNotFound(to_hex(oid))
        write_durable(path, frame, readonly=True, sync_dir=False)
        with self._lock:
            self._dirty.add(os.path.dirname(path))

    def sync_object(self, oid: ObjectId) -> None:
        fsync_dir(os.path.dirname(self._path(oid)))

    def size(self, oid: ObjectId) -> int:
        try:
            return os.stat(self._path(oid)).st_size
        except FileNotFoundError:
            raise ObjectNotFound(to_hex(oid)) from None

    def age(self, oid: ObjectId) -> float:
        try:
            return time.time() - os.stat(self._path(oid)).st_mtime
        except FileNotFoundError:
            raise ObjectNotFound(to_hex(oid)) from None

    def delete(self, oid: ObjectId) -> None:
        try:
            os.unlink(self._path(oid))
        except FileNotFoundError:
            pass

    def __iter__(self) -> Iterator[ObjectId]:
        for d in sorted(os.listdir(self.root)):
            if len(d) == 2:
                yield from self._ids_in(d, "")

    def iter_prefix(self, prefix: str) -> Iterator[ObjectId]:
        if not is_hex_prefix(prefix):
            raise ValueError(f"{prefix!r} is not a lowercase hex prefix")
        if len(prefix) < 2:  # two digits name one fan-out directory; fewer, all of them
            yield from (o for o in self if to_hex(o).startswith(prefix))
        elif os.path.isdir(os.path.join(self.root, prefix[:2])):
            yield from self._ids_in(prefix[:2], prefix[2:])

    def _ids_in(self, d: str, start: str) -> Iterator[ObjectId]:
        """Ids in fan-out directory ``d`` whose file name starts with ``start`` (temp
        files of writes in progress and stray names are not objects)."""
        for name in sorted(os.listdir(os.path.join(self.root, d))):
            if len(name) == HEX_LEN - 2 and name.startswith(start) and not name.startswith("."):
                try:
                    yield from_hex(d + name)
                except ValueError:
                    continue

    def sync(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        # Subdirectories first, then the root that lists them.
        for d in sorted(dirty, key=len, reverse=True):
            fsync_dir(d)
