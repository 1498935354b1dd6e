"""The object database: structured objects and chunks over an ObjectStore.

Every read is verified (frame header checksum, the object's own id in the header, xxh3
of the decoded bytes); structured objects are also re-hashed, which is cheap for them.
Decoded chunks go through a byte-budget LRU, and concurrent requests for one chunk
decode it once (single flight).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from . import codecs
from .cache import ByteLRU
from .errors import CorruptObject
from .ids import ObjectId, hash_bytes, to_hex
from .kinds import ShaObject, parse_object
from .stores import ObjectStore
from .wire import WireError

log = logging.getLogger(__name__)
T = TypeVar("T", bound=ShaObject)

DEFAULT_CACHE = 512 << 20


class ObjectDB:
    def __init__(self, store: ObjectStore, cache_bytes: int = DEFAULT_CACHE, level: int = 3) -> None:
        self.store = store
        self.level = level
        self.chunks = ByteLRU(cache_bytes)
        self._objects: dict[ObjectId, ShaObject] = {}
        self._inflight: dict[ObjectId, threading.Event] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        # Decoded bytes produced by chunk decodes, for laziness accounting.
        self.decoded_bytes = 0
        self.decoded_chunks = 0

    # -- structured objects --------------------------------------------------------------
    def put_object(self, obj: ShaObject) -> ObjectId:
        data = obj.to_bytes()
        oid = hash_bytes(data)
        if not self.store.has(oid):
            self.store.put(oid, codecs.encode(data, oid, level=self.level, literal=True, structured=True))
        return oid

    def get_object(self, oid: ObjectId, kind: type[T] | None = None) -> T:
        obj = self._objects.get(oid)
        if obj is None:
            frame = self.store.get(oid)
            data = codecs.decode(frame, oid)
            if hash_bytes(data) != oid:
                raise CorruptObject(to_hex(oid), "content does not hash to its id")
            obj = self.keep_object(oid, data)
        if kind is not None and not isinstance(obj, kind):
            raise CorruptObject(to_hex(oid), f"is a {obj.type_name}, expected a {kind.type_name}")
        return obj  # type: ignore[return-value]

    def keep_object(self, oid: ObjectId, data: bytes) -> ShaObject:
        """Parse the verified content of a structured object and keep it for get_object
        (a fetch, which has just decoded it: its walk then reads it without the disk)."""
        try:
            obj = parse_object(data)
        except WireError as e:
            why = str(e)
            if why.startswith(("unknown object type", "unsupported ")):   # hashed right: a later format
                why += " (a newer coralfs wrote it: upgrade coralfs to read this repository)"
            raise CorruptObject(to_hex(oid), why) from None
        if len(self._objects) > 100_000:
            self._objects.clear()
        self._objects[oid] = obj
        return obj

    # -- chunks --------------------------------------------------------------------------
    def put_chunk(self, data: bytes, oid: ObjectId, *, width: int = 1, key: int = 0,
                  base: codecs.Base | None = None, literal: bool = False,
                  level: int | None = None, gen: int = 0) -> tuple[bool, int, str]:
        """Store a chunk unless present. Returns (written, stored size, codec name)."""
        frame = codecs.encode(data, oid, width=width, key=key, base=base, literal=literal,
                              level=self.level if level is None else level, gen=gen)
        written = self.store.put(oid, frame)
        h = codecs.parse_header(frame, oid)
        return written, len(frame) if written else 0, h.codec_name

    def chunk_header(self, oid: ObjectId) -> codecs.FrameHeader:
        return codecs.parse_header(self.store.get_head(oid, codecs.HEADER_SIZE), oid)

    def chain_depth(self, oid: ObjectId, limit: int = 64) -> int:
        """How many decodes a read of ``oid`` needs beyond its own (follows bases)."""
        d = 0
        h = self.chunk_header(oid)
        while h.base is not None and d < limit:
            d += 1
            h = self.chunk_header(h.base)
        return d

    def read_chunk(self, oid: ObjectId, *, base: bool = False) -> bytes:
        """Decoded, verified bytes of a chunk (through the cache, decoded once). ``base``: it
        is read only as another chunk's delta base, so a cache with a disk tier keeps it in
        memory and does not write it out (a read of the chunk itself does)."""
        data = self.chunks.get(oid)
        if data is None:
            with self._lock:
                # Re-check under the lock: a leader may have finished since the miss above.
                data = self.chunks.peek(oid)
                ev = self._inflight.get(oid) if data is None else None
                leader = data is None and ev is None
                if leader:
                    ev = self._inflight[oid] = threading.Event()
            if leader:
                try:
                    data = self._decode(oid)
                    self.chunks.put(oid, data, keep=not base)
                    return data
                finally:
                    with self._lock:
                        del self._inflight[oid]
                    ev.set()
            if data is None:
                ev.wait()
                data = self.chunks.get(oid)
                if data is None:
                    # The leader failed or the cache could not hold it: decode ourselves.
                    data = self._decode(oid)
                    self.chunks.put(oid, data, keep=not base)
                    return data
        if not base:
            self.chunks.served(oid, data)
        return data

    def read_base(self, oid: ObjectId) -> bytes:
        """``read_chunk`` of a delta base: what the decoders are given to fetch bases."""
        return self.read_chunk(oid, base=True)

    def read_chunks(self, oids: Iterable[ObjectId], ahead: int = 4) -> Iterator[bytes]:
        """Decoded chunks in order, decoding up to ``ahead`` of them in parallel
        (zstd and numpy release the GIL)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)),
                                                    thread_name_prefix="coralfs-decode")
        pending: deque = deque()
        for oid in oids:
            pending.append(self._pool.submit(self.read_chunk, oid))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def read_pair(self, a: ObjectId, b: ObjectId) -> tuple[bytes, bytes]:
        """Decoded bytes of two versions of a chunk, for one pass over two revisions (diff):
        kept out of the shared cache, so a streaming comparison holds about one chunk pair
        whatever the model size. The newer version is usually the other's delta base
        (reverse deltas) and is then decoded once for both."""
        if a == b:
            data = self._decode_with(b, self.read_chunk)
            return data, data
        hb = codecs.parse_header(fb := self.store.get(b), b)
        ha = codecs.parse_header(fa := self.store.get(a), a)
        if ha.base == b:
            db = self._count(codecs.decode(fb, b, self.read_chunk, header=hb))
            return self._count(codecs.decode(fa, a, lambda oid: db if oid == b else self.read_chunk(oid), header=ha)), db
        if hb.base == a:
            da = self._count(codecs.decode(fa, a, self.read_chunk, header=ha))
            return da, self._count(codecs.decode(fb, b, lambda oid: da if oid == a else self.read_chunk(oid), header=hb))
        return (self._count(codecs.decode(fa, a, self.read_chunk, header=ha)),
                self._count(codecs.decode(fb, b, self.read_chunk, header=hb)))

    def _decode_with(self, oid: ObjectId, get_base) -> bytes:
        frame = self.store.get(oid)
        return self._count(codecs.decode(frame, oid, get_base, header=codecs.parse_header(frame, oid)))

    def _count(self, data: bytes) -> bytes:
        with self._lock:
            self.decoded_bytes += len(data)
            self.decoded_chunks += 1
        return data

    def _decode(self, oid: ObjectId) -> bytes:
        frame = self.store.get(oid)
        h = codecs.parse_header(frame, oid)
        data = codecs.decode(frame, oid, self.read_base, header=h)
        with self._lock:
            self.decoded_bytes += len(data)
            self.decoded_chunks += 1
        return data
