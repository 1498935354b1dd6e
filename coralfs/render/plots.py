"""The visual diff as PNG files drawn with matplotlib (the `viz` extra): one image per
changed tensor (its |Δ| heatmap and histogram) and an overview of every tensor's relative
L2 change. Images have a fixed size (SIZE pixels) so they fit reports and tests alike."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

SIZE = (1000, 500)   # pixels: width, height
DPI = 100


def _plt():
    try:
        import matplotlib as mpl
    except ImportError:
        raise ImportError("matplotlib") from None
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def safe_name(label: str, i: int) -> str:
    """A file name for a tensor: its index first (unique), then its name made safe."""
    return f"{i:04d}-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "tensor")[:120] + ".png"


def _figure(plt):
    return plt.figure(figsize=(SIZE[0] / DPI, SIZE[1] / DPI), dpi=DPI)


def overview(path: str, labels: Sequence[str], rel: Sequence[float | None], title: str) -> None:
    plt = _plt()
    fig = _figure(plt)
    ax = fig.add_subplot(1, 1, 1)
    vals = [v if v is not None else 0.0 for v in rel]
    ax.bar(range(len(vals)), vals, color="#e6550d")
    ax.set_ylabel("relative L2 change")
    ax.set_title(title)
    if len(labels) <= 40:
        ax.set_xticks(range(len(labels)), [lbl[-30:] for lbl in labels], rotation=90, fontsize=6)
    else:
        ax.set_xlabel(f"{len(labels)} tensors in model order")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def tensor_image(path: str, label: str, heatmap: np.ndarray | None, histogram: Sequence[int] | None,
                 edges: Sequence[int]) -> None:
    plt = _plt()
    fig = _figure(plt)
    n = (heatmap is not None) + (histogram is not None)
    k = 1
    if heatmap is not None:
        ax = fig.add_subplot(1, n, k)
        im = ax.imshow(np.asarray(heatmap), aspect="auto", cmap="inferno_r", interpolation="nearest")
        fig.colorbar(im, ax=ax, label="mean |Δ| per block")
        ax.set_title(label[-60:], fontsize=9)
        k += 1
    if histogram is not None:
        ax = fig.add_subplot(1, n, k)
        ax.bar(range(len(histogram)), list(histogram), color="#3182bd")
        ax.set_yscale("symlog")
        ax.set_xticks(range(0, len(histogram), 3), [f"1e{edges[i]}" for i in range(0, len(histogram), 3)], fontsize=7)
        ax.set_xlabel("|Δ| (decades)")
        ax.set_ylabel("changed elements")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_all(directory: str, title: str, rows: Sequence, edges: Sequence[int]) -> list[str]:
    """overview.png plus one image per row with a heatmap or histogram; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    labels = [f"{r.path}:{r.name}" for r in rows]
    paths = [os.path.join(directory, "overview.png")]
    overview(paths[0], labels, [r.rel_l2 for r in rows], title)
    for i, (r, label) in enumerate(zip(rows, labels, strict=True)):
        if r.heatmap is None and r.histogram is None:
            continue
        p = os.path.join(directory, safe_name(label, i))
        tensor_image(p, label, r.heatmap, r.histogram, edges)
        paths.append(p)
    return paths
