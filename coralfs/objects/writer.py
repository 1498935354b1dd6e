"""Ingest: turn a file described as regions into chunks, tensors and a File object.

Streaming: a file is read region by region, chunk by chunk; at most a few chunks (plus
their delta bases) are in memory at once, whatever the file's size. Chunks are encoded
on a small thread pool (zstd, numpy and hashlib release the GIL).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import codecs, dtypes
from .cdc import Chunker
from .ids import ObjectId, hash_bytes
from .objects import BytesSegment, File, InvalidObject, Segment, Tensor, TensorSegment
from .odb import ObjectDB

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Region:
    """A byte range of a source file; with ``name`` it is a typed tensor."""

    offset: int
    length: int
    name: str | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


@dataclass
class IngestStats:
    logical: int = 0
    stored: int = 0
    chunks_new: int = 0
    chunks_dedup: int = 0
    codecs: Counter = field(default_factory=Counter)
    delta_raw: int = 0  # decoded bytes of chunks stored as deltas (for the entropy report)

    def add(self, other: IngestStats) -> None:
        self.logical += other.logical
        self.stored += other.stored
        self.chunks_new += other.chunks_new
        self.chunks_dedup += other.chunks_dedup
        self.codecs.update(other.codecs)
        self.delta_raw += other.delta_raw


class Source:
    """Positional reads from an open file descriptor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def read_at(self, offset: int, n: int) -> bytes:
        out = os.pread(self.fd, n, offset)
        if len(out) != n:
            raise InvalidObject(f"{self.path}: short read at {offset} (file changed while committing?)")
        return out

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class Settings:
    chunk_size: int = 4 << 20
    tensor_level: int = 1
    literal_level: int = 3
    max_chain: int = 8
    workers: int = max(1, min(4, os.cpu_count() or 1))


def tile(size: int, regions: list[Region]) -> list[Region]:
    """Sort regions, reject overlaps and out-of-range ones, fill gaps with literal bytes."""
    out: list[Region] = []
    pos = 0
    for r in sorted(regions, key=lambda r: r.offset):
        if r.offset < pos:
            raise InvalidObject(f"regions overlap at byte {r.offset}")
        if r.length < 0 or r.offset + r.length > size:
            raise InvalidObject(f"region {r.offset}+{r.length} lies outside the file ({size} bytes)")
        if r.offset > pos:
            out.append(Region(pos, r.offset - pos))
        if r.length or r.name is not None:
            out.append(r)
        pos = r.offset + r.length
    if pos < size:
        out.append(Region(pos, size - pos))
    return out


class Writer:
    def __init__(self, odb: ObjectDB, settings: Settings, similarity=None) -> None:
        self.odb = odb
        self.settings = settings
        self.similarity = similarity
        self.chunker = Chunker()
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="coralfs-ingest")
        self._window = 2 * settings.workers

    def close(self) -> None:
        self._pool.shutdown()

    # -- one file ------------------------------------------------------------------------
    def write_file(self, src: Source, regions: list[Region], fmt: str = "bytes",
                   base: File | None = None) -> tuple[ObjectId, IngestStats]:
        stats = IngestStats()
        base_tensors = base.tensors() if base is not None else {}
        segments: list[Segment] = []
        for r in tile(src.size, regions):
            if r.name is None:
                segments.append(self._literal(src, r, stats))
            else:
                segments.append(self._tensor(src, r, base_tensors.get(r.name), stats))
        f = File(fmt, segments)
        return self.odb.put_object(f), stats

    def _literal(self, src: Source, r: Region, stats: IngestStats) -> BytesSegment:
        batch = self._batch(stats)
        lengths: list[int] = []
        buf = b""
        pos, end = r.offset, r.offset + r.length
        read_block = 8 << 20
        while True:
            final = pos >= end
            cut = self.chunker.next_cut(buf, final)
            if cut is None:
                n = min(read_block, end - pos)
                buf = buf + src.read_at(pos, n)
                pos += n
                continue
            piece, buf = buf[:cut], buf[cut:]
            batch.submit(piece, None, literal=True)
            lengths.append(len(piece))
            if final and not buf:
                break
        return BytesSegment(tuple(zip(batch.finish(), lengths)))

    def _tensor(self, src: Source, r: Region, base_seg: TensorSegment | None,
                stats: IngestStats) -> TensorSegment:
        dt = dtypes.lookup(r.dtype or "U8")
        shape = tuple(r.shape) if r.shape is not None else (r.length // dt.width,)
        if int(np.prod(shape, dtype=object)) * dt.width != r.length:
            raise InvalidObject(f"tensor {r.name!r}: shape {shape} of {r.dtype} is not {r.length} bytes")
        cs = max(dt.width, (self.settings.chunk_size // dt.width) * dt.width)
        base_t = self._base_tensor(base_seg, dt, r.length, cs)
        sketch = None
        if base_t is None and self.similarity is not None and r.length >= 4096:
            sketch = self.similarity.sketch(src, r, dt)
            cand = self.similarity.find(dt.width, r.length, sketch)
            if cand is not None:
                base_t = self._base_tensor(TensorSegment("", cand, r.length), dt, r.length, cs)
        batch = self._batch(stats)
        for i, off in enumerate(range(r.offset, r.offset + r.length, cs)):
            n = min(cs, r.offset + r.length - off)
            data = src.read_at(off, n)
            base_oid = base_t.chunks[i] if base_t is not None and i < len(base_t.chunks) else None
            batch.submit(data, (dt, base_oid), literal=False)
        t = Tensor(dt.name, shape, cs, batch.finish())
        tid = self.odb.put_object(t)
        if self.similarity is not None and r.length >= 4096:
            if sketch is None:
                sketch = self.similarity.sketch(src, r, dt)
            self.similarity.add(tid, dt.width, r.length, sketch)
        return TensorSegment(r.name, tid, r.length)

    def _base_tensor(self, seg: TensorSegment | None, dt: dtypes.DType, length: int,
                     cs: int) -> Tensor | None:
        if seg is None or seg.length != length:
            return None
        try:
            t = self.odb.get_object(seg.tensor, Tensor)
        except Exception as e:  # a damaged base only costs compression, never correctness
            log.warning("delta base %s unusable: %s", seg.tensor.hex(), e)
            return None
        if t.width != dt.width or t.chunk_size != cs:
            return None
        return t

    # -- the pool ------------------------------------------------------------------------
    def _batch(self, stats: IngestStats) -> _Batch:
        return _Batch(self, stats)

    def _store_chunk(self, data: bytes, tinfo, literal: bool):
        oid = hash_bytes(data)
        if self.odb.store.has(oid):
            return oid, len(data), False, 0, "dedup"
        if literal:
            written, size, codec = self.odb.put_chunk(data, oid, literal=True,
                                                      level=self.settings.literal_level)
            return oid, len(data), written, size, codec
        dt, base_oid = tinfo
        base = None
        if base_oid is not None and base_oid != oid:
            try:
                h = self.odb.chunk_header(base_oid)
                if h.depth < self.settings.max_chain and h.decoded_len == len(data):
                    base = codecs.Base(base_oid, self.odb.read_chunk(base_oid), h.depth)
            except Exception as e:
                log.warning("delta base chunk %s unusable: %s", base_oid.hex(), e)
        written, size, codec = self.odb.put_chunk(data, oid, width=dt.width, key=dt.key, base=base,
                                                  level=self.settings.tensor_level)
        return oid, len(data), written, size, codec


class _Batch:
    """Chunks of one segment in flight on the pool, collected in order; at most
    ``window`` are pending, which bounds memory."""

    def __init__(self, writer: Writer, stats: IngestStats) -> None:
        self.w = writer
        self.stats = stats
        self.pending: deque[Future] = deque()
        self.ids: list[ObjectId] = []

    def submit(self, data: bytes, tinfo, literal: bool) -> None:
        if len(self.pending) >= self.w._window:
            self._collect(self.pending.popleft())
        self.pending.append(self.w._pool.submit(self.w._store_chunk, data, tinfo, literal))

    def finish(self) -> list[ObjectId]:
        while self.pending:
            self._collect(self.pending.popleft())
        return self.ids

    def _collect(self, fut: Future) -> None:
        oid, n, written, size, codec = fut.result()
        self.ids.append(oid)
        st = self.stats
        st.logical += n
        if written:
            st.chunks_new += 1
            st.stored += size
            st.codecs[codec] += 1
            if codec in ("xor", "sub"):
                st.delta_raw += n
        else:
            st.chunks_dedup += 1
