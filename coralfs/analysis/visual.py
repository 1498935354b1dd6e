"""What `coralfs diff --visual` shows: per changed tensor, in model order, its relative L2
change, max |Δ| and changed fraction, plus block heatmaps of chosen tensors, all from one
streaming pass over the two revisions (coralfs.diff computes, this collects)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np

from ..diff import DeltaSink, diff
from ..objects.repository import Repository
from .heatmap import BlockHeatmap, grid_shape


@dataclass
class TensorDelta:
    path: str
    name: str
    status: str  # changed, added, removed
    shape: tuple[int, ...]
    rel_l2: float | None
    max_abs: float | None
    changed_frac: float | None
    heatmap: np.ndarray | None = None  # mean |Δ| per block, grid rows x cols


@dataclass
class VisualDiff:
    tensors: list[TensorDelta] = field(default_factory=list)
    other_files: list[tuple[str, str]] = field(default_factory=list)  # (path, status) without tensors
    matched: int = 0  # changed tensors the heatmap glob chose


def visual_diff(repo: Repository, a: str, b: str, *, tensor_glob: str | None = None,
                width: int = 80, sort: bool = False) -> VisualDiff:
    """Changed tensors from ``a`` to ``b``; heatmaps ``width`` blocks wide for those whose
    name matches ``tensor_glob``."""
    maps: dict[tuple[str, str], BlockHeatmap] = {}

    def sink_for(path: str, name: str, shape: tuple[int, ...]) -> DeltaSink | None:
        if tensor_glob is None or not fnmatch.fnmatchcase(name, tensor_glob):
            return None
        maps[(path, name)] = hm = BlockHeatmap(shape, grid_shape(shape, width))
        return hm

    out = VisualDiff()
    for fc in diff(repo, a, b, tensors=True, sink_for=sink_for):
        if not fc.tensors:
            out.other_files.append((fc.path, fc.status))
        for t in fc.tensors:
            hm = maps.get((fc.path, t.name))
            out.tensors.append(TensorDelta(fc.path, t.name, t.status, tuple(t.shape), t.rel_l2, t.max_abs,
                                           t.changed_frac, hm.values() if hm is not None and hm.counts.any() else None))
    out.matched = len(maps)
    if sort:
        # Largest change first; added/removed (no number) after the measured ones.
        out.tensors.sort(key=lambda t: -t.rel_l2 if t.rel_l2 is not None else float("inf"))
    return out
