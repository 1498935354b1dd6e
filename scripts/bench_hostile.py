#!/usr/bin/env python3
"""Hostile-input benchmark: small files that used to cost huge time or memory, each
committed by `coralfs commit` in a child process; prints wall time, the child's peak RSS
(os.wait4 rusage) and the bytes stored, side by side with the targets.

    .venv/bin/python scripts/bench_hostile.py [--work DIR] [--markdown]

Inputs (scripts/hostile_inputs.py): a 3 GiB-inflating data.pkl in a torch zip, 300,000
tiny tensors in one safetensors file, an .npz of 200,000 members, a 10 GiB sparse file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hostile_inputs  # noqa: E402

PY = sys.executable
CASES = [
    # name, builder, file name, (max seconds, max RSS MiB, max stored MiB or None)
    ("pickle bomb (data.pkl inflates to 3 GiB)", lambda p: hostile_inputs.pickle_bomb(p, 3 << 30, level=1),
     "model.pt", (10, 512, None)),
    ("300,000 tiny tensors (safetensors)", hostile_inputs.many_tensors_safetensors, "model.safetensors",
     (10, 512, None)),
    (".npz with 200,000 members", hostile_inputs.many_members_npz, "arrays.npz", (10, 512, None)),
    ("10 GiB sparse file", hostile_inputs.sparse_file, "sparse.bin", (30, 512, 1)),
]


def stored(repo: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(os.path.join(repo, "objects"))
               for f in fs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None)
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="coralfs-hostile-")
    rows = []
    for name, build, fname, (t_max, rss_max, st_max) in CASES:
        case = os.path.join(work, fname.replace(".", "_"))
        shutil.rmtree(case, ignore_errors=True)
        src = os.path.join(case, "src")
        os.makedirs(src)
        path = os.path.join(src, fname)
        t0 = time.perf_counter()
        build(path)
        built = time.perf_counter() - t0
        repo = os.path.join(case, "repo")
        subprocess.run([PY, "-m", "coralfs", "init", repo], check=True, capture_output=True)
        t0 = time.perf_counter()
        p = subprocess.Popen([PY, "-m", "coralfs", "commit", src, "-m", "bench"],
                             env=dict(os.environ, CORALFS_REPO=repo), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        _pid, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        err = p.stderr.read().decode(errors="replace").strip()
        p.stderr.close()
        rss = ru.ru_maxrss / 1024  # KiB on Linux
        n_obj = sum(len(fs) for _d, _s, fs in os.walk(os.path.join(repo, "objects")))
        st = stored(repo) / 2**20
        ok = (os.waitstatus_to_exitcode(status) == 0 and dt < t_max and rss < rss_max
              and (st_max is None or st < st_max))
        rows.append((name, os.path.getsize(path), built, dt, t_max, rss, rss_max, st, st_max, n_obj,
                     os.waitstatus_to_exitcode(status), ok, err.splitlines()[-1] if err else ""))
        shutil.rmtree(case, ignore_errors=True)
    if a.markdown:
        print("| input | file size | commit s (target) | peak RSS MiB (target) | stored MiB | object files | exit |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            tgt = f" (< {r[8]})" if r[8] is not None else ""
            print(f"| {r[0]} | {r[1] / 2**20:,.1f} MiB | {r[3]:.1f} (< {r[4]}) | {r[5]:.0f} (< {r[6]}) | "
                  f"{r[7]:.2f}{tgt} | {r[9]} | {r[10]} |")
    else:
        for r in rows:
            print(f"{r[0]:<42} file {r[1] / 2**20:9.1f} MiB  commit {r[3]:6.1f} s (< {r[4]})  "
                  f"RSS {r[5]:6.0f} MiB (< {r[6]})  stored {r[7]:8.2f} MiB  {r[9]:6d} objects  "
                  f"exit {r[10]}  {'ok' if r[11] else 'MISSED'}  {r[12][:80]}")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
