#!/usr/bin/env python3
"""Build the golden frames of format v2 (SPARSE with a bitmap and with gaps, SUBS).

Run ONCE with the code that wrote format v2 (before frame v3 changed the SPARSE and SUBS
payloads), never again: tests/unit/test_codecs.py decodes these frames with today's code.
Each record holds its codec, dtype and SPARSE positions mode, the base (hex), the data
as their XOR with the base (hex; mostly zeros, so the gzip stays small) and the frame.

    PYTHONPATH=$PWD python tests/unit/golden/make_frames_v2.py tests/unit/golden/frames-v2.json.gz
"""

from __future__ import annotations

import gzip
import json
import sys

import ml_dtypes
import numpy as np

from coralfs.objects import codecs, dtypes, sparse
from coralfs.objects.ids import hash_bytes


def record(codec: int, dtype: str, base: np.ndarray, new: np.ndarray) -> dict:
    dt = dtypes.lookup(dtype)
    data, bb = new.tobytes(), base.tobytes()
    frame = codecs.encode_as(codec, data, hash_bytes(data), width=dt.width, key=dt.key,
                             base=codecs.Base(hash_bytes(bb), bb, 0))
    h = codecs.parse_header(frame, hash_bytes(data))
    assert h.codec == codec and frame[4] == 2
    mode = sparse._SPARSE.unpack_from(frame, codecs.HEADER_SIZE + 8)[1] if codec == codecs.SPARSE else None
    return {"codec": codecs.CODEC_NAMES[codec], "dtype": dtype, "mode": mode,
            "base": bb.hex(), "xor": (np.frombuffer(data, np.uint8) ^ np.frombuffer(bb, np.uint8)).tobytes().hex(),
            "frame": frame.hex()}


def main(out: str) -> None:
    rng = np.random.default_rng(13)
    recs = []
    for dtype, npt in (("BF16", ml_dtypes.bfloat16), ("F32", np.float32)):
        base = (rng.standard_normal(3000) * 0.05).astype(npt)
        for density in (0.3, 0.01):  # a bitmap, then gaps
            u = base.view(np.uint16 if npt is ml_dtypes.bfloat16 else np.uint32).copy()
            moved = rng.random(len(u)) < density
            u[moved] += rng.integers(1, 4, int(moved.sum())).astype(u.dtype)
            recs.append(record(codecs.SPARSE, dtype, base, u.view(npt)))
        new = (base.astype(np.float32) * (1 + rng.standard_normal(len(base)).astype(np.float32) * 0.01)).astype(npt)
        recs.append(record(codecs.SUBS, dtype, base, new))
    modes = {r["mode"] for r in recs if r["codec"] == "sparse"}
    assert sparse.POS_GAPS in modes and modes & {0, 1}, modes
    with gzip.open(out, "wt") as f:
        json.dump(recs, f)


if __name__ == "__main__":
    main(sys.argv[1])
