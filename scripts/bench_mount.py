#!/usr/bin/env python3
"""Mount benchmark: coralfs vs a null pyfuse3 filesystem and native disk, in one run.

On the same >= 1 GB safetensors file (a member of a fine-tuning series: a delta-encoded
second version): sequential read() with 1 MiB buffers, an mmap touch of every page, and
safetensors.torch.load_file, for native disk (warm page cache), the null filesystem
(bytes from RAM: the ceiling of this FUSE stack), coralfs cold (page cache dropped, fresh
mount) and coralfs warm. Also `ls -lR` of a 1,000-tensor snapshot and the daemon's RSS
while reading a model 4x larger than its cache.

    .venv/bin/python scripts/bench_mount.py [--work DIR] [--gb 1.0] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def cli(*args: str) -> str:
    return subprocess.run([PY, "-m", "coralfs", *args], check=True, capture_output=True, text=True).stdout


def umount(mp: str) -> None:
    subprocess.run(["fusermount3", "-u", mp], capture_output=True)
    subprocess.run(["fusermount3", "-z", "-u", mp], capture_output=True)


def seq_read(path: str) -> float:
    t = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while True:
            k = f.readinto(buf)
            if not k:
                break
            n += k
    return n / (time.perf_counter() - t) / 1e6


def mmap_touch(path: str) -> float:
    t = time.perf_counter()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        a = np.frombuffer(m, dtype=np.uint8)
        s = int(a[::4096].sum())  # one byte per page: every page faults in
        del a
    n = os.path.getsize(path)
    _ = s
    return n / (time.perf_counter() - t) / 1e6


def load_file(path: str) -> float:
    """safetensors.torch.load_file, then touch every tensor (load_file maps lazily; a
    model that is used reads all of its weights)."""
    from safetensors.torch import load_file as lf
    t = time.perf_counter()
    d = lf(path)
    total = sum(float(v.float().sum()) for v in d.values())
    el = time.perf_counter() - t
    del d, total
    return el


def make_series(work: str, gb: float) -> tuple[str, str]:
    """Two versions of a large model; v2 differs slightly (stored as a delta + keyframe)."""
    from safetensors.numpy import save_file
    src = os.path.join(work, "src")
    path = os.path.join(src, "model.safetensors")
    n = max(1, int(gb * 1e9 / (64 << 20)))
    if not os.path.exists(path) or abs(os.path.getsize(path) - n * (64 << 20)) > 4096:
        os.makedirs(src, exist_ok=True)
        rng = np.random.default_rng(0)
        t = {f"layer{i:03d}.weight": (rng.standard_normal((4096, 4096), dtype=np.float32) * 0.02) for i in range(n)}
        save_file(t, path)
        repo = os.path.join(work, "repo")
        shutil.rmtree(repo, ignore_errors=True)
        cli("init", repo)
        cli("-R", repo, "commit", src, "-m", "v1")
        for k in t:
            t[k] += rng.standard_normal(t[k].shape, dtype=np.float32) * 1e-5
        save_file(t, path)
        cli("-R", repo, "commit", src, "-m", "v2")
        del t
    return os.path.join(work, "repo"), path


def many_tensors(work: str) -> str:
    from safetensors.numpy import save_file
    repo = os.path.join(work, "repo-1000")
    if not os.path.exists(repo):
        d = os.path.join(work, "t1000")
        os.makedirs(d, exist_ok=True)
        save_file({f"block{i // 10}.layer{i % 10}.weight": np.full((16, 16), i, np.float32) for i in range(1000)},
                  os.path.join(d, "model.safetensors"))
        cli("init", repo)
        cli("-R", repo, "commit", d, "-m", "1000 tensors")
    return repo


def daemon_rss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "coralfs-bench-mount"))
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print("preparing a %.1f GB two-version series..." % args.gb, flush=True)
    repo, native = make_series(args.work, args.gb)
    size = os.path.getsize(native)
    mnt = os.path.join(args.work, "mnt")
    nmnt = os.path.join(args.work, "null")
    for d in (mnt, nmnt):
        umount(d)
        os.makedirs(d, exist_ok=True)
    rows = []

    def measure(label: str, path: str, before=None) -> dict:
        r = {}
        for name, fn in (("read", seq_read), ("mmap", mmap_touch), ("load_file", load_file)):
            if before:
                before()
            r[name] = fn(path)
        rows.append((label, r))
        print(f"  {label:<22} read {r['read']:7.0f} MB/s   mmap {r['mmap']:7.0f} MB/s   load_file {r['load_file']:6.2f} s",
              flush=True)
        return r

    # native, warm
    seq_read(native)
    nat = measure("native disk (warm)", native)
    # null filesystem from RAM
    p = subprocess.Popen([PY, os.path.join(HERE, "nullfs.py"), native, nmnt], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "READY"
    try:
        nul = measure("null pyfuse3 (RAM)", os.path.join(nmnt, "model.safetensors"),
                      before=lambda: drop_caches())
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        umount(nmnt)
    # coralfs cold: a fresh mount and dropped page cache before each measure
    target = os.path.join(mnt, "model.safetensors")
    cache = "2g"

    def fresh_mount() -> None:
        umount(mnt)
        drop_caches()
        cli("mount", repo, f"{mnt}@main", "--cache-size", cache)

    fresh_mount()
    try:
        cold = measure("coralfs cold", target, before=fresh_mount)
        warm = measure("coralfs warm", target)
    finally:
        umount(mnt)

    # ls -lR of a 1,000-tensor snapshot (the .coral/tensors views included)
    r1000 = many_tensors(args.work)
    cli("mount", r1000, f"{mnt}@main")
    try:
        t = time.perf_counter()
        subprocess.run(["ls", "-lR", mnt], capture_output=True, text=True, check=True)
        ls_s = time.perf_counter() - t
        t = time.perf_counter()
        out = subprocess.run(["ls", "-laR", mnt], capture_output=True, text=True, check=True).stdout
        lsa_s = time.perf_counter() - t
        n_npy = out.count(".npy")
    finally:
        umount(mnt)
    print(f"  ls -lR of a 1,000-tensor snapshot: {ls_s:.3f} s; ls -laR with the .coral views: {lsa_s:.3f} s "
          f"({n_npy} .npy views)")

    # daemon RSS reading a model 4x larger than its cache
    budget = max(64 << 20, size // 4)
    out = cli("mount", repo, f"{mnt}@main", "--cache-size", str(budget))
    pid = int(out.split("(pid ")[1].split(",")[0])
    try:
        drop_caches()
        seq_read(target)
        rss = daemon_rss(pid)
        stats = json.load(open(os.path.join(mnt, ".coral", "stats.json")))
    finally:
        umount(mnt)
    print(f"  daemon peak RSS reading {size / 1e9:.2f} GB with a {budget >> 20} MiB cache: {rss:.0f} MB "
          f"(budget + {rss - budget / 2**20:.0f} MB); decoded {stats['decoded_bytes'] / 1e9:.2f} GB")

    print("\nratios (targets: cold >= 0.7x null, warm >= 0.8x native, load_file cold <= 1.5x null, warm <= 1.3x native)")
    ratios = {
        "cold read / null read": cold["read"] / nul["read"],
        "cold mmap / null mmap": cold["mmap"] / nul["mmap"],
        "warm read / native read": warm["read"] / nat["read"],
        "warm mmap / native mmap": warm["mmap"] / nat["mmap"],
        "load_file cold / null": cold["load_file"] / nul["load_file"],
        "load_file warm / native": warm["load_file"] / nat["load_file"],
    }
    for k, v in ratios.items():
        print(f"  {k:<28} {v:6.2f}")
    if args.markdown:
        print("\n| path | read MB/s | mmap MB/s | load_file s |\n|---|---|---|---|")
        for label, r in rows:
            print(f"| {label} | {r['read']:.0f} | {r['mmap']:.0f} | {r['load_file']:.2f} |")
        print("\n| ratio | value |\n|---|---|")
        for k, v in ratios.items():
            print(f"| {k} | {v:.2f} |")
        print(f"| ls -lR 1,000 tensors (s) | {ls_s:.3f} |")
        print(f"| ls -laR 1,000 tensors with .npy views (s) | {lsa_s:.3f} |")
        print(f"| daemon peak RSS (MB) / cache budget (MiB) | {rss:.0f} / {budget >> 20} |")


if __name__ == "__main__":
    main()
