"""The ObjectStore interface: where frames live, keyed by object id.

Every method is abstract, with no default body: a store that forgot one (a remote store
without ``sync`` would pass every test and lose durability) cannot be instantiated.
tests/unit/store_conformance.py states the contract as tests that every store runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from ..ids import ObjectId


class ObjectStore(ABC):
    """Write-once storage of frames (replace re-encodes one, never changes its content).

    Absent objects raise ObjectNotFound from ``get``, ``get_head``, ``replace``, ``size``
    and ``age``; ``delete`` of an absent object is a no-op.
    """

    @abstractmethod
    def has(self, oid: ObjectId) -> bool:
        """Whether a frame is stored under ``oid``."""

    @abstractmethod
    def put(self, oid: ObjectId, frame: bytes) -> bool:
        """Store a frame unless one is there already. Returns True if written."""

    @abstractmethod
    def get(self, oid: ObjectId) -> bytes:
        """The stored frame."""

    @abstractmethod
    def get_head(self, oid: ObjectId, n: int) -> bytes:
        """The first ``n`` bytes of the frame (all of it if shorter): a frame header
        without fetching the body, for walks over delta chains and gc's mark."""

    @abstractmethod
    def replace(self, oid: ObjectId, frame: bytes) -> None:
        """Atomically swap the frame of an existing object for another encoding of the
        same content (reverse deltas re-encode a parent against its child). Readers see
        the old frame or the new one, both of which decode to the same bytes."""

    @abstractmethod
    def sync_object(self, oid: ObjectId) -> None:
        """Make one object's name durable now (before another frame may reference it)."""

    @abstractmethod
    def size(self, oid: ObjectId) -> int:
        """Stored bytes of the frame."""

    @abstractmethod
    def age(self, oid: ObjectId) -> float:
        """Seconds since the object was stored (gc spares young objects)."""

    @abstractmethod
    def delete(self, oid: ObjectId) -> None:
        """Remove the object (gc's sweep)."""

    @abstractmethod
    def __iter__(self) -> Iterator[ObjectId]:
        """Every stored id."""

    @abstractmethod
    def iter_prefix(self, prefix: str) -> Iterator[ObjectId]:
        """Every stored id whose hex starts with ``prefix`` (1 to 64 lowercase hex
        digits, else ValueError): how short ids resolve, on any store."""

    @abstractmethod
    def sync(self) -> None:
        """Make every put and replace so far durable (called before a ref moves)."""
