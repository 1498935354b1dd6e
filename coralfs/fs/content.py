"""What an open file of a mount serves: bytes assembled from stored chunks.

``read`` may decode chunks (call it from a worker thread); ``cached`` answers only from
already decoded chunks, so the event loop can serve cache hits without a thread hop.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..objects.ids import ObjectId
from ..objects.reader import FileView


class Content:
    size: int

    def read(self, off: int, size: int) -> bytes:
        raise NotImplementedError

    def cached(self, off: int, size: int) -> bytes | None:
        return None

    def chunk_ids(self, off: int, size: int) -> list[ObjectId]:
        return []

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

    def read(self, off: int, size: int) -> bytes:
        return self.view.read(off, size)

    def cached(self, off: int, size: int) -> bytes | None:
        parts = []
        for oid, _n, skip, take in self.view.chunks_for(off, size):
            data = self.view.odb.chunks.get(oid)
            if data is None:
                return None
            parts.append(data[skip:skip + take])
        return b"".join(parts)

    def chunk_ids(self, off: int, size: int) -> list[ObjectId]:
        return [oid for oid, *_ in self.view.chunks_for(off, size)]

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

    def read(self, off: int, size: int) -> bytes:
        out = []
        for p, rel, n in self._spans(off, size):
            out.append(p[rel:rel + n] if isinstance(p, bytes) else p[0].read(p[1] + rel, n))
        return b"".join(out)

    def cached(self, off: int, size: int) -> bytes | None:
        out = []
        for p, rel, n in self._spans(off, size):
            if isinstance(p, bytes):
                out.append(p[rel:rel + n])
                continue
            got = Stored(p[0]).cached(p[1] + rel, n)
            if got is None:
                return None
            out.append(got)
        return b"".join(out)

    def chunk_ids(self, off: int, size: int) -> list[ObjectId]:
        ids: list[ObjectId] = []
        for p, rel, n in self._spans(off, size):
            if not isinstance(p, bytes):
                ids.extend(oid for oid, *_ in p[0].chunks_for(p[1] + rel, n))
        return ids

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

    def read(self, off: int, size: int) -> bytes:
        return self.data[off:off + size]

    def cached(self, off: int, size: int) -> bytes | None:
        return self.read(off, size)


__all__ = ["Content", "Stored", "Pieces", "Literal"]
