"""Commit ingest of the shared MiniLM series (fp32 and bf16, 8 checkpoints each, committed at
the same path in order): MB/s, MB per CPU-second, and what the commits spent waiting for
durability (fsync calls and syncfs flushes, their count and summed time per commit), and
the bytes stored (every object of the repository).

    flock /work/notes/bench.lock env PYTHONPATH=$PWD .venv/bin/python scripts/bench_ingest.py [--default-allocator]

The series is the one scripts/bench_storage.py uses (built by scripts/make_series.py under
$TMPDIR/coralfs-acceptance/series if missing). Waits are summed over the writer's threads,
so they can exceed a commit's wall time when they overlap.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time

from coralfs import Repository
from coralfs.objects import durable
from coralfs.objects.stores import disk

_lock = threading.Lock()
waits = {"fsync": 0, "fsync_s": 0.0, "syncfs": 0, "syncfs_s": 0.0}


def _counted(name: str, fn):
    def wrapper(arg):
        t = time.perf_counter()
        try:
            return fn(arg)
        finally:
            with _lock:
                waits[name] += 1
                waits[name + "_s"] += time.perf_counter() - t
    return wrapper


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(name: str, sources: list[str], work: str) -> str:
    repo_path = os.path.join(work, f"repo-{name}")
    shutil.rmtree(repo_path, ignore_errors=True)
    repo = Repository.init(repo_path)
    src = os.path.join(work, f"src-{name}")
    for k in waits:
        waits[k] = 0
    wall = cpu = 0.0
    logical = 0
    for i, path in enumerate(sources):
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        os.link(path, os.path.join(src, "model.safetensors"))
        t0, c0 = time.perf_counter(), cpu_seconds()
        logical += repo.commit_paths([src], f"{name} {i}").stats.logical
        wall += time.perf_counter() - t0
        cpu += cpu_seconds() - c0
    stored = sum(repo.store.size(o) for o in repo.store)
    repo.close()
    shutil.rmtree(repo_path, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    n = len(sources)
    return (f"{name}: ingest {logical / wall / 1e6:.0f} MB/s, {logical / cpu / 1e6:.0f} MB per CPU-second "
            f"(CPU/wall {cpu / wall:.2f}); per commit: {waits['fsync'] / n:.0f} fsyncs "
            f"({waits['fsync_s'] / n * 1e3:.0f} ms), {waits['syncfs'] / n:.1f} syncfs "
            f"({waits['syncfs_s'] / n * 1e3:.0f} ms), wall {wall / n * 1e3:.0f} ms; stored {stored:,} bytes "
            f"({stored / logical:.4f} of full copies)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "coralfs-bench-ingest"))
    ap.add_argument("--series", default="fp32,bf16")
    ap.add_argument("--default-allocator", action="store_true",
                    help="keep glibc's default thresholds (the CLI fixes them: objects/memory.py)")
    args = ap.parse_args()
    if not args.default_allocator:
        from coralfs.objects.memory import tune_allocator
        tune_allocator()  # as `coralfs commit` does
    os.makedirs(args.work, exist_ok=True)
    from bench_storage import shared_series  # the same checkpoints as the storage benchmark
    shared = shared_series(args.work)
    names = {"fp32": "ckpt_{:02d}.safetensors", "bf16": "bf16_{:02d}.safetensors"}
    os.fsync = _counted("fsync", os.fsync)
    disk.sync_filesystem = _counted("syncfs", disk.sync_filesystem)
    durable.sync_filesystem = disk.sync_filesystem
    for name in args.series.split(","):
        print(run(name, [os.path.join(shared, names[name].format(i)) for i in range(8)], args.work), flush=True)


if __name__ == "__main__":
    main()
