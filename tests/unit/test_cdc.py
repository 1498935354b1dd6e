"""Content-defined chunking: cut points are part of the storage format (pinned), and the
streaming writer cuts exactly as cutting the whole buffer at once does."""

from __future__ import annotations

import numpy as np

from coralfs.objects.cdc import Chunker
from coralfs.objects.regions import Region

GOLDEN_CUTS = [806386, 1025409, 1583700, 1262472, 808495, 1052630, 376179, 1157757, 356799, 913305,
               434699, 1452303, 326657, 457399, 1357203, 1060552, 282660, 267816, 2562592, 2577942,
               564385, 284180]


def _data() -> bytes:
    return np.random.default_rng(42).integers(0, 256, 20 << 20, dtype=np.uint8).tobytes()


def _cuts(data: bytes) -> list[int]:
    c, cuts, pos = Chunker(), [], 0
    while pos < len(data):
        n = c.next_cut(memoryview(data)[pos:], True)
        cuts.append(n)
        pos += n
    return cuts


def test_golden_cut_points():
    cuts = _cuts(_data())
    assert cuts == GOLDEN_CUTS
    assert all(256 << 10 <= n <= 4 << 20 for n in cuts[:-1])


def test_cuts_follow_content_after_an_insertion():
    data = _data()
    shifted = _cuts(b"a small header" + data)
    assert shifted[-15:] == GOLDEN_CUTS[-15:]  # boundaries resynchronise with the data


class _Mem:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read_at(self, off: int, n: int) -> bytes:
        return self.data[off:off + n]


def test_streaming_writer_cuts_like_the_whole_buffer(repo):
    data = _data()
    for start, length in ((0, len(data)), (12345, 9 << 20), (0, 100), (5, 300 << 10)):
        pieces = list(repo.writer._literal_pieces(_Mem(data), Region(start, length)))
        assert b"".join(pieces) == data[start:start + length]
        assert [len(p) for p in pieces] == _cuts(data[start:start + length])
