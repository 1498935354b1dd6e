"""Numbers about weights (numpy only, never torch): streaming per-tensor diff statistics and
block heatmaps. Pictures of them are drawn by coralfs.render, presented by the CLI."""

from __future__ import annotations

from .heatmap import BlockHeatmap, grid_shape, matrix_shape
from .visual import TensorDelta, VisualDiff, visual_diff

__all__ = ["BlockHeatmap", "TensorDelta", "VisualDiff", "grid_shape", "matrix_shape", "visual_diff"]
