"""Real kernel mounts through the real CLI, always unmounted (fusermount3 -u, then -z -u,
then kill), and a shared repository of real checkpoints."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
import warnings

import h5py
import numpy as np
import pytest
import torch

from coralfs.objects.durable import pid_alive
from tests.conftest import minilm_dir, run_cli, sha, tree_sha

pytestmark = pytest.mark.mount


class HeldMount(UserWarning):
    """A mount whose daemon outlived its unmount: a lazy unmount waits for the last open
    file or mapping (a tensor of load_file, an mmap'ed array), and that costs a test 30 s."""


def force_unmount(mp: str, pid: int | None = None) -> None:
    subprocess.run(["fusermount3", "-u", mp], capture_output=True)
    with open("/proc/mounts") as f:
        still = any(ln.split()[1] == os.path.realpath(mp) for ln in f)
    if still:
        subprocess.run(["fusermount3", "-z", "-u", mp], capture_output=True)
    if pid:
        # Let the daemon finish what it writes on unmount (cache writes behind reads) as
        # `coralfs umount` does; a daemon that does not exit is killed.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
        if pid_alive(pid):
            warnings.warn(HeldMount(f"the daemon of {mp} did not exit within 30 s of its unmount (a file of it "
                                    "still open or memory-mapped, by this process too: del what maps it first)"))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def mounted(repo: str, mountpoint: str, ref: str | None = None, *extra: str):
    try:
        os.makedirs(mountpoint)
    except FileExistsError:  # also a stale mountpoint, which isdir() cannot see
        pass
    target = f"{mountpoint}@{ref}" if ref else mountpoint
    p = run_cli("mount", repo, target, *extra)
    assert "mounted" in p.stdout
    pid = int(p.stdout.split("(pid ")[1].split(",")[0])
    try:
        yield pid
    finally:
        force_unmount(mountpoint, pid)


def stats(mountpoint: str) -> dict:
    with open(os.path.join(mountpoint, ".coral", "stats.json")) as f:
        return json.load(f)


def _h5(path, seed):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs["seed"] = seed
        f.create_dataset("dense/kernel", data=rng.standard_normal((512, 256)).astype(np.float32))
        f.create_dataset("dense/bias", data=rng.standard_normal(256).astype(np.float32))


def _ckpt(path, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.Linear(256, 8))
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 128)).sum().backward()
    opt.step()
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": seed}, path)


@pytest.fixture(scope="session")
def series(tmp_path_factory):
    """A repository with two commits of a real model directory (MiniLM, a torch training
    checkpoint, an h5py file): tag v1 on the first, branch exp on the second."""
    base = tmp_path_factory.mktemp("series")
    repo = str(base / "repo")
    run_cli("init", repo)
    src = {}
    for i in (1, 2):
        d = base / f"src{i}"
        shutil.copytree(minilm_dir(), d)
        _ckpt(d / "checkpoint.pt", i)
        _h5(d / "weights.h5", i)
        np.save(d / "embeddings.npy", np.random.default_rng(i).standard_normal((1000, 64)).astype(np.float32))
        run_cli("commit", str(d), "-m", f"commit {i}", repo=repo)
        src[i] = str(d)
        if i == 1:
            run_cli("tag", "v1", "-m", "first", repo=repo)
    run_cli("branch", "exp", repo=repo)
    from coralfs import Repository
    r = Repository.open(repo)
    ids = {1: r.resolve("main~1").hex(), 2: r.resolve("main").hex()}
    return {"repo": repo, "src": src, "ids": ids, "base": base}


@pytest.fixture
def mnt(tmp_path):
    d = tmp_path / "mnt"
    d.mkdir()
    yield str(d)
    force_unmount(str(d))


__all__ = ["mounted", "sha", "tree_sha", "stats", "force_unmount", "time"]


def _errno_of(fn) -> str:
    try:
        got = fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return got if isinstance(got, str) else "ok"


def as_user(uid: int, gid: int, attempts: dict, groups: tuple[int, ...] = (),
            umask: int | None = 0o022) -> dict:
    """Run each attempt in a forked child that dropped to ``uid``/``gid`` (with the
    supplementary ``groups``); each gives "ok", a string it returns, or its errno name."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, just the attempts
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            if umask is not None:
                os.umask(umask)
            out = {name: _errno_of(fn) for name, fn in attempts.items()}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    buf = b""
    while chunk := os.read(r, 1 << 16):
        buf += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(buf)
