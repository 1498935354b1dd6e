"""Block heatmaps reduce the same however a tensor's chunks fall, and match a direct
reduction of the whole |Δ|; the text renderer draws them without any repository."""

from __future__ import annotations

import numpy as np

from coralfs.analysis import BlockHeatmap, grid_shape, matrix_shape
from coralfs.diff import DeltaStats
from coralfs.render import Style, bar_lines, heatmap_lines


def test_block_means_do_not_depend_on_chunking_and_equal_a_direct_reduction():
    rng = np.random.default_rng(1)
    shape = (30, 4, 5)  # 3-D: rows x (4*5)
    absd = np.abs(rng.standard_normal(int(np.prod(shape))))
    grid = (6, 10)
    whole = BlockHeatmap(shape, grid)
    whole(0, absd)
    pieces = BlockHeatmap(shape, grid)
    for start, stop in [(0, 7), (7, 333), (333, 334), (334, absd.size)]:
        pieces(start, absd[start:stop])
    np.testing.assert_allclose(pieces.values(), whole.values())
    direct = absd.reshape(30, 20).reshape(6, 5, 10, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(whole.values(), direct)


def test_grid_fits_the_width_and_keeps_a_strip_one_row():
    assert matrix_shape((7,)) == (1, 7) and matrix_shape((3, 2, 2)) == (3, 4)
    assert grid_shape((1000,), 80) == (1, 80)
    rows, cols = grid_shape((4096, 4096), 80)
    assert cols == 80 and rows == 24  # capped, never taller than a screen
    assert grid_shape((8, 4), 80) == (4, 4)  # half as many rows: a cell is twice as tall
    assert grid_shape((3, 1000), 80) == (1, 80) and grid_shape((100, 2), 80) == (24, 2)


def test_delta_stats_counts_changed_elements_and_ignores_equal_nans():
    acc = DeltaStats()
    x = np.array([1.0, 2.0, np.nan, 4.0])
    y = np.array([1.0, 3.0, np.nan, 0.0])
    acc.add(x, y)
    mx, rel, frac = acc.result()
    assert (mx, frac) == (4.0, 0.5)
    assert rel == np.sqrt(1 + 16) / np.sqrt(1 + 4 + 16)


def test_render_scales_bars_to_the_largest_and_marks_zero_blocks_blank():
    lines = bar_lines([("a", "changed", 0.5, 1.0, 0.1), ("b", "changed", 0.25, 1.0, 0.1),
                       ("c", "added", None, None, None)], 80, Style())
    assert abs(lines[0].count("#") - 2 * lines[1].count("#")) <= 1 and "(added)" in lines[2]  # rounding
    grid = heatmap_lines(np.array([[0.0, 0.001, 1.0]]), Style())
    assert grid[0] == "| .@|" and grid[-1].startswith("legend: [ .:-=+*#%@]")
    coloured = heatmap_lines(np.array([[0.0, 1.0]]), Style(unicode=True, colour=True))
    assert "\x1b[" in coloured[0] and "█" in coloured[0]
