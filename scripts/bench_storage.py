#!/usr/bin/env python3
"""Storage benchmark: a real MiniLM fine-tuning series, coralfs vs the alternatives.

Prints, in one run, stored bytes as a fraction of full copies for: full copies (what Git
LFS or DVC store), zstd-3 per file, byte-grouped zstd per file, ZipNN per file, ZipNN on
XOR deltas between consecutive checkpoints, and coralfs; the order-0 entropy of the
deltas coralfs chose; commit ingest and reconstruction throughput; and the peak RSS of
committing a 2 GB file.

    .venv/bin/python scripts/bench_storage.py [--work DIR] [--big-gb 2] [--markdown]
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
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minilm_series import build  # noqa: E402

from coralfs import Repository  # noqa: E402
from coralfs.formats import layout_of  # noqa: E402
from coralfs.objects import codecs, dtypes  # noqa: E402


def files_of(d: str) -> list[str]:
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs)


def grouped_size(path: str) -> int:
    """Byte-grouped zstd-3 of each tensor (ZipNN-style, no deltas) plus zstd of the rest."""
    lay = layout_of(path)
    c = zstandard.ZstdCompressor(level=3)
    total, pos = 0, 0
    with open(path, "rb") as f:
        data = f.read()
    for r in sorted(lay.regions, key=lambda r: r.offset):
        total += len(c.compress(data[pos:r.offset]))
        w = dtypes.lookup(r.dtype).width
        buf = np.frombuffer(data, np.uint8, count=r.length, offset=r.offset)
        total += min(r.length, len(c.compress(codecs.group(buf, w))))
        pos = r.offset + r.length
    return total + len(c.compress(data[pos:]))


def zipnn_size(data: bytes, dtype: str) -> int:
    from zipnn import ZipNN
    return len(ZipNN(bytearray_dtype=dtype, threads=2).compress(data))


def entropy_bits_per_byte(chunks: list[bytes]) -> float:
    counts = np.zeros(256, np.int64)
    for c in chunks:
        counts += np.bincount(np.frombuffer(c, np.uint8), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def delta_entropy(repo: Repository) -> tuple[float, int]:
    """Order-0 entropy (bits/byte) of the byte-grouped delta streams coralfs stored."""
    d = zstandard.ZstdDecompressor()
    streams = []
    for oid in repo.store:
        frame = repo.store.get(oid)
        h = codecs.parse_header(frame, oid)
        if h.codec in codecs.DELTA_CODECS:
            streams.append(d.decompress(frame[codecs.HEADER_SIZE:], max_output_size=h.decoded_len))
    return (entropy_bits_per_byte(streams) if streams else float("nan")), len(streams)


def commit_series(repo: Repository, root: str, idx: dict) -> tuple[float, int]:
    """Commit main-0..N on main and each fine-tune on its own branch; (seconds, bytes)."""
    t, n = 0.0, 0
    base = None
    for i, c in enumerate(idx["main"]):
        d = os.path.join(root, c["name"])
        t0 = time.perf_counter()
        res = repo.commit_paths([d], f"step {c['step']}", metadata={"step": c["step"]})
        t += time.perf_counter() - t0
        n += res.stats.logical
        if i == 0:
            base = res.commit
    for c in idx["finetunes"]:
        repo.create_branch(c["name"], base.hex())
        t0 = time.perf_counter()
        res = repo.commit_paths([os.path.join(root, c["name"])], c["name"], branch=c["name"])
        t += time.perf_counter() - t0
        n += res.stats.logical
    return t, n


def reconstruct(repo_path: str, rev: str) -> tuple[float, int]:
    """Decode every file of ``rev`` in a fresh process state (no warm chunk cache)."""
    r = Repository.open(repo_path)
    t0 = time.perf_counter()
    n = 0
    for _p, e in r.tree_of(rev).entries.items():
        for b in r.open_file(e.file).iter_bytes():
            n += len(b)
    return time.perf_counter() - t0, n


def verify(repo: Repository, root: str, idx: dict) -> bool:
    import hashlib
    out = tempfile.mkdtemp()
    try:
        ok = True
        revs = [("main~%d" % (len(idx["main"]) - 1 - i), c["name"]) for i, c in enumerate(idx["main"])]
        revs += [(c["name"], c["name"]) for c in idx["finetunes"]]
        for rev, name in revs:
            dest = os.path.join(out, name)
            repo.export(rev, dest)
            for p in files_of(os.path.join(root, name)):
                q = os.path.join(dest, os.path.relpath(p, os.path.join(root, name)))
                with open(p, "rb") as a, open(q, "rb") as b:
                    if hashlib.sha256(a.read()).digest() != hashlib.sha256(b.read()).digest():
                        ok = False
        return ok
    finally:
        shutil.rmtree(out)


def run_series(kind: str, root: str, idx: dict, work: str, rows: list, report) -> None:
    names = [c["name"] for c in idx["main"]] + [c["name"] for c in idx["finetunes"]]
    dirs = [os.path.join(root, n) for n in names]
    full = sum(os.path.getsize(p) for d in dirs for p in files_of(d))
    z = zstandard.ZstdCompressor(level=3)
    zstd_total = 0
    grouped = 0
    zipnn_total = 0
    zipnn_xor = 0
    zdt = "float32" if kind == "fp32" else "bfloat16"
    prev = None
    for d in dirs:
        for p in files_of(d):
            with open(p, "rb") as f:
                data = f.read()
            zstd_total += len(z.compress(data))
            if p.endswith(".safetensors"):
                grouped += grouped_size(p)
                zipnn_total += zipnn_size(data, zdt)
                # ZipNN on XOR deltas: consecutive checkpoints of the main line; each
                # fine-tune against the published weights (its real parent).
                name = os.path.basename(d)
                parent = prev if name.startswith("main-") else os.path.join(root, "main-0", "model.safetensors")
                if parent is not None and name != "main-0":
                    with open(parent, "rb") as f:
                        pdata = f.read()
                    if len(pdata) == len(data):
                        x = (np.frombuffer(data, np.uint8) ^ np.frombuffer(pdata, np.uint8)).tobytes()
                        zipnn_xor += zipnn_size(x, zdt)
                    else:
                        zipnn_xor += zipnn_size(data, zdt)
                else:
                    zipnn_xor += zipnn_size(data, zdt)
                if name.startswith("main-"):
                    prev = p
            else:
                grouped += len(z.compress(data))
                zipnn_total += len(z.compress(data))
                zipnn_xor += len(z.compress(data))
    repo_path = os.path.join(work, f"repo-{kind}")
    shutil.rmtree(repo_path, ignore_errors=True)
    repo = Repository.init(repo_path)
    if MAX_CHAIN is not None:
        repo.config.set("storage.max_chain", str(MAX_CHAIN))
        repo = Repository.open(repo_path)
    secs, logical = commit_series(repo, root, idx)
    stored = sum(repo.store.size(o) for o in repo.store)
    ent, ndelta = delta_entropy(repo)
    rt, rn = reconstruct(repo_path, "main")
    ok = verify(repo, root, idx)
    repo.close()
    for label, v in (("full copies (Git LFS / DVC)", full), ("zstd-3 per file", zstd_total),
                     ("byte-grouped zstd per file", grouped), ("ZipNN per file", zipnn_total),
                     ("ZipNN on XOR deltas", zipnn_xor), ("coralfs", stored)):
        rows.append((kind, label, v / full))
    report(f"[{kind}] {len(dirs)} checkpoints, {full / 1e6:.1f} MB as full copies")
    for label, v in (("full copies (Git LFS / DVC)", full), ("zstd-3 per file", zstd_total),
                     ("byte-grouped zstd per file", grouped), ("ZipNN per file", zipnn_total),
                     ("ZipNN on XOR deltas", zipnn_xor), ("coralfs", stored)):
        report(f"    {label:<30} {v / full:6.3f}")
    report(f"    coralfs delta entropy: {ent:.3f} bits/byte over {ndelta} delta chunks (order-0, byte-grouped)")
    report(f"    coralfs ingest: {logical / secs / 1e6:.0f} MB/s; reconstruction of main: {rn / rt / 1e6:.0f} MB/s")
    report(f"    every checkpoint bit-identical after export: {ok}")
    rows.append((kind, "ingest MB/s", logical / secs / 1e6))
    rows.append((kind, "reconstruction MB/s", rn / rt / 1e6))
    rows.append((kind, "delta entropy bits/byte", ent))
    rows.append((kind, "bit-identical", ok))


MAX_CHAIN = None

BIG_CHILD = r"""
import sys, time, resource
from coralfs import Repository
r = Repository.init(sys.argv[1])
t = time.perf_counter()
res = r.commit_paths([sys.argv[2]], "big")
dt = time.perf_counter() - t
# VmHWM is this process's own peak: ru_maxrss would include the parent's peak (kept across exec).
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(res.stats.logical / dt / 1e6, hwm / 1024)
"""


def big_file(work: str, gb: float, report) -> tuple[float, float]:
    """Peak RSS and ingest speed of committing one large safetensors file (child process)."""
    from safetensors.numpy import save_file
    d = os.path.join(work, "big")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.safetensors")
    n_tensors = max(1, int(gb * 16))
    if not os.path.exists(path) or abs(os.path.getsize(path) - gb * 1e9) > 0.1e9:
        rng = np.random.default_rng(0)
        per = int(gb * 1e9 / n_tensors / 4)
        # written tensor by tensor so this process stays small too
        tensors = {f"layer{i}.weight": (rng.standard_normal(per, dtype=np.float32) * 0.02) for i in range(n_tensors)}
        save_file(tensors, path)
        del tensors
    repo = os.path.join(work, "repo-big")
    shutil.rmtree(repo, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", BIG_CHILD, repo, d], capture_output=True, text=True, check=True)
    speed, rss_mb = map(float, out.stdout.split())
    shutil.rmtree(repo, ignore_errors=True)
    report(f"[big] {os.path.getsize(path) / 1e9:.2f} GB safetensors: ingest {speed:.0f} MB/s, peak RSS {rss_mb:.0f} MB")
    return speed, rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "coralfs-bench"))
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table")
    ap.add_argument("--max-chain", type=int, default=None, help="override storage.max_chain")
    ap.add_argument("--series", default="fp32,bf16", help="which series to run")
    args = ap.parse_args()
    global MAX_CHAIN
    MAX_CHAIN = args.max_chain
    os.makedirs(args.work, exist_ok=True)
    series_root = os.path.join(args.work, "series")
    print("building the MiniLM fine-tuning series (cached)...")
    idx = build(series_root)
    rows: list = []
    for kind in args.series.split(","):
        run_series(kind, os.path.join(series_root, kind), idx, args.work, rows, print)
    speed, rss = (None, None)
    if args.big_gb > 0:
        speed, rss = big_file(args.work, args.big_gb, print)
        rows.append(("big", "ingest MB/s", speed))
        rows.append(("big", "peak RSS MB", rss))
    if args.markdown:
        print("\n| series | measure | value |\n|---|---|---|")
        for k, label, v in rows:
            val = f"{v:.3f}" if isinstance(v, float) and v < 10 else (f"{v:.0f}" if isinstance(v, float) else str(v))
            print(f"| {k} | {label} | {val} |")


if __name__ == "__main__":
    main()
