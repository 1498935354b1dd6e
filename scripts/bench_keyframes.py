#!/usr/bin/env python3
"""Keyframe chunks alone: FGROUPED on the 4 MiB chunks of the tensors >= 1 MiB of MiniLM
checkpoint 7 (fp32 and bf16, the shared series), level 1 as commits use: stored / raw,
how many chunks store a ranked plane (frame v4), encode and decode MB per CPU-second of
this thread (best of 9). Run alternately from two trees to compare codec versions.

    cd /tmp && flock /work/notes/bench.lock env PYTHONPATH=$TREE .venv/bin/python $TREE/scripts/bench_keyframes.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_storage as bs  # noqa: E402

from coralfs.objects import codecs, dtypes  # noqa: E402
from coralfs.objects.ids import hash_bytes  # noqa: E402

SERIES = os.path.join(os.environ.get("TMPDIR", "/tmp"), "coralfs-acceptance", "series")


def main() -> None:
    for label, name in (("fp32", "ckpt_07.safetensors"), ("bf16", "bf16_07.safetensors")):
        path = os.path.join(SERIES, name)
        data = bs.read(path)
        chunks = []
        for r in bs.tensor_regions(path):
            if r.length < (1 << 20):
                continue
            for o in range(r.offset, r.offset + r.length, 4 << 20):
                chunks.append((dtypes.lookup(r.dtype), data[o:min(o + (4 << 20), r.offset + r.length)]))
        total = sum(len(c) for _, c in chunks)
        te = td = float("inf")
        for _ in range(9):
            t = time.thread_time()
            frames = [codecs.encode_as(codecs.FGROUPED, c, hash_bytes(c), width=dt.width, key=dt.key, level=1)
                      for dt, c in chunks]
            te = min(te, time.thread_time() - t)
        for _ in range(9):
            t = time.thread_time()
            for (_dt, c), f in zip(chunks, frames):
                codecs.decode(f, hash_bytes(c))
            td = min(td, time.thread_time() - t)
        assert all(codecs.decode(f, hash_bytes(c)) == c for (_dt, c), f in zip(chunks, frames))
        ranked = sum(f[4] == 4 for f in frames)
        print(f"{label}: {len(chunks)} chunks ({ranked} ranked) stored {sum(map(len, frames)) / total:.4f}"
              f"  encode {total / te / 1e6:.0f} MB/s  decode {total / td / 1e6:.0f} MB/s (CPU, one thread)")


if __name__ == "__main__":
    main()
