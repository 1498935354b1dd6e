"""A stable text summary of one checkpoint file on disk, for git's ``textconv`` (``git diff``
of weight files shows which tensors changed and how, instead of "binary files differ").

One line per tensor: name, dtype, shape, a digest of its bytes, and for numeric dtypes the
mean and L2 norm; the bytes outside tensors as one digest. The same file always prints the
same text (nothing depends on time, paths or the machine)."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..formats import layout_of
from ..objects import dtypes

BLOCK = 16 << 20


def _digest_and_stats(f, offset: int, length: int, dt: dtypes.DType | None) -> tuple[str, float | None, float | None]:
    h = hashlib.sha256()
    total = sq = 0.0
    n = 0
    numeric = dt is not None and dt.numpy is not None and dt.name != "BOOL"
    step = (BLOCK // dt.width * dt.width) if numeric else BLOCK
    pos = 0
    while pos < length:
        f.seek(offset + pos)
        data = f.read(min(step, length - pos))
        if not data:
            break
        h.update(data)
        if numeric:
            x = np.frombuffer(data[: len(data) // dt.width * dt.width], dt.numpy).astype(np.float64)
            x = x[np.isfinite(x)]
            total += float(x.sum())
            sq += float(np.square(x).sum())
            n += x.size
        pos += len(data)
    if not numeric or n == 0:
        return h.hexdigest()[:16], None, None
    return h.hexdigest()[:16], total / n, sq ** 0.5


def summarize(path: str) -> list[str]:
    """The summary lines of the checkpoint at ``path``."""
    size = os.path.getsize(path)
    lay = layout_of(path)
    lines = [f"coralfs textconv: {lay.format}, {size} bytes"]
    other = hashlib.sha256()
    with open(path, "rb") as f:
        pos = 0
        for r in sorted(lay.regions, key=lambda r: r.offset):
            f.seek(pos)
            other.update(f.read(r.offset - pos))
            pos = r.offset + r.length
            if r.name is None:
                f.seek(r.offset)
                other.update(f.read(r.length))
                continue
            dt = dtypes.lookup(r.dtype) if r.dtype else None
            digest, mean, norm = _digest_and_stats(f, r.offset, r.length, dt)
            shape = "[" + ", ".join(map(str, r.shape or ())) + "]"
            stats = f" mean={mean:.6g} l2={norm:.6g}" if mean is not None else ""
            lines.append(f"tensor {r.name} {r.dtype} {shape} sha256:{digest}{stats}")
        f.seek(pos)
        while True:
            block = f.read(BLOCK)
            if not block:
                break
            other.update(block)
    lines.append(f"other bytes sha256:{other.hexdigest()[:16]}")
    return lines
