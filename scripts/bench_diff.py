"""Diff benchmark: `coralfs diff --stat`, `--visual` and `--format html` of two ~1 GB
fp32 checkpoints (a fine-tune: every tensor moved a little), wall time and peak RSS of
each, measured in one run, each command in its own process.

    .venv/bin/python scripts/bench_diff.py [--size-mb 1024]

Targets (issue "See the weights"): --visual within 1.5x of --stat; peak RSS < 3x the
largest tensor. Prints a table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file

LAYER = (2048, 4096)   # 32 MiB fp32 tensors


def cli(repo: str, *args: str) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one coralfs command in a fresh process."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execv(sys.executable, [sys.executable, "-m", "coralfs", "-R", repo, *args])
    _, status, ru = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"coralfs {' '.join(args)} failed")
    return time.perf_counter() - t0, ru.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    a = ap.parse_args()
    n = max(1, a.size_mb // 32)
    work = tempfile.mkdtemp(prefix="coralfs-bench-diff-")
    try:
        repo = os.path.join(work, "repo")
        subprocess.run([sys.executable, "-m", "coralfs", "init", repo], check=True, capture_output=True)
        rng = np.random.default_rng(0)
        base = {f"layers.{i}.weight": (rng.standard_normal(LAYER, dtype=np.float32) * 0.02) for i in range(n)}
        for step, sd in enumerate((base, {k: v + np.float32(1e-4) * rng.standard_normal(LAYER, dtype=np.float32)
                                          for k, v in base.items()})):
            d = os.path.join(work, f"ck{step}")
            os.makedirs(d)
            save_file(sd, os.path.join(d, "model.safetensors"))
            subprocess.run([sys.executable, "-m", "coralfs", "-R", repo, "commit", d, "-m", f"step {step}"],
                           check=True, capture_output=True)
            shutil.rmtree(d)
        del base
        largest = LAYER[0] * LAYER[1] * 4
        rows = []
        for label, args in (("diff --stat", ["diff", "HEAD~1", "--stat"]),
                            ("diff --visual", ["diff", "HEAD~1", "--visual", "--no-group"]),
                            ("diff --format html", ["diff", "HEAD~1", "--format", "html", "-o",
                                                    os.path.join(work, "d.html")])):
            wall, rss = cli(repo, *args)
            rows.append((label, wall, rss))
        stat = rows[0][1]
        print(f"two {n * 32} MiB fp32 checkpoints ({n} tensors of {largest >> 20} MiB), load {os.getloadavg()[0]:.1f}")
        print("| command | wall s | vs --stat | peak RSS MiB | RSS / largest tensor |")
        print("|---|---:|---:|---:|---:|")
        for label, wall, rss in rows:
            print(f"| `{label}` | {wall:.2f} | {wall / stat:.2f}x | {rss / 2**20:.0f} | {rss / largest:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
