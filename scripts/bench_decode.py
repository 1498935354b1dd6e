#!/usr/bin/env python3
"""Decode benchmark: every stored frame of a repository decoded once, its delta base
already decoded, with the thread CPU time and wall time of ``codecs.decode`` by codec.
Each result's SHA-256 must be its object id (checked outside the timings).

    flock /work/notes/bench.lock .venv/bin/python scripts/bench_decode.py REPO
        [--compare OTHER_SOURCE_TREE] [--rounds 3] [--cache-mb 512]

REPO is a coralfs repository, e.g. the one scripts/bench_remote.py leaves of the fp32
MiniLM series (/tmp/coralfs-bench-remote/series-repo). ``--compare DIR`` also decodes with
the coralfs found in DIR (another checkout, its compiled kernel built in place),
alternating with this tree ``--rounds`` times each, so both share the machine's load;
each round runs in a fresh interpreter. The figures are the medians over the rounds.
Every decoded chunk goes into a ByteLRU of ``--cache-mb`` MiB, as ObjectDB's chunk cache
holds them on the mount read path and in a clone: memory the allocator cannot reuse at
once, as there (0: dropped as soon as no delta needs it).
CORALFS_NATIVE=0 in the environment measures the numpy code instead of the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def decode_all(repo_path: str, cache_mb: int) -> dict:
    """(In a child whose sys.path starts with the tree measured.) Decode every frame of
    the repository, bases first, each result kept in a ByteLRU of ``cache_mb`` MiB as
    ObjectDB keeps decoded chunks; per codec: frames, decoded bytes, thread CPU, wall,
    minor page faults."""
    from coralfs.objects import codecs
    from coralfs.objects.cache import ByteLRU
    from coralfs.objects.ids import hash_bytes
    from coralfs.objects.memory import tune_allocator
    from coralfs.objects.repository import Repository

    tune_allocator()  # as coralfs' own processes (the CLI, the mount daemon) do
    store = Repository.open(repo_path).odb.store
    frames, heads = {}, {}
    for oid in store:
        frames[oid] = store.get(oid)
        heads[oid] = codecs.parse_header(frames[oid], oid)
    # Bases first; a decoded base is kept until its last delta is decoded.
    waiting: dict[bytes, int] = {}
    for h in heads.values():
        if h.base is not None:
            waiting[h.base] = waiting.get(h.base, 0) + 1
    done: set[bytes] = set()
    order: list[bytes] = []

    def visit(oid: bytes) -> None:
        stack = []
        while oid not in done:
            stack.append(oid)
            b = heads[oid].base
            if b is None or b in done:
                break
            oid = b
        for o in reversed(stack):
            if o not in done:
                done.add(o)
                order.append(o)

    for oid in heads:
        visit(oid)
    decoded: dict[bytes, bytes] = {}
    cache = ByteLRU(cache_mb << 20)
    out: dict[str, list[float]] = {}
    for oid in order:
        h = heads[oid]
        f0 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        c0, w0 = time.thread_time(), time.perf_counter()
        data = codecs.decode(frames[oid], oid, decoded.__getitem__, header=h)
        c1, w1 = time.thread_time(), time.perf_counter()
        f1 = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        if hash_bytes(data) != oid:
            raise SystemExit(f"{oid.hex()}: the decoded bytes do not hash to the object id")
        row = out.setdefault(h.codec_name, [0, 0, 0.0, 0.0, 0])
        row[0] += 1
        row[1] += len(data)
        row[2] += c1 - c0
        row[3] += w1 - w0
        row[4] += f1 - f0
        cache.put(oid, data)
        if waiting.get(oid):
            decoded[oid] = data
        if h.base is not None:
            waiting[h.base] -= 1
            if not waiting[h.base]:
                del decoded[h.base]
    out["tree"] = os.path.dirname(os.path.dirname(os.path.dirname(codecs.__file__)))
    return out


def child(tree: str, repo: str, cache_mb: int) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    code = (f"import sys, json; sys.path.insert(0, {tree!r}); sys.path.insert(1, {os.path.dirname(__file__)!r}); "
            f"import bench_decode; print(json.dumps(bench_decode.decode_all({repo!r}, {cache_mb})))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    if p.returncode:
        raise SystemExit(p.stderr)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if os.path.realpath(out.pop("tree")) != os.path.realpath(tree):
        raise SystemExit(f"the child imported coralfs from outside {tree}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repo")
    ap.add_argument("--compare", metavar="DIR", help="another source tree to measure alternately")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-mb", type=int, default=512,
                    help="the decoded chunks kept, as ObjectDB's chunk cache (default its 512 MiB)")
    args = ap.parse_args()
    trees = [ROOT] + ([os.path.abspath(args.compare)] if args.compare else [])
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    print(f"load before: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    for _ in range(args.rounds):
        for t in trees:
            runs[t].append(child(t, args.repo, args.cache_mb))
    print(f"load after: {open('/proc/loadavg').read().split()[:3]}")
    codec_names = sorted({c for t in trees for r in runs[t] for c in r})
    print(f"{'codec':10} {'frames':>6} {'MB':>8}  "
          + "  ".join(f"{'cpu s':>7} {'MB/s':>6} {'wall s':>7} {'faults':>7}" for _ in trees))
    for c in [*codec_names, "all"]:
        cells, first = [], None
        for t in trees:
            def total(r, i, c=c):
                return sum(v[i] for k, v in r.items() if c in ("all", k))
            cpu = statistics.median(total(r, 2) for r in runs[t])
            wall = statistics.median(total(r, 3) for r in runs[t])
            faults = statistics.median(total(r, 4) for r in runs[t])
            first = first or (total(runs[t][0], 0), total(runs[t][0], 1))
            cells.append(f"{cpu:7.3f} {first[1] / 1e6 / cpu if cpu else 0:6.0f} {wall:7.3f} {faults:7.0f}")
        print(f"{c:10} {first[0]:6d} {first[1] / 1e6:8.1f}  " + "  ".join(cells))
    print("columns per tree, in order: " + ", ".join(trees))


if __name__ == "__main__":
    main()
