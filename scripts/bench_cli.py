"""How fast the command line answers: median wall time of `coralfs log`, `status`, `branch`
and `--help` on an empty repository, each in a fresh process, beside the floors: the
interpreter alone, importing numpy, importing typer, importing the coralfs package (what
every `coralfs` command pays before it parses its arguments) and the rich modules the root
help draws with.

    .venv/bin/python scripts/bench_cli.py [--repeat 7] [--compare OTHER_SOURCE_TREE]

Bytecode is compiled once into a scratch cache (PYTHONPYCACHEPREFIX) and one warm-up run of
each command precedes the timed ones, as for an installed coralfs; PYTHONDONTWRITEBYTECODE
in the environment would otherwise make every run recompile coralfs. ``--compare DIR``
times the coralfs found in DIR (e.g. ``git archive main coralfs | tar -x -C DIR``) in the
same run, alternating with this one, so the two columns share the machine's load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RICH = "import rich.align, rich.columns, rich.console, rich.highlighter, rich.padding, rich.panel, rich.table, rich.text"


def once(args: list[str], env: dict, cwd: str) -> tuple[float, float]:
    """(wall s, CPU s of the child: user + system). On a loaded machine the wall clock is
    mostly waiting for a core; the CPU time is what the command itself costs."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--compare", help="another source tree holding coralfs/, timed in the same run")
    a = ap.parse_args()
    trees = [("this tree", SRC)] + ([("--compare", os.path.abspath(a.compare))] if a.compare else [])
    with tempfile.TemporaryDirectory() as d:
        repo = os.path.join(d, "repo")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(CORALFS_REPO=repo, PYTHONPYCACHEPREFIX=os.path.join(d, "pycache"))
        subprocess.run([sys.executable, "-m", "coralfs", "init", repo], check=True, capture_output=True,
                       env=dict(env, PYTHONPATH=SRC))
        rows = [("python -c pass", [sys.executable, "-c", "pass"]),
                ("python -c 'import numpy'", [sys.executable, "-c", "import numpy"]),
                ("python -c 'import typer'", [sys.executable, "-c", "import typer"]),
                ("python -c 'import coralfs'", [sys.executable, "-c", "import coralfs"]),
                # What the root help draws with (coralfs/cli/root_help.py).
                ("python -c 'import rich.table, ...'", [sys.executable, "-c", RICH])]
        rows += [(f"coralfs {c}", [sys.executable, "-m", "coralfs", *c.split()]) for c in ("log", "status", "branch", "--help")]
        envs = [dict(env, PYTHONPATH=path) for _, path in trees]
        # From the scratch directory: `python -m` puts the current directory first on sys.path.
        for (name, _), e in zip(trees, envs):
            where = subprocess.run([sys.executable, "-c", "import coralfs; print(coralfs.__file__)"], env=e, cwd=d,
                                   capture_output=True, text=True, check=True).stdout.strip()
            print(f"{name}: {where}")
        times: dict = {(label, i): [] for label, _ in rows for i in range(len(trees))}
        for _label, args in rows:
            for e in envs:
                once(args, e, d)   # warm-up: writes the bytecode cache
        for _ in range(a.repeat):
            for label, args in rows:
                for i, e in enumerate(envs):
                    times[(label, i)].append(once(args, e, d))
        print(f"median of {a.repeat} runs each, load {os.getloadavg()[0]:.1f} (1-min average, at the end)")
        print("| command | " + " | ".join(f"{name}: wall s | CPU s" for name, _ in trees) + " |")
        print("|---|" + "---:|---:|" * len(trees))
        for label, _ in rows:
            cells = " | ".join(f"{statistics.median(w for w, _ in times[(label, i)]):.3f} | "
                               f"{statistics.median(c for _, c in times[(label, i)]):.3f}" for i in range(len(trees)))
            print(f"| `{label}` | {cells} |")


if __name__ == "__main__":
    main()
