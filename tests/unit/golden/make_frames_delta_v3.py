#!/usr/bin/env python3
"""Build the golden SUBS and SPARSE frames of format v3 (exponent-ordered segments, packed
small differences, positions by exponent groups) with the numpy code, before the compiled
kernel of the delta order (coralfs/objects/_native.c) existed.

Run ONCE (it forces the numpy code), never again: tests/unit/test_native.py decodes these
frames with the kernel and without it. Each record holds its codec, dtype and SPARSE
positions mode, the base (hex), the data as their XOR with the base (hex) and the frame.

    PYTHONPATH=$PWD CORALFS_NATIVE=0 python tests/unit/golden/make_frames_delta_v3.py \
        tests/unit/golden/frames-delta-v3.json.gz
"""

from __future__ import annotations

import gzip
import json
import sys

import ml_dtypes
import numpy as np

from coralfs.objects import codecs, dtypes, native, sparse
from coralfs.objects.ids import hash_bytes

NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def record(codec: int, dtype: str, base: np.ndarray, new: np.ndarray, cuts: list[int] | None = None) -> dict:
    dt = dtypes.lookup(dtype)
    data, bb = new.tobytes(), base.tobytes()
    oid = hash_bytes(data)
    if cuts is None:
        frame = codecs.encode_as(codec, data, oid, width=dt.width, key=dt.key,
                                 base=codecs.Base(hash_bytes(bb), bb, 0))
    else:  # SPARSE with its positions by the exponent groups ``cuts``
        payload = sparse._sparse_payload(np.frombuffer(data, np.uint8), np.frombuffer(bb, np.uint8),
                                         dt.width, dt.key, 3, cuts)
        payload = codecs._CHECK.pack(codecs.checksum(payload)) + payload
        frame = codecs._pack(codec, dt.width, dt.key, 1, len(data), codecs.checksum(data), oid,
                             hash_bytes(bb), payload)
    assert codecs.parse_header(frame, oid).codec == codec and frame[4] == 3
    assert codecs.decode(frame, oid, lambda o: bb) == data
    mode = sparse._SPARSE.unpack_from(frame, codecs.HEADER_SIZE + 8)[1] if codec == codecs.SPARSE else None
    return {"codec": codecs.CODEC_NAMES[codec], "dtype": dtype, "mode": mode, "base": bb.hex(),
            "xor": (np.frombuffer(data, np.uint8) ^ np.frombuffer(bb, np.uint8)).tobytes().hex(),
            "frame": frame.hex()}


def main(out: str) -> None:
    assert native.kernel is None, "run with CORALFS_NATIVE=0: these frames pin the numpy code"
    rng = np.random.default_rng(14)
    recs = []
    for dtype, npt in NUMPY.items():
        # bf16 and fp32 in several segments: more than SEGMENT_MIN elements in a few classes.
        base = (rng.standard_normal(12000 if dtype in ("BF16", "F32") else 2000) * 0.05).astype(npt)
        u = base.view(f"u{dtypes.lookup(dtype).width}")
        new = (base.astype(np.float64) * (1 + rng.standard_normal(len(base)) * 0.01)).astype(npt)
        recs.append(record(codecs.SUBS, dtype, base, new))
        moved = rng.random(len(u)) < 0.05
        v = u.copy()
        v[moved] += rng.integers(1, 4, int(moved.sum())).astype(u.dtype)
        recs.append(record(codecs.SPARSE, dtype, base, v.view(npt)))
        recs.append(record(codecs.SPARSE, dtype, base, v.view(npt), cuts=[118, 122]))
    for dtype in ("I32", "I16", "U8", "I64"):  # the other keys and byte elements
        w = dtypes.lookup(dtype).width
        base = rng.integers(0, 256, 1500 * w, dtype=np.uint8)
        new = base.copy()
        new[rng.random(len(new)) < 0.2] ^= 1
        recs.append(record(codecs.SUBS, dtype, base, new))
        recs.append(record(codecs.SPARSE, dtype, base, new))
    assert {r["mode"] for r in recs} >= {None, sparse.POS_GROUPS}
    with gzip.open(out, "wt") as f:
        json.dump(recs, f)


if __name__ == "__main__":
    main(sys.argv[1])
