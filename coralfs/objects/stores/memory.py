"""MemoryStore: frames in a dict (tests, and a model of what every store must do)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from ..errors import ObjectNotFound
from ..ids import ObjectId, is_hex_prefix, to_hex
from .base import ObjectStore


class MemoryStore(ObjectStore):
    """Nothing to make durable: ``sync`` and ``sync_object`` do nothing, on purpose."""

    def __init__(self) -> None:
        self._d: dict[ObjectId, bytes] = {}
        self._t: dict[ObjectId, float] = {}
        self._lock = threading.Lock()

    def has(self, oid: ObjectId) -> bool:
        return oid in self._d

    def put(self, oid: ObjectId, frame: bytes) -> bool:
        with self._lock:
            if oid in self._d:
                return False
            self._d[oid] = bytes(frame)
            self._t[oid] = time.time()
            return True

    def get(self, oid: ObjectId) -> bytes:
        try:
            return self._d[oid]
        except KeyError:
            raise ObjectNotFound(to_hex(oid)) from None

    def get_head(self, oid: ObjectId, n: int) -> bytes:
        return self.get(oid)[:n]

    def replace(self, oid: ObjectId, frame: bytes) -> None:
        with self._lock:
            if oid not in self._d:
                raise ObjectNotFound(to_hex(oid))
            self._d[oid] = bytes(frame)

    def sync_object(self, oid: ObjectId) -> None:
        pass  # memory holds nothing a crash could keep

    def size(self, oid: ObjectId) -> int:
        return len(self.get(oid))

    def age(self, oid: ObjectId) -> float:
        try:
            return time.time() - self._t[oid]
        except KeyError:
            raise ObjectNotFound(to_hex(oid)) from None

    def delete(self, oid: ObjectId) -> None:
        with self._lock:
            self._d.pop(oid, None)
            self._t.pop(oid, None)

    def __iter__(self) -> Iterator[ObjectId]:
        return iter(list(self._d))

    def iter_prefix(self, prefix: str) -> Iterator[ObjectId]:
        if not is_hex_prefix(prefix):
            raise ValueError(f"{prefix!r} is not a lowercase hex prefix")
        return iter([o for o in list(self._d) if to_hex(o).startswith(prefix)])

    def sync(self) -> None:
        pass  # memory holds nothing a crash could keep
