"""Statistics of one stored tensor's values (min, max, mean, std, NaN and Inf counts) and a
histogram of its finite values: what a browser shows as the weight distribution. Only that
tensor is decoded, chunk by chunk (numpy only, never torch); memory stays at one chunk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..objects import dtypes
from ..objects.errors import CoralError
from ..objects.kinds import File, PackedTensor, Tensor, TensorSegment
from ..objects.reader import FileView
from ..objects.repository import Repository

PACKED_BLOCK = 4 << 20   # bytes read at once from a packed tensor (packs hold small tensors)


@dataclass
class ValueStats:
    name: str
    dtype: str
    shape: tuple[int, ...]
    count: int = 0
    nan: int = 0
    inf: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    edges: np.ndarray | None = None    # bins + 1 edges over [min, max] of the finite values
    counts: np.ndarray | None = None   # finite values per bin
    numeric: bool = True               # False: a dtype without numbers to count (no stats)

    @property
    def finite(self) -> int:
        return self.count - self.nan - self.inf

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "count": self.count,
                "nan": self.nan, "inf": self.inf, "min": self.min, "max": self.max, "mean": self.mean,
                "std": self.std, "edges": None if self.edges is None else [float(e) for e in self.edges],
                "counts": None if self.counts is None else [int(c) for c in self.counts]}


def _blocks(repo: Repository, f: File, name: str) -> tuple[str, tuple[int, ...], Iterator[bytes]]:
    offsets = f.tensor_offsets()
    if name not in offsets:
        raise CoralError(f"no tensor {name!r} in this file ({len(offsets)} tensors)")
    start, ref = offsets[name]
    if isinstance(ref, TensorSegment):
        t = repo.odb.get_object(ref.tensor, Tensor)
        return t.dtype, t.shape, (repo.odb.read_chunk(c) for c in t.chunks)
    assert isinstance(ref, PackedTensor)
    view = FileView(repo.odb, f)
    width = dtypes.lookup(ref.dtype).width
    step = max(width, PACKED_BLOCK // width * width)
    return ref.dtype, tuple(ref.shape), (view.read(start + p, min(step, ref.length - p))
                                         for p in range(0, ref.length, step))


def value_stats(repo: Repository, f: File, name: str, bins: int = 32) -> ValueStats:
    """The statistics and a ``bins``-bin histogram of tensor ``name`` of file ``f``. Two
    streaming passes: the first finds the range (and the moments, combined per chunk so a
    large tensor keeps float64 precision), the second counts values into the bins."""
    dtype, shape, first = _blocks(repo, f, name)
    out = ValueStats(name, dtype, shape)
    dt = dtypes.lookup(dtype)
    if dt.numpy is None:
        out.numeric = False
        return out
    n = 0
    mean = m2 = 0.0
    lo, hi = np.inf, -np.inf
    for data in first:
        x = np.frombuffer(data, dt.numpy).astype(np.float64)
        out.count += x.size
        out.nan += int(np.count_nonzero(np.isnan(x)))
        out.inf += int(np.count_nonzero(np.isinf(x)))
        x = x[np.isfinite(x)]
        if not x.size:
            continue
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        # Chan et al.'s pairwise update of mean and sum of squared deviations.
        bm = float(x.mean())
        bm2 = float(np.square(x - bm).sum())
        total = n + x.size
        d = bm - mean
        mean += d * x.size / total
        m2 += bm2 + d * d * n * x.size / total
        n = total
    if n == 0:
        return out
    out.min, out.max, out.mean, out.std = lo, hi, mean, (m2 / n) ** 0.5
    # A constant tensor gets one unit around its value, as numpy.histogram does.
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.linspace(lo - 0.5, hi + 0.5, bins + 1)
    counts = np.zeros(bins, np.int64)
    for data in _blocks(repo, f, name)[2]:
        x = np.frombuffer(data, dt.numpy).astype(np.float64)
        counts += np.histogram(x[np.isfinite(x)], bins=edges)[0]
    out.edges, out.counts = edges, counts
    return out


__all__ = ["ValueStats", "value_stats"]
