#!/usr/bin/env python3
"""Remote benchmark: push/clone of the MiniLM series against whole-file upload, and the
cold read of a remote mount against a local mount, in one run.

Against moto (S3) on loopback when the s3:// backend is installed, else against a
file:// remote (the figures then say so). Push and clone use `coralfs push` / `coralfs
clone` when those commands exist; before that, the push is the pack writer the tests use
(tests/remote/remote_build.py: every frame as stored, in packs) and clone is not measured.

- push and clone throughput: MB/s of stored bytes of the fp32 MiniLM series (8
  checkpoints and 2 fine-tunes, scripts/minilm_series.py);
- whole-file upload of the same checkpoint files with the same BlobStore client (what a
  DVC/LFS-style remote moves) and the bytes coralfs moved;
- remote-mount cold read (fresh chunk cache, page cache dropped) of a 1 GiB model vs the
  local mount's cold read of the same commit (materialization cache cleared, page cache
  dropped).

    nice .venv/bin/python scripts/bench_remote.py [--work DIR] [--url URL] [--gb 1.0]
        [--compare OTHER_SOURCE_TREE] [--clones 3] [--mount-rounds 1] [--skip-mount]
        [--parts push,clone,wholefile,mount]

``--compare DIR`` pushes (into a prefix of its own) and clones with the coralfs found in DIR
too (e.g. ``git archive REV coralfs | tar -x -C DIR``), alternating with this tree,
``--clones`` times each (medians), and mounts the remote with it too (``--mount-rounds``
rounds of: the local mount, then each tree's remote mount), so the figures share the
machine's load. ``--parts``
runs only some parts (``--skip-mount`` leaves out the 1 GiB cold reads). The push time is
that of the `coralfs push` command alone; against moto, the store's own CPU time (moto is
a Python server on the same cores) is printed beside the client's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
PY = sys.executable

from bench_mount import drop_caches, seq_read, umount  # noqa: E402
from minilm_series import build  # noqa: E402


def cli(*args: str, env: dict | None = None, cwd: str | None = None) -> str:
    return subprocess.run([PY, "-m", "coralfs", *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd).stdout


def timed_clone(tree: str, url: str, dest: str, endpoint: str | None, env: dict) -> tuple[float, float]:
    """(wall s, CPU s of the clone process) of one `coralfs clone` with the coralfs of
    source tree ``tree`` (run from the destination's parent: `python -m` puts the current
    directory first on sys.path). On a loaded machine the CPU time says what the client
    itself costs; the store (moto) runs in its own process."""
    import resource
    shutil.rmtree(dest, ignore_errors=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    cli("clone", url, dest, *(["--endpoint", endpoint] if endpoint else []), env={**env, "PYTHONPATH": tree},
        cwd=os.path.dirname(dest))
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def proc_cpu(pid: int | None) -> float:
    """user + system CPU seconds of a running process (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


STORE_PID: int | None = None   # moto's, when the benchmark started it


def has_command(name: str) -> bool:
    return subprocess.run([PY, "-m", "coralfs", name, "--help"], capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto(work: str):
    """moto_server on loopback, stopped by PID; yields (endpoint, bucket)."""
    port = free_port()
    log = open(os.path.join(work, "moto.log"), "wb")
    p = subprocess.Popen([os.path.join(os.path.dirname(PY), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                         stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        import boto3
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        global STORE_PID
        STORE_PID = p.pid
        yield endpoint
    finally:
        p.terminate()
        p.wait(30)
        log.close()


def s3_available() -> bool:
    try:
        import moto  # noqa: F401

        import coralfs.remote.s3  # noqa: F401
    except ImportError:
        return False
    return True


def stored_bytes(blobs, prefix: str = "") -> int:
    total = 0
    for k in blobs.list(prefix):
        if k.startswith(("packs/", "loose/")):
            info = blobs.head(k)
            total += info.size if info else 0
    return total


def commit_series(work: str, series_root: str, idx: dict) -> tuple[str, list[str]]:
    """The fp32 series in a local repository: main-N on main, each fine-tune on its branch."""
    repo = os.path.join(work, "series-repo")
    dirs = [os.path.join(series_root, "fp32", c["name"]) for c in idx["main"]]
    fts = [os.path.join(series_root, "fp32", c["name"]) for c in idx["finetunes"]]
    if not os.path.exists(os.path.join(repo, "HEAD")):
        shutil.rmtree(repo, ignore_errors=True)
        cli("init", repo)
        for d in dirs:
            cli("-R", repo, "commit", d, "-m", os.path.basename(d))
        for d in fts:
            name = os.path.basename(d)
            cli("-R", repo, "branch", name, f"main~{len(dirs) - 1}")
            cli("-R", repo, "checkout", name)
            cli("-R", repo, "commit", d, "-m", name)
            cli("-R", repo, "checkout", "main")
    return repo, dirs + fts


def push(repo: str, url: str, endpoint: str | None, env: dict, tree: str = ROOT) -> tuple[str, float, float]:
    """Push every branch with the coralfs of source tree ``tree``: (how ("coralfs push" or
    the test pack writer), wall seconds of the push alone, client CPU seconds)."""
    import resource
    if has_command("push"):
        args = ["remote", "add", "bench", url] + (["--endpoint", endpoint] if endpoint else [])
        # A remote of an earlier run names that run's moto port: replace it.
        subprocess.run([PY, "-m", "coralfs", "-R", repo, "remote", "remove", "bench"], capture_output=True,
                       env={**os.environ, **env})
        subprocess.run([PY, "-m", "coralfs", "-R", repo, *args], capture_output=True, env={**os.environ, **env})
        from coralfs.objects.repository import Repository
        branches = sorted(Repository.open(repo).branches())
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        cli("-R", repo, "push", "bench", *branches, env={**env, "PYTHONPATH": tree}, cwd=tempfile.gettempdir())
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return "coralfs push", wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    from coralfs.remote.url import open_blobs
    from tests.remote.remote_build import build_remote
    blobs = open_blobs(url, endpoint=endpoint)
    t = time.perf_counter()
    build_remote(repo, blobs)
    wall = time.perf_counter() - t
    blobs.close()
    return "pack writer (tests/remote/remote_build.py)", wall, 0.0


def whole_file_upload(dirs: list[str], url: str, endpoint: str | None) -> tuple[int, float]:
    """Every file of every checkpoint as one blob, as a whole-file remote stores them."""
    from coralfs.remote.url import open_blobs
    target = url.rstrip("/") + "-wholefile"
    if target.startswith("file://"):
        os.makedirs(target[len("file://"):], exist_ok=True)
    blobs = open_blobs(target, endpoint=endpoint)
    n = 0
    t = time.perf_counter()
    for d in dirs:
        for root, _ds, fs in os.walk(d):
            for f in sorted(fs):
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    data = fh.read()
                blobs.put(f"{os.path.basename(d)}/{os.path.relpath(p, d)}", data)
                n += len(data)
    el = time.perf_counter() - t
    blobs.close()
    return n, el


def big_model(work: str, gb: float) -> tuple[str, str]:
    from safetensors.numpy import save_file
    src = os.path.join(work, "big-src")
    repo = os.path.join(work, "big-repo")
    if not os.path.exists(os.path.join(repo, "HEAD")):
        os.makedirs(src, exist_ok=True)
        rng = np.random.default_rng(0)
        n = max(1, int(gb * (1 << 30) / (128 << 20)))
        save_file({f"layers.{i}.weight": rng.standard_normal((8192, 4096), dtype=np.float32) for i in range(n)},
                  os.path.join(src, "model.safetensors"))
        shutil.rmtree(repo, ignore_errors=True)
        cli("init", repo)
        cli("-R", repo, "commit", src, "-m", "big")
    return repo, os.path.join(src, "model.safetensors")


def cold_read(target: str, mount_args: list[str], mnt: str, env: dict) -> float:
    """MB/s of one sequential read of ``target`` through a fresh mount, page cache dropped.
    Run from the temp directory (`python -m` puts the current directory first on
    sys.path, which would pick this tree's coralfs whatever PYTHONPATH says); unmounted
    with `coralfs umount`, which waits for the daemon, so what it still writes (a local
    mount's materialization cache) does not run into the next read."""
    umount(mnt)
    os.makedirs(mnt, exist_ok=True)
    cli("mount", *mount_args, env=env, cwd=tempfile.gettempdir())
    try:
        drop_caches()
        return seq_read(target)
    finally:
        subprocess.run([PY, "-m", "coralfs", "umount", mnt], capture_output=True, cwd=tempfile.gettempdir(),
                       env={**os.environ, **env})
        umount(mnt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "coralfs-bench-remote"))
    ap.add_argument("--url", help="a remote URL to use instead of moto / file://")
    ap.add_argument("--endpoint")
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--compare", action="append", default=[],
                    help="another source tree holding coralfs/ (repeatable): its clone is timed in the same run")
    ap.add_argument("--clones", type=int, default=3, help="clones per tree (median)")
    ap.add_argument("--mount-rounds", type=int, default=1,
                    help="rounds of cold reads (local, then the remote mount of each tree; medians)")
    ap.add_argument("--skip-mount", action="store_true", help="leave out the 1 GiB cold reads")
    ap.add_argument("--parts", default="push,clone,wholefile,mount",
                    help="comma-separated parts to run (push always runs: the others need its remote)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if args.skip_mount:
        parts.discard("mount")
    os.makedirs(args.work, exist_ok=True)
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update({k: os.environ.get(k, v) for k, v in env.items()})
    print(f"load before: {os.getloadavg()}", flush=True)
    print("building the MiniLM fine-tuning series (cached)...", flush=True)
    idx = build(os.path.join(args.work, "series"))
    repo, dirs = commit_series(args.work, os.path.join(args.work, "series"), idx)
    big_repo, big_file = (None, None) if "mount" not in parts else big_model(args.work, args.gb)

    with contextlib.ExitStack() as stack:
        if args.url:
            url, endpoint, where = args.url, args.endpoint, args.url
        elif s3_available():
            endpoint = stack.enter_context(moto(args.work))
            url, where = "s3://bench/series", f"moto (S3) at {endpoint}"
        else:
            d = os.path.join(args.work, "remote")
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d + "-wholefile", ignore_errors=True)
            os.makedirs(d)
            url, endpoint, where = f"file://{d}", None, f"file:// ({d}); no s3:// backend installed"
        from coralfs.remote.url import open_blobs
        print(f"remote: {where}", flush=True)

        trees = [ROOT] + [os.path.abspath(t) for t in args.compare]
        pushes: dict[str, tuple[float, float, float]] = {}
        for n, tree in enumerate(trees):
            # each tree into a prefix of its own, so every push sends everything
            s0 = proc_cpu(STORE_PID)
            how, push_s, push_cpu = push(repo, url if n == 0 else f"{url}-compare{n}", endpoint, env, tree)
            pushes[tree] = (push_s, push_cpu, proc_cpu(STORE_PID) - s0)
        push_s = pushes[ROOT][0]
        blobs = open_blobs(url, endpoint=endpoint)
        moved = stored_bytes(blobs)
        blobs.close()
        for tree, (w, c, sc) in pushes.items():
            print(f"push ({how}, {tree}): {moved / 1e6:.1f} MB stored bytes in {w:.2f} s = {moved / 1e6 / w:.0f} MB/s; "
                  f"client CPU {c:.2f} s, store CPU {sc:.2f} s", flush=True)
        clone_rate = compare_rate = None
        if "clone" not in parts:
            print("clone: skipped (--parts)", flush=True)
        elif has_command("clone"):
            dest = os.path.join(args.work, "clone")
            secs: dict[str, list[tuple[float, float]]] = {t: [] for t in trees}
            store_cpu: dict[str, float] = {t: 0.0 for t in trees}
            for _ in range(args.clones):
                for tree in trees:
                    s0 = proc_cpu(STORE_PID)
                    secs[tree].append(timed_clone(tree, url, dest, endpoint, env))
                    store_cpu[tree] += proc_cpu(STORE_PID) - s0
            shutil.rmtree(dest, ignore_errors=True)
            for tree in trees:
                s = sorted(w for w, _ in secs[tree])[len(secs[tree]) // 2]
                cpu = sorted(c for _, c in secs[tree])[len(secs[tree]) // 2]
                rate = moved / 1e6 / s
                print(f"clone ({tree}): median {s:.2f} s of {args.clones} = {rate:.0f} MB/s; client CPU median "
                      f"{cpu:.2f} s = {moved / 1e6 / cpu:.0f} MB per CPU-second; store CPU {store_cpu[tree] / args.clones:.2f} s "
                      f"a clone (all wall/CPU: {', '.join(f'{w:.2f}/{c:.2f}' for w, c in secs[tree])})", flush=True)
                if tree == ROOT:
                    clone_rate = rate
                else:
                    compare_rate = {**(compare_rate or {}), tree: rate}
        else:
            print("clone: not measured (no `coralfs clone` yet)", flush=True)
        whole, whole_s = whole_file_upload(dirs, url, endpoint) if "wholefile" in parts else (0, 0.0)
        if whole:
            print(f"whole-file upload: {whole / 1e6:.1f} MB in {whole_s:.2f} s = {whole / 1e6 / whole_s:.0f} MB/s",
                  flush=True)
            print(f"coralfs moved {moved / whole:.3f}x the bytes of whole-file upload", flush=True)

        local = remote = None
        if "mount" not in parts:
            print("cold reads: skipped (--skip-mount / --parts)", flush=True)
        else:
            # Cold reads of a 1 GiB model: the remote mount (fresh cache) vs the local mount.
            big_url = url.rstrip("/") + "-big"
            if big_url.startswith("file://"):
                shutil.rmtree(big_url[7:], ignore_errors=True)
                os.makedirs(big_url[7:])
            push(big_repo, big_url, endpoint, env)
            mnt = os.path.join(args.work, "mnt")
            cache = os.path.join(args.work, "chunk-cache")
            # Cold for the local mount too: its materialization cache (REPO/cache, decoded
            # chunks, on by default) would otherwise hold the previous run's decodes.
            ep = ["--endpoint", endpoint] if endpoint else []
            target = os.path.join(mnt, "model.safetensors")
            locals_: list[float] = []
            remotes: dict[str, list[float]] = {t: [] for t in trees}
            for n in range(args.mount_rounds):
                cli("-R", big_repo, "cache", "clear", env=env)
                locals_.append(cold_read(target, [big_repo, f"{mnt}@main"], mnt, env))
                # the remote mount of each source tree, fresh chunk cache, in turns
                for tree in (trees if n % 2 == 0 else trees[::-1]):
                    shutil.rmtree(cache, ignore_errors=True)
                    remotes[tree].append(cold_read(target, [big_url, f"{mnt}@main", "--cache-dir", cache, *ep], mnt,
                                                   {**env, "PYTHONPATH": tree}))
            local = sorted(locals_)[len(locals_) // 2]
            size = os.path.getsize(big_file) / 2**30
            for tree in trees:
                r = sorted(remotes[tree])[len(remotes[tree]) // 2]
                remote = r if tree == ROOT else remote
                print(f"cold read of {size:.1f} GiB ({tree}): local mount {local:.0f} MB/s, remote mount {r:.0f} MB/s "
                      f"({r / local:.2f}x; medians of {args.mount_rounds}: local "
                      f"{', '.join(f'{x:.0f}' for x in locals_)}, remote {', '.join(f'{x:.0f}' for x in remotes[tree])})",
                      flush=True)
    print(f"load after: {os.getloadavg()}", flush=True)
    print(json.dumps({"remote": where, "push": how, "stored_bytes": moved, "push_mb_s": moved / 1e6 / push_s,
                      "clone_mb_s": clone_rate, "compare_clone_mb_s": compare_rate, "whole_file_bytes": whole,
                      "whole_file_mb_s": whole / 1e6 / whole_s if whole else None, "moved_ratio": moved / whole if whole else None,
                      "local_cold_mb_s": local, "remote_cold_mb_s": remote}))


if __name__ == "__main__":
    main()
