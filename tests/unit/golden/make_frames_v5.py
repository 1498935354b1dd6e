#!/usr/bin/env python3
"""Build the golden frames of version 5 (entropy-coded streams, coralfs/objects/entropy.py):
FGROUPED keyframes (a coded byte plane, coded parts of a ranked exponent plane), SUBS and
SPARSE deltas (coded segment planes, bitmaps, gap planes, packed small differences, every
positions layout), for bf16, fp16, fp32 and fp64.

Run ONCE with the code that wrote them (the compiled coder built), never again:
tests/unit/test_entropy.py decodes these frames with today's code, with the compiled
coder, with its numpy decoder and without the delta kernel. Each record holds its codec,
dtype, SPARSE positions mode, the base (hex, empty for a keyframe), the data as their XOR
with the base (hex) and the frame.

    PYTHONPATH=$PWD python tests/unit/golden/make_frames_v5.py tests/unit/golden/frames-v5.json.gz
"""

from __future__ import annotations

import gzip
import json
import sys

import ml_dtypes
import numpy as np

from coralfs.objects import codecs, dtypes, entropy, planes, sparse
from coralfs.objects.ids import hash_bytes

NUMPY = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64}


def record(codec: int, dtype: str, data: bytes, base: bytes | None, cuts: list[int] | None = None) -> dict | None:
    """The record of one frame, None where the encoder coded no stream (not version 5)."""
    dt = dtypes.lookup(dtype)
    oid = hash_bytes(data)
    planes.rans_used(reset=True)
    if cuts is None:
        b = codecs.Base(hash_bytes(base), base, 0) if base is not None else None
        frame = codecs.encode_as(codec, data, oid, width=dt.width, key=dt.key, base=b)
    else:  # SPARSE with its positions by the exponent groups ``cuts``
        payload = sparse._sparse_payload(np.frombuffer(data, np.uint8), np.frombuffer(base, np.uint8),
                                         dt.width, dt.key, 3, cuts)
        assert planes.rans_used(reset=True)
        payload = codecs._CHECK.pack(codecs.checksum(payload)) + payload
        frame = codecs._pack(codec, dt.width, dt.key, 1, len(data), codecs.checksum(data), oid,
                             hash_bytes(base), payload, version=entropy.SINCE)
    assert codecs.parse_header(frame, oid).codec == codec
    if frame[4] != entropy.SINCE:
        print("not version 5:", codecs.CODEC_NAMES[codec], dtype, cuts)
        return None
    assert codecs.decode(frame, oid, lambda o: base) == data
    mode = sparse._SPARSE.unpack_from(frame, codecs.HEADER_SIZE + 8)[1] if codec == codecs.SPARSE else None
    bb = base if base is not None else bytes(len(data))
    return {"codec": codecs.CODEC_NAMES[codec], "dtype": dtype, "mode": mode,
            "base": base.hex() if base is not None else "",
            "xor": (np.frombuffer(data, np.uint8) ^ np.frombuffer(bb, np.uint8)).tobytes().hex(),
            "frame": frame.hex()}


def main(out: str) -> None:
    assert entropy.kernel is not None, "build the compiled coder first (scripts/setup)"
    rng = np.random.default_rng(15)
    recs = []
    for dtype, npt in NUMPY.items():
        n = 3000 if dtype in ("BF16", "F16") else 1500
        w = dtypes.lookup(dtype).width
        x = (rng.standard_normal(n) * 0.05).astype(npt)
        x[:5] = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0]).astype(npt)
        recs.append(record(codecs.FGROUPED, dtype, x.tobytes(), None))
        u = x.view(f"u{w}")
        for share in (0.01, 0.05):  # an RL-like step and a denser one
            moved = rng.random(n) < share
            v = u.copy()
            v[moved] += rng.integers(1, 3, int(moved.sum())).astype(u.dtype)
            recs.append(record(codecs.SPARSE, dtype, v.tobytes(), u.tobytes()))
        recs.append(record(codecs.SPARSE, dtype, v.tobytes(), u.tobytes(), cuts=[118, 122]))
        recs.append(record(codecs.SPARSE, dtype, v.tobytes(), u.tobytes(), cuts=[]))
        d = (x.astype(np.float64) * (1 + rng.standard_normal(n) * 0.002)).astype(npt)
        recs.append(record(codecs.SUBS, dtype, d.tobytes(), x.tobytes()))
    recs = [r for r in recs if r is not None]
    assert {r["mode"] for r in recs} >= {None, sparse.POS_GROUPS}
    assert {(r["codec"], r["dtype"]) for r in recs} >= {(c, "BF16") for c in ("fgrouped", "sparse", "subs")}
    with gzip.open(out, "wt") as f:
        json.dump(recs, f)
    print(len(recs), "records")


if __name__ == "__main__":
    main(sys.argv[1])
