"""What an open file of a mount serves: bytes assembled from stored chunks.

A read resolves its byte range once into a :class:`Span` (the chunks and literal bytes to
join, and where the tensor or literal run holding it begins); the read path asks the span
whether it is cached, which chunks it needs and to read itself, without walking the
file's segments again. ``Span.read`` may decode chunks (call it from a worker thread);
``Span.cached`` answers only from already decoded chunks, so the event loop can serve
cache hits without a thread hop, and probes without counting a miss: a miss is counted
once, by the decode that follows (.coral/stats.json shows real misses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..objects.ids import ObjectId
from ..objects.reader import FileView


@dataclass
class Span:
    """A byte range of one Content, resolved once: the pieces to join, in order."""

    odb: object | None                           # where chunk pieces are read (None: only literals)
    parts: list[bytes | tuple[ObjectId, int, int]]  # literal bytes, or (chunk id, skip, take)
    region: int = 0                              # start of the tensor or literal run holding it

    def chunk_ids(self) -> list[ObjectId]:
        return [p[0] for p in self.parts if not isinstance(p, bytes)]

    def cached(self) -> bytes | memoryview | None:
        """The bytes if every chunk is decoded already, else None (and no miss counted)."""
        cache = self.odb.chunks if self.odb is not None else None
        if any(not isinstance(p, bytes) and cache.peek(p[0]) is None for p in self.parts):
            return None
        out = []
        for p in self.parts:
            if isinstance(p, bytes):
                out.append(p)
                continue
            data = cache.get(p[0])  # a hit: counted, and kept fresh in the LRU
            if data is None:  # evicted since the probe
                return None
            cache.served(p[0], data)  # read for itself (a disk tier writes a base-only chunk now)
            out.append(_cut(data, p[1], p[2]))
        return _join(out)

    def read(self) -> bytes | memoryview:
        """The bytes, decoding chunks that are not cached (call from a worker thread)."""
        return _join([p if isinstance(p, bytes) else _cut(self.odb.read_chunk(p[0]), p[1], p[2])
                      for p in self.parts])


def _cut(data: bytes, skip: int, take: int) -> bytes | memoryview:
    # A view, not a copy: the kernel's reply copies the bytes once anyway (pyfuse3 takes
    # any contiguous buffer), and most reads are 128 KiB pieces of one 4 MiB chunk.
    return data if skip == 0 and take == len(data) else memoryview(data)[skip:skip + take]


def _join(parts: list[bytes | memoryview]) -> bytes | memoryview:
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Content:
    size: int

    def span(self, off: int, size: int) -> Span:
        raise NotImplementedError

    def read(self, off: int, size: int) -> bytes:
        return self.span(off, size).read()

    def cached(self, off: int, size: int) -> bytes | None:
        return self.span(off, size).cached()

    def chunk_ids(self, off: int, size: int) -> list[ObjectId]:
        return self.span(off, size).chunk_ids()

    def prefetch_ids(self, off: int, size: int, cross: bool = False) -> list[ObjectId]:
        """Chunks worth decoding ahead of a sequential reader at ``off``: those of the
        next ``size`` bytes within the same tensor or literal run (a reader of one tensor
        does not pay for the next one); with ``cross``, also the first chunk after the
        run's end (which the kernel's aligned readahead touches anyway)."""
        return []

    def region_start(self, off: int) -> int:
        """Where the tensor or literal run holding ``off`` begins."""
        return 0


class Stored(Content):
    """A committed file, byte-identical to what was committed."""

    def __init__(self, view: FileView) -> None:
        self.view = view
        self.size = view.size

    def span(self, off: int, size: int) -> Span:
        parts: list = [(oid, skip, take) for oid, _n, skip, take in self.view.chunks_for(off, size)]
        return Span(self.view.odb, parts, self.region_start(off))

    def region_start(self, off: int) -> int:
        return self.view.segment_at(min(off, max(0, self.size - 1)))[1]

    def prefetch_ids(self, off: int, size: int, cross: bool = False) -> list[ObjectId]:
        if off >= self.size:
            return []
        i, start = self.view.segment_at(off)
        end = start + self.view.file.segments[i].length
        ids = self.chunk_ids(off, min(size, end - off))
        if cross and off + size > end and end < self.size:
            ids += self.chunk_ids(end, 1)
        return ids


class Pieces(Content):
    """Literal bytes and ranges of stored files laid end to end: a rewritten safetensors
    header followed by the chosen tensors, or an .npy header followed by one tensor."""

    def __init__(self, pieces: Sequence[bytes | tuple[FileView, int, int]]) -> None:
        self.pieces = list(pieces)
        self.starts = []
        pos = 0
        for p in self.pieces:
            self.starts.append(pos)
            pos += len(p) if isinstance(p, bytes) else p[2]
        self.size = pos

    def _spans(self, off: int, size: int):
        end = min(self.size, off + size)
        for start, p in zip(self.starts, self.pieces):
            n = len(p) if isinstance(p, bytes) else p[2]
            lo, hi = max(off, start), min(end, start + n)
            if lo < hi:
                yield p, lo - start, hi - lo

    def span(self, off: int, size: int) -> Span:
        odb, parts = None, []
        for p, rel, n in self._spans(off, size):
            if isinstance(p, bytes):
                parts.append(p[rel:rel + n])
                continue
            odb = p[0].odb
            parts.extend((oid, skip, take) for oid, _n, skip, take in p[0].chunks_for(p[1] + rel, n))
        return Span(odb, parts or [b""], self.region_start(off))

    def region_start(self, off: int) -> int:
        for start, p in zip(self.starts, self.pieces):
            n = len(p) if isinstance(p, bytes) else p[2]
            if start <= off < start + n:
                return start
        return 0

    def prefetch_ids(self, off: int, size: int, cross: bool = False) -> list[ObjectId]:
        for p, rel, n in self._spans(off, size):
            if isinstance(p, bytes):
                return []
            return [oid for oid, *_ in p[0].chunks_for(p[1] + rel, min(size, n))]
        return []


class Literal(Content):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def span(self, off: int, size: int) -> Span:
        return Span(None, [self.data[off:off + size]])


__all__ = ["Content", "Literal", "Pieces", "Span", "Stored"]
