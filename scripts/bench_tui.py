#!/usr/bin/env python3
"""Time to first paint of `coralfs browse` on a big history: 10,000 commits (trees reusing
one stored file, made through the Python API's Repository.commit) of a 5,000-tensor
safetensors model (tiny tensors), driven headless by textual's run_test/Pilot.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_tui.py [--commits N] [--tensors N] [--runs N]

First paint is measured from opening the repository to the moment the first screen is
drawn with the refs, the first page of commits, the first commit's files and the first
page of its model's tensors (the app idle after mounting; textual's headless driver renders
the screen as a terminal would). Target: under 300 ms."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coralfs import Repository  # noqa: E402


@contextlib.contextmanager
def no_fsync():
    """The benchmark's repository is thrown away: building it skips fsync (10,000 commits
    would otherwise wait on the disk about 5 times each)."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def build(path: str, commits: int, tensors: int) -> None:
    from safetensors.numpy import save_file
    repo = Repository.init(path)
    src = os.path.join(os.path.dirname(path), "src")
    os.makedirs(src)
    rng = np.random.default_rng(0)
    save_file({f"model.layers.{i // 10}.block.{i % 10}.weight": rng.standard_normal((4, 4)).astype(np.float32)
               for i in range(tensors)}, os.path.join(src, "model.safetensors"))
    res = repo.commit_paths([src], "the model", metadata={"metrics": {"loss": 2.0}})
    tree = repo.read_commit(res.commit).tree   # every later commit reuses this tree (one File)
    with repo.write_session():
        for i in range(1, commits):
            repo.commit(tree, f"step {i}", time=1_760_000_000 + i, metadata={"metrics": {"loss": 2.0 / (i + 1)}})
    repo.close()


async def first_paint(path: str) -> tuple[float, float, float, int, int]:
    """Seconds from opening the repository to the first frame (textual's Ready: refs,
    the first page of commits, the first commit's fields), to the first commit's files and
    tensors shown (read in a worker meanwhile), the CPU seconds of this process to then,
    and the commit and tensor rows loaded."""
    from coralfs.tui import Browser
    from coralfs.tui.app import BrowserApp
    t0, c0 = time.perf_counter(), time.process_time()
    repo = Repository.open(path)
    app = BrowserApp(Browser(repo))
    async with app.run_test(size=(160, 48)) as pilot:
        while app.files_at is None:
            await pilot.pause()
        dc = time.process_time() - c0
        rows = app.query_one("#commits").row_count, app.query_one("#tensors").row_count
    repo.close()
    return app.painted_at - t0, app.files_at - t0, dc, *rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=10_000)
    ap.add_argument("--tensors", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repo", help="an existing repository to open instead of building one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.repo
        if path is None:
            path = os.path.join(tmp, "repo")
            t = time.perf_counter()
            with no_fsync():
                build(path, args.commits, args.tensors)
            print(f"built {args.commits} commits of a {args.tensors}-tensor model in {time.perf_counter() - t:.1f} s")
        asyncio.run(first_paint(path))   # warm: imports, the page cache
        paint, files, cpu = [], [], []
        for _ in range(args.runs):
            dp, df, dc, commits, tensors = asyncio.run(first_paint(path))
            paint.append(dp)
            files.append(df)
            cpu.append(dc)

        def ms(xs: list[float]) -> str:
            return f"median {statistics.median(xs) * 1000:.0f} ms, best {min(xs) * 1000:.0f} ms"
        print(f"first paint: {ms(paint)} (target < 300 ms)")
        print(f"files and tensors of the first commit shown: {ms(files)}; CPU to then {ms(cpu)}")
        print(f"{args.runs} runs, load average {os.getloadavg()[0]:.1f}; {commits} commit rows and {tensors} tensor "
              f"rows loaded of {args.commits} and {args.tensors}")


if __name__ == "__main__":
    main()
