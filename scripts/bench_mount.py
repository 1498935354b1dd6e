#!/usr/bin/env python3
"""Mount benchmark: coralfs vs a null pyfuse3 filesystem and native disk, in one run.

On the same >= 1 GB safetensors file (the head of a two-commit series; the commit one
behind it is stored as reverse deltas against it): sequential read() with 1 MiB buffers
(1 reader, and 4 readers on quarters of the file), an mmap touch of every page, and
safetensors.torch.load_file + touching every tensor, for native disk, the null filesystem
(bytes from RAM: the ceiling of this FUSE stack, on the same kernel settings), coralfs
cold (page cache dropped, fresh mount, empty materialization cache), coralfs cold one
commit behind the head, coralfs warm (page cache) and a remount of the materialized
commit after drop_caches (its decoded-chunk counter printed: 0 expected). Also `ls -lR`
of a 1,000-tensor snapshot and the daemon's RSS reading a model 4x larger than its cache.

    .venv/bin/python scripts/bench_mount.py [--work DIR] [--gb 1.0] [--markdown]
        [--read-ahead-kb KB] [--max-background N] [--threads N]
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


def seq_read_4(path: str) -> float:
    """Four threads, each reading one quarter of the file with 1 MiB buffers."""
    import threading
    size = os.path.getsize(path)
    q = -(-size // 4)

    def part(i: int) -> None:
        buf = bytearray(1 << 20)
        with open(path, "rb", buffering=0) as f:
            f.seek(i * q)
            left = min(q, size - i * q)
            while left > 0:
                k = f.readinto(buf)
                if not k:
                    break
                left -= k
    t = time.perf_counter()
    ths = [threading.Thread(target=part, args=(i,)) for i in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return size / (time.perf_counter() - t) / 1e6


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
    ap.add_argument("--read-ahead-kb", type=int, default=None, help="kernel readahead of the FUSE mounts (null and coralfs)")
    ap.add_argument("--max-background", type=int, default=None, help="FUSE background requests (null and coralfs)")
    ap.add_argument("--threads", type=int, default=2, help="coralfs decode threads")
    ap.add_argument("--tune-read-ahead-kb", type=int, default=1024, help="the tuned kernel settings compared")
    ap.add_argument("--tune-max-background", type=int, default=64)
    ap.add_argument("--no-kernel-compare", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print(f"preparing a {args.gb:.1f} GB two-version series...", flush=True)
    repo, native = make_series(args.work, args.gb)
    size = os.path.getsize(native)
    mnt = os.path.join(args.work, "mnt")
    nmnt = os.path.join(args.work, "null")
    cache = os.path.join(args.work, "cache")
    for d in (mnt, nmnt):
        umount(d)
        os.makedirs(d, exist_ok=True)
    knobs = []
    if args.read_ahead_kb is not None:
        knobs += ["--read-ahead-kb", str(args.read_ahead_kb)]
    if args.max_background is not None:
        knobs += ["--max-background", str(args.max_background)]
    print(f"load: {os.getloadavg()[0]:.1f}; kernel: read_ahead_kb {args.read_ahead_kb or 'default'}, "
          f"max_background {args.max_background or 'default'}; decode threads {args.threads}", flush=True)
    rows = []
    kinds = (("read", seq_read), ("read4", seq_read_4), ("mmap", mmap_touch), ("load_file", load_file))

    def measure(label: str, path: str, before=None, which=kinds) -> dict:
        r = {}
        for name, fn in which:
            if before:
                before()
            r[name] = fn(path)
        rows.append((label, r))
        shown = "   ".join(f"{k} {v:7.2f} s" if k == "load_file" else f"{k} {v:7.0f} MB/s" for k, v in r.items())
        print(f"  {label:<30} {shown}", flush=True)
        return r

    # native disk: cold (page cache dropped) and warm
    nat_cold = measure("native disk (cold)", native, before=drop_caches, which=kinds[:1])
    seq_read(native)
    nat = measure("native disk (warm)", native)
    # null filesystem from RAM
    p = subprocess.Popen([PY, os.path.join(HERE, "nullfs.py"), native, nmnt, str(args.read_ahead_kb or "-"),
                          str(args.max_background or "-")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "READY"
    try:
        nul = measure("null pyfuse3 (RAM)", os.path.join(nmnt, "model.safetensors"), before=drop_caches)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        umount(nmnt)
    target = os.path.join(mnt, "model.safetensors")
    mem = "2g"
    last: dict = {}

    def mount(ref: str = "main", *extra: str) -> int:
        umount(mnt)
        drop_caches()
        out = cli("mount", repo, f"{mnt}@{ref}", "--cache-size", mem, "--cache-dir", cache,
                  "--threads", str(args.threads), *knobs, *extra)
        return int(out.split("(pid ")[1].split(",")[0])

    def stats() -> dict:
        with open(os.path.join(mnt, ".coral", "stats.json")) as f:
            return json.load(f)

    def cold(ref: str = "main"):
        def before() -> None:
            cli("-R", repo, "cache", "clear", "--cache-dir", cache)
            mount(ref)
        return before

    try:
        c = measure("coralfs cold", target, before=cold())
        behind = measure("coralfs cold, main~1 (deltas)", target, before=cold("main~1"), which=kinds[:1])
        while stats().get("materialized", {}).get("pending"):
            time.sleep(0.1)
        m = stats().get("materialized", {})
        print(f"  (main~1: the materialization cache wrote {m.get('written_bytes', 0) / os.path.getsize(native):.2f}x "
              f"the file's bytes, {m.get('skipped', 0)} chunks skipped as the writer fell behind)", flush=True)
        off = measure("coralfs cold, no materialization", target, which=kinds[:1],
                      before=lambda: mount("main", "--materialize-size", "0"))
        # the daemon's own serving speed: chunks in its memory cache, the page cache dropped
        seq_read(target)
        drop_caches()
        hot = measure("coralfs daemon-hot (chunks in memory)", target, which=kinds[:1])
        mount()
        seq_read(target)
        warm = measure("coralfs warm", target)
        mount("main", "--prefetch", "all")  # materialize the head whole
        while stats().get("prefetch", {}).get("state") != "done":
            time.sleep(0.2)
        mat = measure("coralfs remount, materialized", target, before=mount)
        last = stats()
        print(f"  (the last materialized remount decoded {last['decoded_chunks']} chunks; "
              f"{last['materialized']['hits']} entries loaded; kernel {last.get('kernel')})", flush=True)
    finally:
        umount(mnt)

    # The kernel's side, side by side: default settings vs --read-ahead-kb/--max-background,
    # for the null filesystem and for coralfs serving chunks from its memory cache.
    kernel_rows = []
    if not args.no_kernel_compare:
        tuned = (args.tune_read_ahead_kb, args.tune_max_background)
        for ra, mb in ((None, None), tuned):
            label = "default" if ra is None else f"read_ahead_kb {ra}, max_background {mb}"
            p = subprocess.Popen([PY, os.path.join(HERE, "nullfs.py"), native, nmnt, str(ra or "-"), str(mb or "-")],
                                 stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "READY"
            try:
                npath = os.path.join(nmnt, "model.safetensors")
                drop_caches()
                n_read = seq_read(npath)
                drop_caches()
                n_mmap = mmap_touch(npath)
            finally:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
                umount(nmnt)
            extra = ["--read-ahead-kb", str(ra), "--max-background", str(mb)] if ra else []
            umount(mnt)
            cli("mount", repo, f"{mnt}@main", "--cache-size", mem, "--cache-dir", cache, "--threads", str(args.threads),
                *extra)
            try:
                seq_read(target)  # from the materialization cache into the daemon's memory
                drop_caches()
                h_read = seq_read(target)
                drop_caches()
                h_mmap = mmap_touch(target)
            finally:
                umount(mnt)
            kernel_rows.append((label, n_read, n_mmap, h_read, h_mmap))
            print(f"  kernel {label:<40} null read {n_read:6.0f} mmap {n_mmap:6.0f}   coralfs daemon-hot read "
                  f"{h_read:6.0f} mmap {h_mmap:6.0f} MB/s", flush=True)

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

    # daemon RSS reading a model 4x larger than its cache (materializing as it goes)
    budget = max(64 << 20, size // 4)
    cli("-R", repo, "cache", "clear", "--cache-dir", cache)
    umount(mnt)
    out = cli("mount", repo, f"{mnt}@main", "--cache-size", str(budget), "--cache-dir", cache, *knobs)
    pid = int(out.split("(pid ")[1].split(",")[0])
    try:
        drop_caches()
        seq_read(target)
        rss = daemon_rss(pid)
        st = stats()
    finally:
        umount(mnt)
    print(f"  daemon peak RSS reading {size / 1e9:.2f} GB with a {budget >> 20} MiB cache: {rss:.0f} MB "
          f"(budget + {rss - budget / 2**20:.0f} MB); decoded {st['decoded_bytes'] / 1e9:.2f} GB")

    print("\nratios (targets in issue 11)")
    ratios = {
        "cold read / null read (1 reader)": (c["read"] / nul["read"], ">= 0.7"),
        "cold read / null read (4 readers)": (c["read4"] / nul["read4"], ">= 0.7"),
        "cold read main~1 / null read": (behind["read"] / nul["read"], ">= 0.5"),
        "cold read / native cold read": (c["read"] / nat_cold["read"], "-"),
        "cold read, no materialization / null read": (off["read"] / nul["read"], "-"),
        "daemon-hot read / null read": (hot["read"] / nul["read"], "-"),
        "cold mmap / null mmap": (c["mmap"] / nul["mmap"], ">= 0.7"),
        "load_file cold / null (time)": (c["load_file"] / nul["load_file"], "<= 1.5"),
        "materialized remount read / null read": (mat["read"] / nul["read"], ">= 0.8"),
        "materialized remount read / native cold read": (mat["read"] / nat_cold["read"], ">= 0.5"),
        "materialized remount mmap / null mmap": (mat["mmap"] / nul["mmap"], "-"),
        "materialized remount load_file / null (time)": (mat["load_file"] / nul["load_file"], "-"),
        "warm read / native warm read": (warm["read"] / nat["read"], "-"),
    }
    for k, (v, goal) in ratios.items():
        print(f"  {k:<46} {v:6.2f}   target {goal}")
    if args.markdown:
        print("\n| path | read MB/s | 4 readers MB/s | mmap MB/s | load_file + touch s |\n|---|---|---|---|---|")
        for label, r in rows:
            cells = [f"{r[k]:.0f}" if k in r else "" for k in ("read", "read4", "mmap")]
            cells.append(f"{r['load_file']:.2f}" if "load_file" in r else "")
            print(f"| {label} | " + " | ".join(cells) + " |")
        print("\n| ratio | measured | target |\n|---|---|---|")
        for k, (v, goal) in ratios.items():
            print(f"| {k} | {v:.2f} | {goal} |")
        print(f"| ls -lR 1,000 tensors (s) | {ls_s:.3f} | < 0.5 |")
        print(f"| ls -laR 1,000 tensors with .npy views (s) | {lsa_s:.3f} | < 0.5 |")
        print(f"| daemon peak RSS (MB) / memory cache budget (MiB) | {rss:.0f} / {budget >> 20} | budget + 150 |")
        print(f"| decoded chunks in the last materialized remount | {last.get('decoded_chunks')} | 0 |")
        if kernel_rows:
            print("\n| kernel settings | null read | null mmap | coralfs daemon-hot read | coralfs daemon-hot mmap |")
            print("|---|---|---|---|---|")
            for label, *v in kernel_rows:
                print(f"| {label} | " + " | ".join(f"{x:.0f}" for x in v) + " |")


if __name__ == "__main__":
    main()
