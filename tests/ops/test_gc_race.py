"""gc racing writers: commits, writable-mount commits, stash and pop, and watch.

Each round: commit a directory on branch ``tmp``, delete ``tmp`` and its reflog (its
objects are now unreachable), optionally age them past the default prune age, then commit
the same content to ``main`` (reusing those objects) while gc runs. Before the write
session lock, gc deleted the reused objects between the commit's reuse and its ref move:
the commit returned, the branch was broken. After every round fsck must be clean and every
acknowledged commit must export byte-identical.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time

import pytest

from coralfs import Repository
from coralfs.staging import StagingArea
from coralfs.objects.ids import to_hex
from coralfs.watch import Watcher

ROUNDS = 20
FILES = 40
DEFAULT_AGE = 3600.0


class GcLoop:
    """gc in a thread over its own Repository object (its own lock file descriptor, as a
    separate `coralfs gc` process would have), run each time ``go`` is set or
    continuously with ``continuous``."""

    def __init__(self, path: str, prune_age: float, continuous: bool = False, delay: float = 0.0) -> None:
        self.repo = Repository.open(path)
        self.prune_age, self.continuous, self.delay = prune_age, continuous, delay
        self.go, self.stop = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.passes = 0
        self.t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            if not self.continuous:
                self.go.wait()
            if self.delay:
                time.sleep(self.delay)
            while True:
                self.repo.gc(self.prune_age)
                self.passes += 1
                if self.stop.is_set():
                    return
                time.sleep(0.001)
        except BaseException as e:  # reported by the test
            self.errors.append(e)

    def __enter__(self) -> GcLoop:
        self.t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.go.set()
        self.stop.set()
        self.t.join(60)
        self.repo.close()


def write_content(d: str, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    os.makedirs(d, exist_ok=True)
    out = {}
    for i in range(FILES):
        data = rng.randbytes(1024 + rng.randrange(1024))
        with open(os.path.join(d, f"f{i:03d}.bin"), "wb") as f:
            f.write(data)
        out[f"f{i:03d}.bin"] = data
    return out


def orphan(repo: Repository, src: str, age: bool) -> None:
    """Commit ``src`` on branch tmp, then make its objects unreachable (and old)."""
    repo.commit_paths([src], "tmp", branch="tmp")
    repo.delete_branch("tmp")
    shutil.rmtree(os.path.join(repo.path, "logs", "refs", "heads", "tmp"), ignore_errors=True)
    with os.scandir(os.path.join(repo.path, "logs", "refs", "heads")) as it:
        for e in it:
            if e.name == "tmp":
                os.unlink(e.path)
    if age:
        old = time.time() - 3 * 3600
        for d, _, files in os.walk(os.path.join(repo.path, "objects")):
            for f in files:
                os.utime(os.path.join(d, f), (old, old))


def check(repo: Repository, cid, content: dict[str, bytes], dest: str) -> None:
    rep = repo.fsck()
    assert rep.ok, rep.problems[:5]
    repo.export(to_hex(cid), dest)
    for name, data in content.items():
        with open(os.path.join(dest, name), "rb") as f:
            assert f.read() == data, name


def go_at(gc: GcLoop, n: int):
    """A progress callback that starts gc once the commit has stored or reused n files."""
    seen = [0]

    def progress(_path, _n):
        seen[0] += 1
        if seen[0] == n:
            gc.go.set()
    return progress


def rounds(tmp_path, prune_age: float):
    """ROUNDS fresh repositories, each holding the orphaned (and aged) content of src."""
    for r in range(ROUNDS):
        path = str(tmp_path / f"repo{r}")
        repo = Repository.init(path)
        src = str(tmp_path / f"src{r}")
        content = write_content(src, r)
        orphan(repo, src, age=prune_age > 0)
        yield r, repo, content, src
        repo.close()


@pytest.mark.parametrize("prune_age", [0.0, DEFAULT_AGE], ids=["prune-age-0", "default-age"])
def test_gc_racing_commit_paths(tmp_path, prune_age):
    for r, repo, content, src in rounds(tmp_path, prune_age):
        with GcLoop(repo.path, prune_age) as gc:
            res = repo.commit_paths([src], f"round {r}", branch="main", progress=go_at(gc, 5))
        assert not gc.errors, gc.errors
        assert gc.passes >= 1
        check(repo, res.commit, content, str(tmp_path / f"out{r}"))


@pytest.mark.parametrize("prune_age", [0.0, DEFAULT_AGE], ids=["prune-age-0", "default-age"])
def test_gc_racing_writable_mount_commits(tmp_path, prune_age):
    """StagingArea.commit is what a writable mount's commit (and auto-commit) runs."""
    for r, repo, content, _src in rounds(tmp_path, prune_age):
        st = StagingArea.open(repo, "main")
        try:
            for name, data in content.items():
                e = st.create(name, 0o644)
                with open(st.spool_path(e.spool), "wb") as f:
                    f.write(data)
            with GcLoop(repo.path, prune_age) as gc:
                cid, _stats = st.commit(f"round {r}", progress=go_at(gc, 5))
        finally:
            st.close()
        assert not gc.errors, gc.errors
        assert cid is not None
        check(repo, cid, content, str(tmp_path / f"out{r}"))


@pytest.mark.parametrize("prune_age", [0.0, DEFAULT_AGE], ids=["prune-age-0", "default-age"])
def test_gc_racing_watch(tmp_path, prune_age):
    """The watcher commits each settled checkpoint while gc runs (started a random few
    milliseconds into the commit, then continuously)."""
    rng = random.Random(7)
    for r in range(ROUNDS):
        path = str(tmp_path / f"repo{r}")
        repo = Repository.init(path)
        watched = tmp_path / f"run{r}"
        entry = str(watched / f"checkpoint-{r + 1}")
        content = write_content(entry, r)
        orphan(repo, entry, age=prune_age > 0)
        w = Watcher(repo, str(watched), branch="main", debounce=0.0)
        with GcLoop(path, prune_age, continuous=True, delay=rng.uniform(0.0, 0.03)):
            res = w.commit(entry)
        assert res is not None
        check(repo, res.commit, content, str(tmp_path / f"out{r}"))
        repo.close()


@pytest.mark.slow
@pytest.mark.parametrize("prune_age", [0.0, DEFAULT_AGE], ids=["prune-age-0", "default-age"])
def test_gc_racing_stash_and_pop(tmp_path, prune_age):
    """Files only the staging area keeps alive (renamed files of a base the branch left,
    its reflog gone) move between the staging area's pin and a stash's pin on every stash
    and pop. gc reads the pins while it walks pins/ (slow with many other staging areas and
    stashes): without the session lock a pop or stash in between lost them. The window
    is narrow: without the lock this test caught the loss in about two runs of three per
    parametrization (the commit and watch tests above catch theirs every run)."""
    path = str(tmp_path / "repo")
    repo = Repository.init(path)
    src = str(tmp_path / "src")
    content = write_content(src, 0)
    base = repo.commit_paths([src], "base", branch="main").commit
    st = StagingArea.open(repo, "main")
    try:
        st.mkdir("moved", 0o755)
        for name in content:
            st.rename(name, "moved/" + name)
        os.makedirs(tmp_path / "other")
        (tmp_path / "other" / "x").write_bytes(b"x")
        side = repo.commit_paths([str(tmp_path / "other")], "other", branch="side").commit
        away = repo.commit(repo.read_commit(side).tree, "away", branch="main", parents=[], expected_head=base)
        repo.delete_branch("side")
        shutil.rmtree(os.path.join(path, "logs"))
        for k in range(1000):  # other branches' staging areas and stashes
            for d, f in ((f"staging/b{k:04d}", "base"), ("staging/other/stash", str(k))):
                os.makedirs(os.path.join(path, "pins", d), exist_ok=True)
                with open(os.path.join(path, "pins", d, f), "w") as fh:
                    fh.write(to_hex(away) + "\n")
        for r in range(ROUNDS):
            if prune_age:
                orphan_age(path)
            with GcLoop(path, prune_age, continuous=True) as gc:
                for _ in range(5):
                    st.stash(f"round {r}")
                    st.stash_pop()
            assert not gc.errors, (r, gc.errors)
            rep = repo.fsck()
            assert rep.ok, (r, rep.problems[:3])
        cid, _ = st.commit("moved")
    finally:
        st.close()
    check(repo, cid, {"moved/" + k: v for k, v in content.items()}, str(tmp_path / "out"))
    repo.close()


def orphan_age(path: str) -> None:
    old = time.time() - 3 * 3600
    for d, _, files in os.walk(os.path.join(path, "objects")):
        for f in files:
            os.utime(os.path.join(d, f), (old, old))
