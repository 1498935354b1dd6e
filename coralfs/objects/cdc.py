"""Content-defined chunking of literal bytes (vectorized with numpy).

A window hash is the XOR of per-byte table values over the last ``WINDOW`` bytes
(computed for every position at once with a cumulative XOR); a position whose hash has
its low ``bits`` zero is a candidate cut. Cuts depend only on nearby content, so an
insertion shifts the chunk boundaries with the data and the rest dedups. The table and
the parameters are part of the storage format (a golden test pins them).
"""

from __future__ import annotations

import functools

from .lazy import lazy_module

np = lazy_module("numpy")  # imported on first use: commands that never compute start without it

WINDOW = 48


@functools.cache
def _table() -> np.ndarray:
    # Built on first use, so importing the object layer does not import numpy.
    return np.random.default_rng(0xC0A1F5).integers(0, 1 << 32, 256, dtype=np.uint64).astype(np.uint32)


class Chunker:
    """Splits a stream into chunks of ``min_size``..``max_size`` bytes, ~``avg`` on average."""

    def __init__(self, min_size: int = 256 << 10, avg: int = 1 << 20, max_size: int = 4 << 20) -> None:
        assert min_size >= WINDOW and min_size < avg < max_size
        self.min_size, self.max_size = min_size, max_size
        self._table = _table()
        self.mask = np.uint32((1 << max(1, (avg - min_size).bit_length() - 1)) - 1)

    def next_cut(self, buf: bytes | memoryview, final: bool) -> int | None:
        """Length of the next chunk at the head of ``buf``, or None if more data is
        needed to decide (``final`` says no more is coming)."""
        n = len(buf)
        if n <= self.min_size:
            return n if final and n else None
        end = min(n, self.max_size)
        arr = np.frombuffer(buf, dtype=np.uint8, count=end)
        cx = np.bitwise_xor.accumulate(self._table[arr])
        h = cx[self.min_size:end] ^ cx[self.min_size - WINDOW:end - WINDOW]
        hits = np.flatnonzero((h & self.mask) == 0)
        if len(hits):
            return self.min_size + int(hits[0]) + 1
        if end == self.max_size:
            return self.max_size
        return n if final else None
