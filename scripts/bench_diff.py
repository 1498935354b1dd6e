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

LAYER = (2048, 4096)   # 32 MiB fp32 tensors (--tensor-mb changes the rows)


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


def make(repo: str, size_mb: int, tensor_mb: int = 32) -> None:
    """Commit a base and a fine-tune of it (every element moved by ~1e-4) into ``repo``."""
    global LAYER
    LAYER = (tensor_mb * 64, 4096)
    n = max(1, size_mb // tensor_mb)
    work = os.path.dirname(repo)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--tensor-mb", type=int, default=32, help="size of each fp32 tensor")
    ap.add_argument("--make", metavar="REPO", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global LAYER
    LAYER = (a.tensor_mb * 64, 4096)
    if a.make:
        return make(a.make, a.size_mb, a.tensor_mb)
    n = max(1, a.size_mb // a.tensor_mb)
    work = tempfile.mkdtemp(prefix="coralfs-bench-diff-")
    try:
        repo = os.path.join(work, "repo")
        subprocess.run([sys.executable, "-m", "coralfs", "init", repo], check=True, capture_output=True)
        # The checkpoints are made by a child, so this process stays small: a forked child's
        # peak RSS counts the pages it inherited.
        subprocess.run([sys.executable, __file__, "--make", repo, "--size-mb", str(a.size_mb),
                        "--tensor-mb", str(a.tensor_mb)], check=True)
        largest = LAYER[0] * LAYER[1] * 4
        _, base_rss = cli(repo, "log", "-n", "1")   # the interpreter and coralfs alone
        rows = []
        for label, args in (("diff --stat", ["diff", "HEAD~1", "--stat"]),
                            ("diff --visual", ["diff", "HEAD~1", "--visual", "--no-group"]),
                            ("diff --format html", ["diff", "HEAD~1", "--format", "html", "-o",
                                                    os.path.join(work, "d.html")])):
            wall, rss = cli(repo, *args)
            rows.append((label, wall, rss))
        stat = rows[0][1]
        print(f"two {n * a.tensor_mb} MiB fp32 checkpoints ({n} tensors of {largest >> 20} MiB), load {os.getloadavg()[0]:.1f}")
        print(f"`coralfs log` alone peaks at {base_rss / 2**20:.0f} MiB RSS (the interpreter, numpy, coralfs)")
        print("| command | wall s | vs --stat | peak RSS MiB | RSS / largest tensor | (RSS - log's) / largest |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, wall, rss in rows:
            print(f"| `{label}` | {wall:.2f} | {wall / stat:.2f}x | {rss / 2**20:.0f} | {rss / largest:.2f}x | "
                  f"{(rss - base_rss) / largest:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
