"""Writable-mount benchmark: a 1 GB safetensors save into a staging mount against the same
save to local disk, and the commit of that file, measured in one run.

    .venv/bin/python scripts/bench_staging.py [--size-mb 1024] [--repeat 3]

Prints a table (medians over --repeat runs; each save starts after a sync). The local-disk save is safetensors'
save_file to a directory beside the repository (no fsync, as a trainer does it); the mount
makes every file durable on close (fsync), so that row is also given for local disk.
"Commit (fresh)" ingests the file into a new branch; "commit (delta)" ingests the next
step's weights (a small update of every tensor) against it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from coralfs.fs.writable.control import request  # noqa: E402


def cli(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "coralfs", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"coralfs {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout


def weights(total_mb: int, step: int) -> dict[str, torch.Tensor]:
    """A model-shaped state dict of fp32 tensors; step > 0 is a small update of step 0."""
    g = torch.Generator().manual_seed(0)
    n = max(1, total_mb // 32)
    sd = {f"layers.{i}.weight": torch.randn(2048, 4096, generator=g) * 0.02 for i in range(n)}
    if step:
        g2 = torch.Generator().manual_seed(step)
        sd = {k: v + 1e-4 * torch.randn(v.shape, generator=g2) for k, v in sd.items()}
    return sd


def timed(fn) -> float:
    os.sync()  # every save starts with no dirty pages, so write-back throttling is alike
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def save_durable(sd, path: str) -> None:
    save_file(sd, path)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="Working directory (default: a temporary one on /tmp)")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="coralfs-bench-staging-")
    os.makedirs(work, exist_ok=True)
    sd0, sd1 = weights(args.size_mb, 0), weights(args.size_mb, 1)
    nbytes = sum(v.numel() * v.element_size() for v in sd0.values())
    mb = nbytes / 1e6
    rows: dict[str, list[float]] = {k: [] for k in ("local", "local_fsync", "mount", "commit_fresh", "commit_delta")}
    stored: dict[str, list[int]] = {"commit_fresh": [], "commit_delta": []}
    for r in range(args.repeat):
        local = os.path.join(work, "local")
        shutil.rmtree(local, ignore_errors=True)
        os.makedirs(local)
        rows["local"].append(timed(lambda: save_file(sd0, os.path.join(local, "model.safetensors"))))
        os.unlink(os.path.join(local, "model.safetensors"))
        rows["local_fsync"].append(timed(lambda: save_durable(sd0, os.path.join(local, "model.safetensors"))))
        shutil.rmtree(local)

        repo, mnt = os.path.join(work, "repo"), os.path.join(work, "mnt")
        shutil.rmtree(repo, ignore_errors=True)
        os.makedirs(mnt, exist_ok=True)
        cli("init", repo)
        cli("mount", repo, mnt, "--write", "--branch", f"bench{r}")
        try:
            path = os.path.join(mnt, "model.safetensors")
            rows["mount"].append(timed(lambda: save_file(sd0, path)))
            got = request(mnt, {"op": "commit", "message": "step 0"})
            assert got["ok"] and got["commit"], got
            rows["commit_fresh"].append(got["seconds"])
            stored["commit_fresh"].append(got["stored"])
            save_file(sd1, path)
            got = request(mnt, {"op": "commit", "message": "step 1"})
            assert got["ok"] and got["commit"], got
            rows["commit_delta"].append(got["seconds"])
            stored["commit_delta"].append(got["stored"])
        finally:
            subprocess.run([sys.executable, "-m", "coralfs", "umount", mnt, "--keep"], capture_output=True)
            subprocess.run(["fusermount3", "-z", "-u", mnt], capture_output=True)
        shutil.rmtree(repo)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"1 safetensors file, {mb:.0f} MB fp32, {args.repeat} runs (medians)\n")
    print(f"{'':34} {'seconds':>8} {'MB/s':>8} {'vs local':>9}   range (s)")
    for key, label in (("local", "save to local disk"), ("local_fsync", "save to local disk + fsync"),
                       ("mount", "save into the staging mount")):
        print(f"{label:34} {med[key]:8.2f} {mb / med[key]:8.0f} {med['local'] / med[key]:8.2f}x"
              f"   {min(rows[key]):.2f}-{max(rows[key]):.2f}")
    for key, label in (("commit_fresh", "commit (fresh)"), ("commit_delta", "commit (delta vs step 0)")):
        st = statistics.median(stored[key])
        print(f"{label:34} {med[key]:8.2f} {mb / med[key]:8.0f}   stored {st / nbytes:.3f} of the file")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
