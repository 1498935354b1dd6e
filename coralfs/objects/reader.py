"""Random access to a stored file: read(offset, size) -> segments -> chunks -> bytes.

Only the chunks a read touches are decoded (through the ObjectDB's cache). Laying out a
file needs only its File object: tensor segments carry their byte length, and a tensor's
chunk for an offset is found by division, so a Tensor object is loaded on first touch.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from .ids import ObjectId
from .kinds import BytesSegment, File, Tensor, TensorSegment
from .odb import ObjectDB


class FileView:
    def __init__(self, odb: ObjectDB, file: File) -> None:
        self.odb = odb
        self.file = file
        self.size = file.size
        self._starts: list[int] = []
        pos = 0
        for s in file.segments:
            self._starts.append(pos)
            pos += s.length
        self._byte_starts: dict[int, list[int]] = {}

    def _seg_chunks(self, i: int) -> tuple[list[int], list[ObjectId], list[int]]:
        """(chunk start offsets within the segment, ids, lengths) of segment i."""
        seg = self.file.segments[i]
        if isinstance(seg, TensorSegment):
            t = self.odb.get_object(seg.tensor, Tensor)
            lens = t.chunk_lengths()
            return [k * t.chunk_size for k in range(len(t.chunks))], t.chunks, lens
        starts = self._byte_starts.get(i)
        ids = [c for c, _ in seg.chunks]
        lens = [n for _, n in seg.chunks]
        if starts is None:
            starts, p = [], 0
            for n in lens:
                starts.append(p)
                p += n
            self._byte_starts[i] = starts
        return starts, ids, lens

    def chunks_for(self, offset: int, size: int) -> Iterator[tuple[ObjectId, int, int, int]]:
        """Yield (chunk id, chunk length, start within chunk, bytes to take) covering
        ``[offset, offset + size)`` clipped to the file."""
        end = min(self.size, offset + size)
        pos = offset
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            seg = self.file.segments[i]
            seg_start = self._starts[i]
            within = pos - seg_start
            if isinstance(seg, TensorSegment):
                t = self.odb.get_object(seg.tensor, Tensor)
                k = within // t.chunk_size
                c_start = k * t.chunk_size
                c_len = min(t.chunk_size, seg.length - c_start)
                oid = t.chunks[k]
            else:
                starts, ids, lens = self._seg_chunks(i)
                k = bisect.bisect_right(starts, within) - 1
                c_start, c_len, oid = starts[k], lens[k], ids[k]
            skip = within - c_start
            take = min(c_len - skip, end - pos)
            yield oid, c_len, skip, take
            pos += take

    def read(self, offset: int, size: int) -> bytes:
        parts = []
        for oid, _n, skip, take in self.chunks_for(offset, size):
            data = self.odb.read_chunk(oid)
            parts.append(data if (skip == 0 and take == len(data)) else data[skip:skip + take])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def iter_bytes(self) -> Iterator[bytes]:
        """The whole file, chunk by chunk (streaming export)."""
        def ids():
            for i in range(len(self.file.segments)):
                yield from self._seg_chunks(i)[1]
        yield from self.odb.read_chunks(ids())

    def segment_at(self, offset: int) -> tuple[int, int]:
        """(segment index, segment start) holding ``offset``."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return i, self._starts[i]

    def segment_ranges(self) -> list[tuple[int, int, BytesSegment | TensorSegment]]:
        return [(self._starts[i], s.length, s) for i, s in enumerate(self.file.segments)]
