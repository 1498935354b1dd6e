"""kill -9 of push, fetch and clone at random moments, in a loop: after every kill the
local repository and the remote pass fsck, and the next run completes with byte-identical
exports. Real processes (python -m coralfs), killed with SIGKILL."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from coralfs import Repository
from coralfs.objects.refs import HEADS
from coralfs.remote.layout import MARKER
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.url import open_blobs
from coralfs.remote.verify import fsck_remote
from tests.conftest import run_cli
from tests.remote.sync_helpers import checkpoint, exports

pytestmark = pytest.mark.slow
KILLS = 6
ENV = {"CORALFS_PACK_SIZE": str(128 << 10)}   # many packs: kills land between and inside them


def _start(*args: str, repo: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, **ENV)
    env.pop("CORALFS_REPO", None)
    if repo:
        env["CORALFS_REPO"] = repo
    return subprocess.Popen([sys.executable, "-m", "coralfs", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _timed(*args: str, repo: str | None = None) -> float:
    t = time.perf_counter()
    assert _start(*args, repo=repo).wait(timeout=300) == 0
    return time.perf_counter() - t


def _kill_loop(rng: random.Random, duration: float, *args: str, repo: str | None = None, after=None,
               done=None) -> tuple[int, bool]:
    """Start the command and SIGKILL it at a random moment, KILLS times or until a run
    finishes first (or ``done()`` says a killed one had); ``after()`` checks the state
    each kill leaves. (kills, finished)"""
    killed = 0
    for _ in range(KILLS):
        if done is not None and done():
            return killed, True
        p = _start(*args, repo=repo)
        try:
            rc = p.wait(timeout=rng.uniform(0.05, 0.9 * duration))
            assert rc == 0, f"coralfs {' '.join(args)} failed after an earlier kill ({rc})"
            return killed, True
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            killed += 1
        if after:
            after()
    return killed, False


def _series(tmp_path, repo: str, steps: range) -> None:
    for i in steps:
        run_cli("commit", checkpoint(tmp_path / f"ck{i}", i, n=512), "-m", f"step {i}", repo=repo)


def _fsck_ok(path: str) -> None:
    if os.path.exists(os.path.join(path, "HEAD")):
        rep = Repository.open(path).fsck()
        assert rep.ok, rep.problems


def test_kill_push_fetch_and_clone_at_random_moments(tmp_path):
    (tmp_path / "remote").mkdir()
    (tmp_path / "scratch").mkdir()
    kill_loops(tmp_path, f"file://{tmp_path / 'remote'}", f"file://{tmp_path / 'scratch'}")


def kill_loops(tmp_path, url: str, scratch_url: str) -> None:
    """The loops against the remote at ``url`` (``scratch_url``: another empty remote of
    the same kind, to time an uninterrupted push)."""
    rng = random.Random(int(os.environ.get("CORALFS_KILL_SEED", "1")))
    src = str(tmp_path / "src")
    run_cli("init", src)
    _series(tmp_path, src, range(4))
    run_cli("remote", "add", "origin", url, repo=src)
    run_cli("remote", "add", "scratch", scratch_url, repo=src)
    d_push = _timed("push", "scratch", "main", repo=src)

    def remote_ok() -> None:
        if open_blobs(url).head(MARKER) is not None:   # killed before the first write: still empty
            rep = fsck_remote(open_blobs(url))
            assert rep.ok, rep.problems
        _fsck_ok(src)

    kills, _ = _kill_loop(rng, d_push, "push", "origin", "main", repo=src, after=remote_ok)
    run_cli("push", "origin", "main", repo=src)
    blobs = open_blobs(url)
    assert RemoteRefs(blobs).read(HEADS + "main") == Repository.open(src).branch_head("main")
    assert fsck_remote(blobs).unindexed == []   # the last push removed what the killed ones left

    # clone, killed: the same command finishes it
    dest = str(tmp_path / "clone")
    d_clone = _timed("clone", url, str(tmp_path / "clone-timed"))
    def cloned() -> bool:   # killed after its last step: complete (a clone into it is refused)
        return os.path.exists(dest) and not os.path.exists(os.path.join(dest, "remote-journal", "clone.json"))

    k, finished = _kill_loop(rng, d_clone, "clone", url, dest, after=lambda: _fsck_ok(dest), done=cloned)
    if not finished and not cloned():
        run_cli("clone", url, dest)   # the same command continues the interrupted clone
    kills += k
    revs = [f"main~{i}" for i in range(4)]
    assert exports(Repository.open(dest), tmp_path / "e1", revs) == exports(Repository.open(src), tmp_path / "e2", revs)

    # fetch, killed: new commits on the remote, the clone fetches them
    _series(tmp_path, src, range(4, 7))
    run_cli("push", "origin", "main", repo=src)
    d_fetch = _timed("fetch", repo=str(tmp_path / "clone-timed"))
    kills += _kill_loop(rng, d_fetch, "fetch", repo=dest, after=lambda: _fsck_ok(dest))[0]
    run_cli("pull", repo=dest)
    revs = [f"main~{i}" for i in range(7)]
    assert exports(Repository.open(dest), tmp_path / "e3", revs) == exports(Repository.open(src), tmp_path / "e4", revs)
    _fsck_ok(dest)
    assert fsck_remote(blobs).ok
    assert kills >= 3   # runs were killed before they finished (how many depends on the machine's load)
