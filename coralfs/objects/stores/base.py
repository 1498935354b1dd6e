"""The ObjectStore interface: where frames live, keyed by object id."""

from __future__ import annotations

from collections.abc import Iterator

from ..ids import ObjectId


class ObjectStore:
    """Write-once storage of frames."""

    def has(self, oid: ObjectId) -> bool:
        raise NotImplementedError

    def put(self, oid: ObjectId, frame: bytes) -> bool:
        """Store a frame unless one is there already. Returns True if written."""
        raise NotImplementedError

    def get(self, oid: ObjectId) -> bytes:
        """The stored frame; ObjectNotFound if absent."""
        raise NotImplementedError

    def replace(self, oid: ObjectId, frame: bytes) -> None:
        """Atomically swap the frame of an existing object for another encoding of the
        same content (reverse deltas re-encode a parent against its child). Readers see
        the old frame or the new one, both of which decode to the same bytes."""
        raise NotImplementedError

    def sync_object(self, oid: ObjectId) -> None:
        """Make one object's name durable now (before another frame may reference it)."""

    def size(self, oid: ObjectId) -> int:
        raise NotImplementedError

    def age(self, oid: ObjectId) -> float:
        """Seconds since the object was stored (gc spares young objects)."""
        raise NotImplementedError

    def delete(self, oid: ObjectId) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[ObjectId]:
        raise NotImplementedError

    def sync(self) -> None:
        """Make every put so far durable (called before a ref moves)."""
