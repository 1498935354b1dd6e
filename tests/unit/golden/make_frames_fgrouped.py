#!/usr/bin/env python3
"""Build the golden FGROUPED keyframes of frame version 2 (byte planes, each zstd or stored).

Run ONCE with the code that wrote them (before the exponent plane could be stored as
ranks), never again: tests/unit/test_codecs.py decodes these frames with today's code.
Each record holds its dtype, the data (hex) and the frame (hex).

    PYTHONPATH=$PWD python tests/unit/golden/make_frames_fgrouped.py tests/unit/golden/frames-fgrouped-v2.json.gz
"""

from __future__ import annotations

import gzip
import json
import sys

import ml_dtypes
import numpy as np

from coralfs.objects import codecs, dtypes
from coralfs.objects.ids import hash_bytes


def record(dtype: str, data: bytes) -> dict:
    dt = dtypes.lookup(dtype)
    frame = codecs.encode_as(codecs.FGROUPED, data, hash_bytes(data), width=dt.width, key=dt.key)
    h = codecs.parse_header(frame, hash_bytes(data))
    assert h.codec == codecs.FGROUPED and frame[4] == 2
    return {"dtype": dtype, "data": data.hex(), "frame": frame.hex()}


def main(out: str) -> None:
    rng = np.random.default_rng(14)
    recs = []
    for dtype, npt in (("BF16", ml_dtypes.bfloat16), ("F32", np.float32), ("F16", np.float16),
                       ("F64", np.float64)):
        w = np.dtype(npt).itemsize
        a = (rng.standard_normal(1500) * 0.05).astype(npt)
        a[:5] = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0]).astype(npt)
        recs.append(record(dtype, a.tobytes()))
        recs.append(record(dtype, a.tobytes() + b"\x07" * (w - 1)))  # a tail shorter than an element
        recs.append(record(dtype, np.full(2000, 0.5, dtype=npt).tobytes()))  # one exponent
        recs.append(record(dtype, rng.integers(0, 256, 300 * w, dtype=np.uint8).tobytes() + bytes(1 << 12)))
    with gzip.open(out, "wt") as f:
        json.dump(recs, f)


if __name__ == "__main__":
    main(sys.argv[1])
