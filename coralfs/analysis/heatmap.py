"""Block heatmaps of |Δ|, reduced while the tensor streams (never |Δ| of a whole tensor)."""

from __future__ import annotations

import numpy as np


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view a heatmap draws: rows x (product of the other axes); 1-D is one strip."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, max(1, shape[0])
    rest = 1
    for n in shape[1:]:
        rest *= n
    return max(1, shape[0]), max(1, rest)


def grid_shape(shape: tuple[int, ...], width: int, max_rows: int = 24) -> tuple[int, int]:
    """Blocks (rows, cols) that fit ``width`` characters; a character cell is about twice as
    tall as wide, so rows are halved to keep the tensor's aspect."""
    rows, cols = matrix_shape(shape)
    gc = max(1, min(cols, width))
    if rows == 1:
        return 1, gc
    gr = max(1, min(rows, max_rows, round(gc * rows / cols / 2)))
    return gr, gc


class BlockHeatmap:
    """Mean |Δ| per block of a (rows x cols) grid over a tensor's matrix view, fed as
    (element offset, |Δ| of consecutive elements) pieces in any chunking."""

    def __init__(self, shape: tuple[int, ...], grid: tuple[int, int]) -> None:
        self.rows, self.cols = matrix_shape(shape)
        self.grid = grid
        self.sums = np.zeros(grid[0] * grid[1], np.float64)
        self.counts = np.zeros(grid[0] * grid[1], np.int64)

    def __call__(self, offset: int, absd: np.ndarray) -> None:
        idx = np.arange(offset, offset + absd.size, dtype=np.int64)
        r, c = np.divmod(idx, self.cols)
        block = (r * self.grid[0] // self.rows) * self.grid[1] + c * self.grid[1] // self.cols
        n = self.sums.size
        self.sums += np.bincount(block, weights=absd, minlength=n)[:n]
        self.counts += np.bincount(block, minlength=n)[:n]

    def values(self) -> np.ndarray:
        """The (grid rows x grid cols) mean |Δ| of each block."""
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), 0.0)
        return v.reshape(self.grid)
