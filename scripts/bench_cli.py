"""How fast the command line answers: median wall time of `coralfs log`, `status`, `branch`
and `--help` on an empty repository, each in a fresh process, beside the floor every
Python command pays (the interpreter alone, and importing numpy).

    .venv/bin/python scripts/bench_cli.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def wall(args: list[str], env: dict, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        repo = os.path.join(d, "repo")
        subprocess.run([sys.executable, "-m", "coralfs", "init", repo], check=True, capture_output=True)
        env = dict(os.environ, CORALFS_REPO=repo)
        rows = [("python -c pass", [sys.executable, "-c", "pass"]),
                ("python -c 'import numpy'", [sys.executable, "-c", "import numpy"])]
        rows += [(f"coralfs {c}", [sys.executable, "-m", "coralfs", *c.split()]) for c in ("log", "status", "branch", "--help")]
        print(f"median of {a.repeat} runs each, load {os.getloadavg()[0]:.1f}")
        print("| command | wall s |")
        print("|---|---:|")
        for label, args in rows:
            print(f"| `{label}` | {wall(args, env, a.repeat):.3f} |")


if __name__ == "__main__":
    main()
