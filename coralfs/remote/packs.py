"""Packs: how objects travel to and live in a remote.

A pack is two blobs under ``packs/``:

- ``pack-<id>.pack``: frames exactly as the local store holds them, concatenated (no
  re-encoding on the way: a delta stays a delta);
- ``pack-<id>.idx``: ``CRPI`` magic, format byte 1, a u32 count, then ``count`` records
  sorted by object id (32-byte id, u64 offset, u64 length into the pack), then the
  xxh3-64 of everything before it. ``<id>`` is the hex xxh3-128 of the index's records.

The index is written after its pack, so a pack without an index is an interrupted upload
(never read, removed by the next push); an index names only bytes that are there. A
reader loads every index once (48 bytes an object) and fetches one object with one range
GET; a frame's content hash is checked when it is decoded, so a damaged pack is named,
never served.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import xxhash

from ..objects.ids import ObjectId, to_hex
from .blobs import BlobNotFound, BlobStore, RemoteError

PACKS = "packs/"
MAGIC = b"CRPI\x01"
_HEAD = struct.Struct("<5sI")
_REC = struct.Struct("<32sQQ")
_TAIL = struct.Struct("<Q")
TARGET_PACK = 32 << 20   # bytes of frames per pack: tens of MiB


class DamagedPack(RemoteError):
    exit_code = 3

    def __init__(self, where: str, key: str, why: str) -> None:
        self.key = key
        super().__init__(f"{where}: {key} is damaged ({why}); run `coralfs fsck --remote` and push again")


@dataclass(frozen=True, slots=True)
class Location:
    pack: str      # key of the .pack blob
    offset: int
    length: int


def encode_index(records: Iterable[tuple[ObjectId, int, int]]) -> tuple[str, bytes]:
    """(pack id, index bytes) for (oid, offset, length) records."""
    recs = sorted(records)
    body = b"".join(_REC.pack(o, off, n) for o, off, n in recs)
    head = _HEAD.pack(MAGIC, len(recs)) + body
    return xxhash.xxh3_128_hexdigest(body), head + _TAIL.pack(xxhash.xxh3_64_intdigest(head))


def decode_index(data: bytes, where: str = "", key: str = "") -> list[tuple[ObjectId, int, int]]:
    if len(data) < _HEAD.size + _TAIL.size:
        raise DamagedPack(where, key, "index is truncated")
    magic, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise DamagedPack(where, key, "not a pack index")
    if len(data) != _HEAD.size + count * _REC.size + _TAIL.size:
        raise DamagedPack(where, key, "index length does not match its count")
    (check,) = _TAIL.unpack_from(data, len(data) - _TAIL.size)
    if check != xxhash.xxh3_64_intdigest(memoryview(data)[: len(data) - _TAIL.size]):
        raise DamagedPack(where, key, "index checksum mismatch")
    return [_REC.unpack_from(data, _HEAD.size + i * _REC.size) for i in range(count)]


def pack_keys(pack_id: str) -> tuple[str, str]:
    return f"{PACKS}pack-{pack_id}.pack", f"{PACKS}pack-{pack_id}.idx"


class PackBuilder:
    """Frames collected into one pack in memory, up to about ``target`` bytes."""

    def __init__(self, target: int = TARGET_PACK) -> None:
        self.target = target
        self.parts: list[bytes] = []
        self.records: list[tuple[ObjectId, int, int]] = []
        self.size = 0

    def add(self, oid: ObjectId, frame: bytes) -> None:
        self.records.append((oid, self.size, len(frame)))
        self.parts.append(frame)
        self.size += len(frame)

    def full(self) -> bool:
        return self.size >= self.target

    def upload(self, blobs: BlobStore) -> str:
        """Write the pack, then its index; returns the pack id."""
        pack_id, idx = encode_index(self.records)
        pack_key, idx_key = pack_keys(pack_id)
        blobs.put(pack_key, b"".join(self.parts))
        blobs.put(idx_key, idx)
        return pack_id


class PackIndexes:
    """Every index of a remote, loaded once: object id -> where its frame is."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.where: dict[ObjectId, Location] = {}
        self.loaded: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Load the indexes written since the last refresh."""
        for key in sorted(self.blobs.list(PACKS)):
            if not key.endswith(".idx") or key in self.loaded:
                continue
            try:
                recs = decode_index(self.blobs.get(key), self.blobs.url, key)
            except BlobNotFound:
                continue   # removed since the listing
            pack = key[: -len(".idx")] + ".pack"
            for oid, off, n in recs:
                self.where.setdefault(oid, Location(pack, off, n))
            self.loaded.add(key)

    def __contains__(self, oid: ObjectId) -> bool:
        return oid in self.where

    def __iter__(self) -> Iterator[ObjectId]:
        return iter(self.where)

    def read(self, oid: ObjectId) -> bytes:
        """The frame of ``oid`` by one range GET (KeyError if no index names it)."""
        loc = self.where[oid]
        data = self.blobs.get_range(loc.pack, loc.offset, loc.length)
        if len(data) != loc.length:
            raise DamagedPack(self.blobs.url, loc.pack, f"object {to_hex(oid)[:12]} is cut short")
        return data


# Adjacent frames closer than this are fetched in one range GET; a range holds at most
# RANGE_MAX bytes (what a fetch keeps in memory at once; a pack of about 32 MiB is one GET).
RANGE_GAP = 256 << 10
RANGE_MAX = 40 << 20


def coalesce(members: list[tuple[int, int, ObjectId]]) -> Iterable[tuple[int, int, list[tuple[int, int, ObjectId]]]]:
    """Coalesce (offset, length, id) sorted by offset into (start, end, members) ranges."""
    cur: list[tuple[int, int, ObjectId]] = []
    start = end = 0
    for off, n, oid in members:
        if cur and (off - end > RANGE_GAP or off + n - start > RANGE_MAX):
            yield start, end, cur
            cur = []
        if not cur:
            start = off
        cur.append((off, n, oid))
        end = max(end, off + n)
    if cur:
        yield start, end, cur
