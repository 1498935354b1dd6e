"""What `coralfs diff --visual` shows: per changed tensor, in model order, its relative L2
change, max |Δ| and changed fraction, plus block heatmaps of chosen tensors, all from one
streaming pass over the two revisions (coralfs.diff computes, this collects)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
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
    histogram: np.ndarray | None = None  # counts of |Δ| > 0 per decade (HIST_EDGES)

    def to_json(self) -> dict:
        d = {"path": self.path, "name": self.name, "status": self.status, "shape": list(self.shape),
             "rel_l2": self.rel_l2, "max_abs": self.max_abs, "changed_frac": self.changed_frac}
        if self.heatmap is not None:
            d["heatmap"] = [[float(v) for v in row] for row in self.heatmap]
        if self.histogram is not None:
            d["histogram"] = {"log10_edges": list(HIST_EDGES), "counts": [int(c) for c in self.histogram]}
        return d


# Decades of |Δ| for the histograms: 1e-12 .. 1e4 (values outside land in the end bins).
HIST_EDGES = tuple(range(-12, 5))


class DeltaHistogram:
    """Counts of the changed elements' |Δ| per decade, fed like a heatmap (streaming)."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(HIST_EDGES) - 1, np.int64)

    def __call__(self, offset: int, absd: np.ndarray) -> None:
        nz = absd[absd > 0]
        if nz.size:
            e = np.clip(np.floor(np.log10(nz)), HIST_EDGES[0], HIST_EDGES[-2]).astype(np.int64) - HIST_EDGES[0]
            self.counts += np.bincount(e, minlength=self.counts.size)[: self.counts.size]


@dataclass
class VisualDiff:
    tensors: list[TensorDelta] = field(default_factory=list)
    other_files: list[tuple[str, str]] = field(default_factory=list)  # (path, status) without tensors
    matched: int = 0  # changed tensors the heatmap glob chose


def visual_diff(repo: Repository, a: str, b: str, *, tensor_glob: str | None = None,
                width: int = 80, sort: bool = False, histograms: bool = False,
                progress: Callable[[str, str], None] | None = None, max_rows: int = 24) -> VisualDiff:
    """Changed tensors from ``a`` to ``b``; heatmaps ``width`` blocks wide (at most
    ``max_rows`` high) for those whose name matches ``tensor_glob``, and with
    ``histograms`` a histogram of |Δ| for every compared tensor. ``progress`` is called
    with (path, tensor name) as each compared tensor starts."""
    maps: dict[tuple[str, str], BlockHeatmap] = {}
    hists: dict[tuple[str, str], DeltaHistogram] = {}

    def sink_for(path: str, name: str, shape: tuple[int, ...]) -> DeltaSink | None:
        if progress is not None:
            progress(path, name)
        sinks: list[DeltaSink] = []
        if tensor_glob is not None and fnmatch.fnmatchcase(name, tensor_glob):
            maps[(path, name)] = hm = BlockHeatmap(shape, grid_shape(shape, width, max_rows))
            sinks.append(hm)
        if histograms:
            hists[(path, name)] = h = DeltaHistogram()
            sinks.append(h)
        if not sinks:
            return None
        if len(sinks) == 1:
            return sinks[0]

        def every(offset: int, absd: np.ndarray) -> None:
            for s in sinks:
                s(offset, absd)
        return every

    out = VisualDiff()
    for fc in diff(repo, a, b, tensors=True, sink_for=sink_for):
        if not fc.tensors:
            out.other_files.append((fc.path, fc.status))
        for t in fc.tensors:
            if t.status == "changed" and t.changed_frac == 0.0:
                continue   # the same values stored another way (moved into or out of a pack)
            hm = maps.get((fc.path, t.name))
            h = hists.get((fc.path, t.name))
            out.tensors.append(TensorDelta(fc.path, t.name, t.status, tuple(t.shape), t.rel_l2, t.max_abs,
                                           t.changed_frac, hm.values() if hm is not None and hm.counts.any() else None,
                                           h.counts if h is not None else None))
    out.matched = sum(1 for t in out.tensors if (t.path, t.name) in maps)
    if sort:
        # Largest change first; added/removed (no number) after the measured ones.
        out.tensors.sort(key=lambda t: -t.rel_l2 if t.rel_l2 is not None else float("inf"))
    return out
