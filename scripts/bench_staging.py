"""Writable-mount benchmark: a 1 GB safetensors save into a staging mount against the same
save to local disk, and the commit of that file, measured in one run; then an h5py "a"
edit of one dataset in a committed 1 GB HDF5 file through the mount against the same edit
on local disk (range copy-on-write: the bytes spooled, the edit's commit).

    .venv/bin/python scripts/bench_staging.py [--size-mb 1024] [--repeat 5] [--h5-only]

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

import h5py
import numpy as np
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


def spool_bytes(repo: str, branch: str) -> int:
    """Disk the branch's staging spool holds (allocated blocks: overlays are sparse)."""
    d = os.path.join(repo, "staging", "branches", branch, "spool")
    return sum(os.stat(os.path.join(d, n)).st_blocks * 512 for n in os.listdir(d))


def bench_h5(work: str, total_mb: int, repeat: int) -> None:
    """h5py "a" on a committed HDF5 file of ``total_mb`` (32 MiB datasets), one dataset
    replaced, through a writable mount and on local disk, each edit on a fresh copy."""
    n = max(2, total_mb // 32)
    src = os.path.join(work, "h5src")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    rng = np.random.default_rng(0)
    with h5py.File(os.path.join(src, "model.h5"), "w") as f:
        for i in range(n):
            f.create_dataset(f"layer{i}/kernel", data=(rng.standard_normal((2048, 4096)) * 0.02).astype(np.float32))
    size = os.path.getsize(os.path.join(src, "model.h5"))
    # A new dataset per run: a run's commit must not find the last run's objects stored.
    news = [(rng.standard_normal((2048, 4096)) * 0.02).astype(np.float32) for _ in range(repeat)]
    new = news[0]
    phases: dict[str, list[float]] = {"open": [], "write": [], "close": []}

    def edit(path: str, r: int, where: str) -> None:
        t0 = time.perf_counter()
        f = h5py.File(path, "a")
        t1 = time.perf_counter()
        f[f"layer{n // 2}/kernel"][...] = news[r]
        t2 = time.perf_counter()
        f.close()
        if where == "mount":
            for k, v in zip(phases, (t1 - t0, t2 - t1, time.perf_counter() - t2), strict=True):
                phases[k].append(v)

    repo, mnt = os.path.join(work, "h5repo"), os.path.join(work, "h5mnt")
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(mnt, exist_ok=True)
    cli("init", repo)
    cli("--repo", repo, "commit", src, "-m", "trained")
    rows: dict[str, list[float]] = {"local": [], "mount": [], "commit": []}
    spooled, stored = [], []
    for r in range(repeat):
        local = os.path.join(work, "local.h5")
        shutil.copy(os.path.join(src, "model.h5"), local)
        rows["local"].append(timed(lambda: edit(local, r, "local")))  # noqa: B023 - called at once
        os.unlink(local)
        branch = f"edit{r}"
        cli("--repo", repo, "branch", branch)
        cli("mount", repo, mnt, "--write", "--branch", branch)
        try:
            rows["mount"].append(timed(lambda: edit(os.path.join(mnt, "model.h5"), r, "mount")))  # noqa: B023
            spooled.append(spool_bytes(repo, branch))
            got = request(mnt, {"op": "commit", "message": "one dataset"})
            assert got["ok"] and got["commit"], got
            rows["commit"].append(got["seconds"])
            stored.append(got["stored"])
        finally:
            subprocess.run([sys.executable, "-m", "coralfs", "umount", mnt, "--keep"], capture_output=True)
            subprocess.run(["fusermount3", "-z", "-u", mnt], capture_output=True)
    shutil.rmtree(repo)
    shutil.rmtree(src)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nh5py \"a\" edit of one {new.nbytes / 1e6:.0f} MB dataset in a {size / 1e6:.0f} MB HDF5 file, "
          f"{repeat} runs (medians)\n")
    print(f"{'':34} {'seconds':>8} {'vs local':>9}   range (s)")
    for key, label in (("local", "edit on local disk"), ("mount", "edit through the staging mount")):
        print(f"{label:34} {med[key]:8.3f} {med[key] / med['local']:8.2f}x   {min(rows[key]):.3f}-{max(rows[key]):.3f}")
    print(f"{'commit of the edit':34} {med['commit']:8.2f}")
    print("through the mount: " + ", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in phases.items()))
    print(f"spooled: {statistics.median(spooled) / 1e6:.1f} MB ({statistics.median(spooled) / new.nbytes:.3f} of the "
          f"dataset, {statistics.median(spooled) / size:.4f} of the file); commit stored "
          f"{statistics.median(stored) / 1e6:.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--h5-only", action="store_true", help="Only the HDF5 edit")
    ap.add_argument("--dir", default=None, help="Working directory (default: a temporary one on /tmp)")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="coralfs-bench-staging-")
    os.makedirs(work, exist_ok=True)
    if args.h5_only:
        bench_h5(work, args.size_mb, args.repeat)
        return
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
    bench_h5(work, args.size_mb, args.repeat)
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
