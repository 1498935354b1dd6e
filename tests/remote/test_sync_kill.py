"""kill -9 of push, clone and fetch in the middle of their work, in a loop: each of the
three is killed at least once after it began moving objects; after every push kill the
remote holds at most one pack without its index and the push that follows re-sends at
most that one pack's bytes; after every kill the local repository and the remote pass
fsck; the next run completes with byte-identical exports. Real processes (python -m
coralfs), killed with SIGKILL.

When to kill is read from what the process does, not from a clock that starts with the
process (a loaded machine spends a variable second in Python's start-up): a push is
killed once it has written its journal for a pack (the moment before that pack's first
byte leaves), a clone or fetch once a new file appeared under the repository's objects/.
The first kill of each loop comes right at that event, so each is killed mid-work
whatever the load; the later ones at a random delay after it, up to 90% of the work's
duration measured on an uninterrupted run (from the same event to the exit)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from coralfs import Repository
from coralfs.objects.refs import HEADS
from coralfs.remote.file import ABANDONED_AFTER
from coralfs.remote.layout import MARKER
from coralfs.remote.packs import PACKS, decode_index
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.url import open_blobs
from coralfs.remote.verify import fsck_remote
from tests.conftest import run_cli
from tests.remote.sync_helpers import checkpoint, exports

pytestmark = pytest.mark.slow
KILLS = 5
PACK = 128 << 10
ENV = {"CORALFS_PACK_SIZE": str(PACK)}   # many packs: kills land between and inside them
POLL = 0.002


def _start(*args: str, repo: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, **ENV)
    env.pop("CORALFS_REPO", None)
    if repo:
        env["CORALFS_REPO"] = repo
    return subprocess.Popen([sys.executable, "-m", "coralfs", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _journal_written(repo: str, remote: str) -> Callable[[], Callable[[], bool]]:
    """An event: the push journal was (re)written since the event was armed. write_durable
    renames a new file over it, so its inode changes at every save."""
    path = os.path.join(repo, "remote-journal", f"{remote}.json")

    def stat() -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def arm() -> Callable[[], bool]:
        before = stat()
        return lambda: stat() not in (None, before)
    return arm


def _object_files(repo: str) -> int:
    n = 0
    for _r, _d, fs in os.walk(os.path.join(repo, "objects")):
        n += len(fs)
    return n


def _new_object_file(repo: str) -> Callable[[], Callable[[], bool]]:
    """An event: a file (an object, or a fetch's temp file of one) appeared under objects/."""
    def arm() -> Callable[[], bool]:
        before = _object_files(repo)
        return lambda: _object_files(repo) > before
    return arm


class FileWatch:
    """What the push's processes write to a file:// remote at ``root``, seen from its
    directory: FileBlobs.put renames a new file into place, so a pack written (again)
    has a new inode."""

    def __init__(self, root: str) -> None:
        self.packs = os.path.join(root, PACKS)

    def _files(self) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            with os.scandir(self.packs) as it:
                for e in it:
                    if e.name.endswith((".pack", ".idx")):
                        st = e.stat()
                        out[e.name] = (st.st_ino, st.st_size)
        except FileNotFoundError:
            pass
        return out

    def mark(self) -> dict[str, tuple[int, int]]:
        return self._files()

    def bodies_since(self, mark) -> dict[str, int]:
        """Pack bodies written since ``mark``: PACKS key -> bytes."""
        return {PACKS + n: size for n, (ino, size) in self._files().items()
                if n.endswith(".pack") and mark.get(n, (None,))[0] != ino}

    def body_landed(self) -> Callable[[], bool]:
        """An event: a new pack body is whole on the remote and its index is not (yet)."""
        before = set(self._files())

        def seen() -> bool:
            now = set(self._files())
            return any(n.endswith(".pack") and n not in before and n[: -len(".pack")] + ".idx" not in now for n in now)
        return seen


class ProxyWatch:
    """What the push's processes send to a cloud remote, seen by the CountingProxy they
    reach it through: every PUT of a pack body that went out whole."""

    def __init__(self, proxy) -> None:
        self.proxy = proxy

    def mark(self) -> int:
        return len(self.proxy.snapshot())

    def bodies_since(self, mark: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.proxy.snapshot()[mark:]:
            if r.method == "PUT" and r.path.endswith(".pack"):
                key = PACKS + r.path.rsplit("/", 1)[1]
                out[key] = out.get(key, 0) + r.body_bytes
        return out

    def body_landed(self) -> Callable[[], bool]:
        """An event: the whole body of a new pack PUT went through (the store has it, or is
        about to; its index has not gone yet)."""
        before = self.mark()
        return lambda: bool(self.bodies_since(before))


def _until_event(p: subprocess.Popen, seen: Callable[[], bool], timeout: float = 300, poll: float = POLL) -> bool:
    """Wait until the event or the process's exit: whether the process still runs."""
    deadline = time.monotonic() + timeout
    while p.poll() is None and not seen():
        assert time.monotonic() < deadline, "neither the event nor an exit within the timeout"
        time.sleep(poll)
    return p.poll() is None


def _finish(p: subprocess.Popen, args: tuple[str, ...]) -> None:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"coralfs {' '.join(args)} failed after an earlier kill ({p.returncode}): {err.decode()}"


def _work_time(arm, *args: str, repo: str | None = None) -> float:
    """An uninterrupted run: seconds from the event to the exit."""
    seen = arm()
    p = _start(*args, repo=repo)
    _until_event(p, seen)
    t = time.perf_counter()
    _finish(p, args)
    return time.perf_counter() - t


def _kill_loop(rng: random.Random, work: float, arm, *args: str, repo: str | None = None,
               after: Callable[[], None] | None = None, done: Callable[[], bool] | None = None,
               second=None) -> tuple[int, bool]:
    """Start the command and SIGKILL it after the event ``arm()`` watches for: at once the
    first time, later at a random delay up to 0.9 x ``work``; KILLS times or until a run
    finishes (or ``done()`` says a killed one had). The second run, if ``second`` is
    given, is killed at once at that event instead. ``after()`` checks what each kill
    leaves. (kills, finished)"""
    killed = 0
    for attempt in range(KILLS):
        if done is not None and done():
            return killed, True
        at_once = attempt == 0 or (attempt == 1 and second is not None)
        seen = (second if attempt == 1 and second is not None else arm)()
        p = _start(*args, repo=repo)
        if _until_event(p, seen, poll=POLL / 4 if at_once else POLL):
            try:
                p.wait(timeout=0 if at_once else rng.uniform(0, 0.9 * work))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                p.stderr.close()
                killed += 1
                if after:
                    after()
                continue
        _finish(p, args)
        return killed, True
    return killed, False


def _series(tmp_path, repo: str, steps: range) -> None:
    for i in steps:
        run_cli("commit", checkpoint(tmp_path / f"ck{i}", i, n=512), "-m", f"step {i}", repo=repo)


def _fsck_ok(path: str) -> None:
    if os.path.exists(os.path.join(path, "HEAD")):
        rep = Repository.open(path).fsck()
        assert rep.ok, rep.problems


@dataclass
class PushKills:
    """What each push kill left on the remote, and what the push after it sent again."""
    url: str
    watch: FileWatch | ProxyWatch
    largest_frame: int
    indexed: dict[str, int] = field(default_factory=dict)   # object id -> bytes, indexed at the last kill
    indexed_packs: set[str] = field(default_factory=set)
    body: int = 0              # bytes of the pack left without its index at the last kill
    since: object = None       # the watch's mark at the last kill
    left_bodies: list[int] = field(default_factory=list)     # per kill: bytes of the unindexed pack (0: none)
    resent: list[int] = field(default_factory=list)          # per kill: bytes the next run sent again, at most

    def _check_resent(self, blobs) -> None:
        """The run(s) since the last kill sent no pack the remote had indexed then, and no
        object indexed then in a new pack, so what they sent again is at most the one body
        left without its index (one pack)."""
        if self.since is None:
            return
        bodies = self.watch.bodies_since(self.since)
        again = {k: n for k, n in bodies.items() if k in self.indexed_packs}
        assert not again, f"packs the remote had indexed were sent again: {again}"
        for key in blobs.list(PACKS):
            if key.endswith(".idx") and key[: -len(".idx")] + ".pack" not in self.indexed_packs:
                dup = sum(n for o, _off, n in decode_index(blobs.get(key)) if o in self.indexed)
                assert dup == 0, f"{key}: {dup} bytes of objects the remote had indexed were sent again"
        self.resent.append(min(self.body, sum(bodies.values())))
        assert self.body <= PACK + self.largest_frame   # one pack's bytes

    def after_kill(self) -> None:
        blobs = open_blobs(self.url)
        self._check_resent(blobs)
        self.since = self.watch.mark()
        if blobs.head(MARKER) is None:   # killed before the first write: still empty
            self.left_bodies.append(0)
            self.body = 0
            return
        rep = fsck_remote(blobs)
        assert rep.ok, rep.problems
        assert len(rep.unindexed) <= 1, f"a killed push left {len(rep.unindexed)} packs without their index"
        self.body = blobs.head(rep.unindexed[0]).size if rep.unindexed else 0
        self.left_bodies.append(self.body)
        self.indexed, self.indexed_packs = {}, set()
        for key in blobs.list(PACKS):
            if key.endswith(".idx"):
                self.indexed_packs.add(key[: -len(".idx")] + ".pack")
                self.indexed.update((o, n) for o, _off, n in decode_index(blobs.get(key)))

    def after_last(self) -> None:
        self._check_resent(open_blobs(self.url))


def test_kill_push_fetch_and_clone_at_random_moments(tmp_path):
    (tmp_path / "remote").mkdir()
    (tmp_path / "scratch").mkdir()
    kill_loops(tmp_path, f"file://{tmp_path / 'remote'}", f"file://{tmp_path / 'scratch'}",
               FileWatch(str(tmp_path / "remote")))


def kill_loops(tmp_path, url: str, scratch_url: str, watch: FileWatch | ProxyWatch, *,
               endpoint: str | None = None) -> None:
    """The loops against the remote at ``url`` (``scratch_url``: another empty remote of
    the same kind, to time an uninterrupted push; ``watch``: sees the pack bodies pushes
    send there; ``endpoint``: the service URL the commands use)."""
    rng = random.Random(int(os.environ.get("CORALFS_KILL_SEED", "1")))
    src = str(tmp_path / "src")
    run_cli("init", src)
    _series(tmp_path, src, range(4))
    ep = ["--endpoint", endpoint] if endpoint else []
    run_cli("remote", "add", "origin", url, *ep, repo=src)
    run_cli("remote", "add", "scratch", scratch_url, *ep, repo=src)
    w_push = _work_time(_journal_written(src, "scratch"), "push", "scratch", "main", repo=src)

    repo = Repository.open(src)
    state = PushKills(url, watch, max(repo.store.size(o) for o in repo.store))
    repo.close()

    def after_push_kill() -> None:
        state.after_kill()
        _fsck_ok(src)

    kills = {}
    kills["push"], _ = _kill_loop(rng, w_push, _journal_written(src, "origin"), "push", "origin", "main", repo=src,
                                  after=after_push_kill, second=watch.body_landed)
    if url.startswith("file://"):   # the killed uploads' temp files, left long enough to be abandoned
        old = time.time() - ABANDONED_AFTER - 60
        for d, _s, names in os.walk(url[len("file://"):]):
            for n in names:
                if n.startswith(".tmp-"):
                    os.utime(os.path.join(d, n), (old, old))
    run_cli("push", "origin", "main", repo=src)
    state.after_last()
    blobs = open_blobs(url)
    assert RemoteRefs(blobs).read(HEADS + "main") == Repository.open(src).branch_head("main")
    assert fsck_remote(blobs).unindexed == []   # the last push removed what the killed ones left
    if url.startswith("file://"):   # and a directory's temp files of the killed pack uploads
        packs = os.path.join(url[len("file://"):], PACKS.rstrip("/"))
        assert [n for _d, _s, names in os.walk(packs) for n in names if n.startswith(".tmp-")] == []

    # clone, killed: the same command finishes it
    dest = str(tmp_path / "clone")
    timed = str(tmp_path / "clone-timed")
    w_clone = _work_time(_new_object_file(timed), "clone", url, timed, *ep)

    def cloned() -> bool:   # killed after its last step: complete (a clone into it is refused)
        return os.path.exists(dest) and not os.path.exists(os.path.join(dest, "remote-journal", "clone.json"))

    def clone_killed() -> None:
        _fsck_ok(dest)
        assert fsck_remote(blobs).ok

    kills["clone"], finished = _kill_loop(rng, w_clone, _new_object_file(dest), "clone", url, dest, *ep,
                                          after=clone_killed, done=cloned)
    if not finished and not cloned():
        run_cli("clone", url, dest, *ep)   # the same command continues the interrupted clone
    revs = [f"main~{i}" for i in range(4)]
    assert exports(Repository.open(dest), tmp_path / "e1", revs) == exports(Repository.open(src), tmp_path / "e2", revs)

    # fetch, killed: new commits on the remote, the clone fetches them
    _series(tmp_path, src, range(4, 7))
    run_cli("push", "origin", "main", repo=src)
    w_fetch = _work_time(_new_object_file(timed), "fetch", repo=timed)
    kills["fetch"], _ = _kill_loop(rng, w_fetch, _new_object_file(dest), "fetch", repo=dest, after=clone_killed)
    run_cli("pull", repo=dest)
    revs = [f"main~{i}" for i in range(7)]
    assert exports(Repository.open(dest), tmp_path / "e3", revs) == exports(Repository.open(src), tmp_path / "e4", revs)
    _fsck_ok(dest)
    assert fsck_remote(blobs).ok
    print(f"\nkills {kills}; work s: push {w_push:.2f} clone {w_clone:.2f} fetch {w_fetch:.2f}; "
          f"unindexed bodies left per push kill {state.left_bodies}; re-sent at most {state.resent}")
    report = os.environ.get("CORALFS_KILL_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps({"url": url.split(":", 1)[0], "kills": kills, "left": state.left_bodies,
                                "resent": state.resent}) + "\n")
    assert min(kills.values()) >= 1, kills   # each of the three was killed mid-work
