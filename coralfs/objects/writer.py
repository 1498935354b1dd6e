"""Ingest: turn a file described as regions into chunks, tensors and a File object.

Streaming: a file is read region by region, chunk by chunk; at most a few chunks (plus
their delta bases) are in memory at once, whatever the file's size. Chunks are encoded
on a small thread pool (zstd, numpy and hashlib release the GIL).
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from . import codecs, dtypes
from .cdc import Chunker
from .errors import CorruptObject, ObjectNotFound
from .ids import ObjectId, hash_bytes
from .kinds import BytesSegment, File, InvalidObject, PackedTensor, PackSegment, Segment, Tensor, TensorSegment
from .lazy import lazy_module
from .odb import ObjectDB
from .regions import Region
from .similarity import SimilarityIndex

np = lazy_module("numpy")  # imported on first use: commands that never compute start without it

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    logical: int = 0
    stored: int = 0
    chunks_new: int = 0
    chunks_dedup: int = 0
    codecs: Counter = field(default_factory=Counter)

    def add(self, other: IngestStats) -> None:
        self.logical += other.logical
        self.stored += other.stored
        self.chunks_new += other.chunks_new
        self.chunks_dedup += other.chunks_dedup
        self.codecs.update(other.codecs)


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

    def data_spans(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """``[offset, offset + length)`` as (start, length, is_hole) spans, from the file
        system's SEEK_DATA/SEEK_HOLE (a file system without them: one data span). Holes
        read as zeros, so they need neither reading nor hashing."""
        end = offset + length
        out: list[tuple[int, int, bool]] = []
        pos = offset
        try:
            while pos < end:
                try:
                    data = os.lseek(self.fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno != errno.ENXIO:  # ENXIO: only a hole up to the end of the file
                        raise
                    data = end
                data = min(data, end)
                if data > pos:
                    out.append((pos, data - pos, True))
                if data >= end:
                    break
                hole = min(os.lseek(self.fd, data, os.SEEK_HOLE), end)
                out.append((data, hole - data, False))
                pos = hole
        except (OSError, AttributeError):
            return [(offset, length, False)]
        # Holes smaller than a chunk are not worth a cut: they stay in their data span.
        merged: list[tuple[int, int, bool]] = []
        for start, n, hole in out:
            if hole and n < HOLE_MIN:
                hole = False
            if merged and not hole and not merged[-1][2]:
                merged[-1] = (merged[-1][0], merged[-1][1] + n, False)
            else:
                merged.append((start, n, hole))
        return merged

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


MIN_INDEXED = 4096  # tensors smaller than this are not worth a similarity lookup
SMALL_CHUNK = 64 << 10  # chunks smaller than this are never reverse deltas (see _store_delta)
HOLE_MIN = 1 << 20  # a hole this large (in a sparse source) becomes zero chunks, never read
ZERO_PIECE = 4 << 20  # holes are cut into zero chunks of this size: one object, hashed once
_ZEROS = bytes(ZERO_PIECE)
# Small tensors are packed: runs of at least PACK_MIN_TENSORS consecutive regions under
# PACK_SMALL bytes each (tensors, and the literal gaps between them such as .npz member
# headers) become one PackSegment of content-defined chunks, up to PACK_RUN bytes a run.
# Each such tensor costs a few dozen bytes of metadata instead of two durable objects.
PACK_SMALL = 64 << 10
PACK_MIN_TENSORS = 4
PACK_RUN = 8 << 20


@dataclass(frozen=True)
class Settings:
    chunk_size: int = 4 << 20
    tensor_level: int = 1
    literal_level: int = 3
    max_chain: int = 8  # at most this many decodes for any read (reverse-delta group size)
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
    def __init__(self, odb: ObjectDB, settings: Settings, similarity: SimilarityIndex | None = None) -> None:
        self.odb = odb
        self.settings = settings
        self.similarity = similarity
        self.chunker = Chunker()
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="coralfs-ingest")
        # Chunks in flight are bounded by bytes, not count: small chunks queued behind a
        # large one keep the other workers busy, and memory stays a few chunks' worth.
        self._window_bytes = 2 * settings.workers * settings.chunk_size
        self._zero_ids: dict[int, ObjectId] = {}

    def close(self) -> None:
        self._pool.shutdown()

    # -- one file ------------------------------------------------------------------------
    def write_file(self, src: Source, regions: list[Region], fmt: str = "bytes",
                   base: File | None = None) -> tuple[ObjectId, IngestStats]:
        """Store one file. Every chunk of every segment goes through one bounded window
        on the pool, so small tensors are encoded in parallel too."""
        stats = IngestStats()
        base_tensors = {n: t for n, t in base.tensors().items()
                        if isinstance(t, TensorSegment)} if base is not None else {}
        batch = _Batch(self, stats)
        plans: list[tuple] = []
        for k, r in enumerate(_pack_runs(tile(src.size, regions))):
            if isinstance(r, list):
                plans.append(("pack", r, self._submit_pack(k, src, r, batch)))
            elif r.name is None:
                lengths = []
                for start, n, hole in src.data_spans(r.offset, r.length):
                    if hole:
                        for piece, oid in self._zero_pieces(n):
                            batch.submit(k, piece, None, literal=True, oid=oid)
                            lengths.append(len(piece))
                        continue
                    for piece in self._literal_pieces(src, Region(start, n)):
                        batch.submit(k, piece, None, literal=True)
                        lengths.append(len(piece))
                plans.append(("bytes", r, lengths))
            else:
                plans.append(("tensor", r, self._submit_tensor(k, src, r, base_tensors.get(r.name), batch)))
        ids = batch.finish()
        segments: list[Segment] = []
        puts = []
        for k, (kind, r, extra) in enumerate(plans):
            got = ids.get(k, [])
            if kind == "bytes":
                segments.append(BytesSegment(tuple(zip(got, extra))))
                continue
            if kind == "pack":
                lengths, packed = extra
                segments.append(PackSegment(tuple(zip(got, lengths)), packed))
                continue
            dt, shape, cs, sketch = extra
            t = Tensor(dt.name, shape, cs, got)
            tid = t.id
            # Each tensor object is one durable write (create, fsync, rename): on the pool,
            # they overlap instead of queueing on this thread.
            puts.append(self._pool.submit(self.odb.put_object, t))
            if sketch is not None:
                self.similarity.add(tid, dt.width, r.length, sketch)
            segments.append(TensorSegment(r.name, tid, r.length))
        for p in puts:
            p.result()
        return self.odb.put_object(File(fmt, segments)), stats

    def _submit_pack(self, k: int, src: Source, run: list[Region], batch: _Batch) -> tuple:
        """A run of small regions: one read, a digest per tensor, content-defined chunks
        of the whole run (literal codec: dtypes are mixed)."""
        start = run[0].offset
        data = src.read_at(start, run[-1].offset + run[-1].length - start)
        view = memoryview(data)
        packed = []
        for r in run:
            if r.name is None:
                continue
            dt = dtypes.lookup(r.dtype or "U8")
            shape = tuple(r.shape) if r.shape is not None else (r.length // dt.width,)
            if math.prod(shape) * dt.width != r.length:
                raise InvalidObject(f"tensor {r.name!r}: shape {shape} of {r.dtype} is not {r.length} bytes")
            lo = r.offset - start
            packed.append(PackedTensor(r.name, dt.name, shape, lo, r.length,
                                       hash_bytes(view[lo:lo + r.length])))
        lengths = []
        pos = 0
        while pos < len(data):
            cut = self.chunker.next_cut(view[pos:], True)
            piece = data[pos:pos + cut]
            batch.submit(k, piece, None, literal=True)
            lengths.append(cut)
            pos += cut
        return lengths, tuple(packed)

    def _zero_pieces(self, n: int):
        """A hole as zero chunks of ZERO_PIECE bytes: (view of the shared zero buffer, id);
        ids are computed once per length, so a 10 GiB hole costs no reading or hashing."""
        while n > 0:
            m = min(n, ZERO_PIECE)
            oid = self._zero_ids.get(m)
            if oid is None:
                oid = self._zero_ids[m] = hash_bytes(memoryview(_ZEROS)[:m])
            yield (_ZEROS if m == ZERO_PIECE else _ZEROS[:m]), oid
            n -= m

    def _literal_pieces(self, src: Source, r: Region):
        """Content-defined chunks of a literal region, read in blocks (streaming)."""
        # `buf[start:]` is what is read but not yet cut: cutting moves `start`, so bytes
        # are copied once per read block, not once per chunk cut from it.
        buf, start = b"", 0
        pos, end = r.offset, r.offset + r.length
        while True:
            final = pos >= end
            view = memoryview(buf)[start:]
            cut = self.chunker.next_cut(view, final)
            if cut is None:
                n = min(8 << 20, end - pos)
                buf, start = bytes(view) + src.read_at(pos, n), 0
                pos += n
                continue
            yield bytes(view[:cut])
            start += cut
            if final and start == len(buf):
                return

    def _submit_tensor(self, k: int, src: Source, r: Region, base_seg: TensorSegment | None,
                       batch: _Batch) -> tuple:
        dt = dtypes.lookup(r.dtype or "U8")
        shape = tuple(r.shape) if r.shape is not None else (r.length // dt.width,)
        if int(np.prod(shape, dtype=object)) * dt.width != r.length:
            raise InvalidObject(f"tensor {r.name!r}: shape {shape} of {r.dtype} is not {r.length} bytes")
        cs = max(dt.width, (self.settings.chunk_size // dt.width) * dt.width)
        base_t = self._base_tensor(base_seg, dt, r.length, cs)
        from_parent = base_t is not None
        sketch = None
        indexed = self.similarity is not None and r.length >= MIN_INDEXED
        if indexed and base_t is None:
            # Only a tensor with no same-name base needs its sketch before chunking.
            sketch = self.similarity.sketch(src, r, dt)
            cand = self.similarity.find(dt.width, r.length, sketch)
            if cand is not None:
                base_t = self._base_tensor(TensorSegment("", cand, r.length), dt, r.length, cs)
        pos = self.similarity.positions(r.length, dt.width) if indexed and sketch is None else None
        top = np.empty(len(pos), dtype=np.uint8) if pos is not None else None
        for i, off in enumerate(range(r.offset, r.offset + r.length, cs)):
            n = min(cs, r.offset + r.length - off)
            data = src.read_at(off, n)
            if pos is not None:
                lo = off - r.offset
                sel = (pos >= lo) & (pos < lo + n)
                top[sel] = np.frombuffer(data, np.uint8)[pos[sel] - lo]
            base_oid = base_t.chunks[i] if base_t is not None and i < len(base_t.chunks) else None
            batch.submit(k, data, (dt, base_oid, from_parent), literal=False)
        if pos is not None:
            sketch = self.similarity.sketch_from(top)
        return dt, shape, cs, sketch

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
    def _store_chunk(self, data: bytes, tinfo, literal: bool, oid: ObjectId,
                     after: list[Future], before: dict):
        if after:
            wait(after)  # earlier chunks of this file that write the same objects (see _Batch)
        if self.odb.store.has(oid):
            return oid, len(data), False, 0, "dedup"
        if literal:
            written, size, codec = self.odb.put_chunk(data, oid, literal=True,
                                                      level=self.settings.literal_level)
            return oid, len(data), written, size, codec
        dt, base_oid, from_parent = tinfo
        if base_oid is not None and base_oid != oid:
            try:
                return self._store_delta(data, oid, dt, base_oid, from_parent, before)
            except (ObjectNotFound, CorruptObject) as e:
                # A damaged base only costs compression, never correctness.
                log.warning("delta base chunk %s unusable: %s", base_oid.hex(), e)
        written, size, codec = self.odb.put_chunk(data, oid, width=dt.width, key=dt.key,
                                                  level=self.settings.tensor_level)
        return oid, len(data), written, size, codec

    def _store_delta(self, data: bytes, oid: ObjectId, dt: dtypes.DType, base_oid: ObjectId,
                     from_parent: bool, before: dict):
        """Reverse deltas keep the newest version of a chunk a keyframe: reads of a
        branch head decode once. The parent's chunk is re-encoded as a delta against the
        new one (same content, same id, a smaller frame) while its group has room;
        every ``max_chain`` versions a group closes. Where the parent is itself already a
        delta (a fork from an older commit) or the base came from the similarity index,
        the new chunk is a forward delta against the nearest chunk of that chain that
        keeps a read under ``max_chain`` decodes.

        What this reads is fixed by the file's submission order, not by scheduling: the
        base's own header after every earlier chunk naming that base (they run first,
        see _Batch), and past the base the chain as it was before this file's chunks
        re-encoded any of it (``before``: the headers they replaced)."""
        K = self.settings.max_chain
        lvl = self.settings.tensor_level
        # A chunk under SMALL_CHUNK (a bias, a LayerNorm) is never a reverse delta: that
        # saves less than the durable write of re-encoding its parent. It takes the forward
        # path instead, which writes nothing more than a keyframe would; a read of it decodes
        # at most max_chain small frames (an RL step changing 1% of a LayerNorm's elements
        # stored its keyframe again at every step before: 0.0011 of the bf16 file a step).
        small = len(data) < SMALL_CHUNK
        hp = self.odb.chunk_header(base_oid)
        if hp.decoded_len != len(data):
            written, size, codec = self.odb.put_chunk(data, oid, width=dt.width, key=dt.key, level=lvl)
            return oid, len(data), written, size, codec
        if not small and from_parent and hp.base is None and hp.gen + 1 < K:
            written, size, codec = self.odb.put_chunk(data, oid, width=dt.width, key=dt.key, level=lvl,
                                                      gen=hp.gen + 1)
            if not written:
                return oid, len(data), False, 0, "dedup"
            # The new keyframe's name must be durable before any frame references it.
            self.odb.store.sync_object(oid)
            pframe = codecs.encode(self.odb.read_chunk(base_oid), base_oid, width=dt.width, key=dt.key,
                                   level=lvl, base=codecs.Base(oid, data, 0))
            ph = codecs.parse_header(pframe, base_oid)
            if ph.base is not None:
                old = self.odb.store.size(base_oid)
                before.setdefault(base_oid, hp)  # recorded before the frame changes
                self.odb.store.replace(base_oid, pframe)
                size += len(pframe) - old
                codec = ph.codec_name
            return oid, len(data), True, size, codec
        if not small and from_parent and hp.base is None:
            # The parent's group is full: the new version opens a group as a keyframe.
            written, size, codec = self.odb.put_chunk(data, oid, width=dt.width, key=dt.key, level=lvl)
            return oid, len(data), written, size, codec
        # Forward: walk the base's chain to a node whose depth leaves room.
        chain = [base_oid]
        h = hp
        while h.base is not None and len(chain) <= K:
            chain.append(h.base)
            h = before.get(h.base) or self.odb.chunk_header(h.base)
        depth_of = {c: len(chain) - 1 - i for i, c in enumerate(chain)}
        pick = next((c for c in chain if depth_of[c] + 1 < K), None)
        base = None
        if pick is not None:
            base = codecs.Base(pick, self.odb.read_chunk(pick), depth_of[pick])
        written, size, codec = self.odb.put_chunk(data, oid, width=dt.width, key=dt.key, base=base, level=lvl)
        return oid, len(data), written, size, codec


def _pack_runs(regions: list[Region]) -> list[Region | list[Region]]:
    """Group runs of small regions holding enough tensors into lists (see PACK_SMALL)."""
    out: list[Region | list[Region]] = []
    run: list[Region] = []

    def flush() -> None:
        # Literal regions at the ends of a run stay outside it: a pack begins and ends
        # with a tensor, so its layout does not depend on what surrounds it.
        i, j = 0, len(run)
        while i < j and run[i].name is None:
            i += 1
        while j > i and run[j - 1].name is None:
            j -= 1
        core = run[i:j]
        out.extend(run[:i])
        if sum(r.name is not None for r in core) >= PACK_MIN_TENSORS:
            out.append(core)
        else:
            out.extend(core)
        out.extend(run[j:])
        run.clear()

    size = 0
    for r in regions:
        if r.length < PACK_SMALL:
            if run and size + r.length > PACK_RUN:
                flush()
                size = 0
            run.append(r)
            size += r.length
        else:
            flush()
            size = 0
            out.append(r)
    flush()
    return out


class _Batch:
    """Chunks of one file in flight on the pool, collected in submission order; at most
    the writer's window of bytes are pending (which bounds memory). Results are grouped
    by segment key.

    A chunk's id is hashed here, before submission, so that the objects each chunk writes
    (its own id; the parent chunk it may re-encode as a reverse delta) are known: a chunk
    writing an object an earlier chunk of the file also writes waits for that one. Its
    stored bytes are then those of encoding the file's chunks one by one in order,
    whatever the window or the number of workers."""

    def __init__(self, writer: Writer, stats: IngestStats) -> None:
        self.w = writer
        self.stats = stats
        self.pending: deque[tuple[int, Future, int]] = deque()
        self.inflight = 0
        self.ids: dict[int, list[ObjectId]] = {}
        self.last: dict[ObjectId, Future] = {}  # the latest chunk writing each object
        self.before: dict = {}  # headers of chunks re-encoded by this file, as they were

    def submit(self, key: int, data: bytes, tinfo, literal: bool, oid: ObjectId | None = None) -> None:
        oid = oid or hash_bytes(data)
        n = len(data)
        while self.pending and self.inflight + n > self.w._window_bytes:
            self._collect(*self.pending.popleft())
        writes = (oid,) if tinfo is None or tinfo[1] is None else (oid, tinfo[1])
        after = [f for f in {self.last.get(o) for o in writes} if f is not None]
        fut = self.w._pool.submit(self.w._store_chunk, data, tinfo, literal, oid, after, self.before)
        for o in writes:
            self.last[o] = fut
        self.pending.append((key, fut, n))
        self.inflight += n

    def finish(self) -> dict[int, list[ObjectId]]:
        while self.pending:
            self._collect(*self.pending.popleft())
        return self.ids

    def _collect(self, key: int, fut: Future, n: int) -> None:
        self.inflight -= n
        oid, n, written, size, codec = fut.result()
        self.ids.setdefault(key, []).append(oid)
        st = self.stats
        st.logical += n
        if written:
            st.chunks_new += 1
            st.stored += size
            st.codecs[codec] += 1
        else:
            st.chunks_dedup += 1
