"""Range copy-on-write through the kernel: writing into a committed file spools only the
ranges written (h5py "a" changing one dataset spools about that dataset), commits ingest
exactly what the same edit gives on local disk, seeded random writes, truncates and mmap
writes read back as a local file does, and a daemon killed with an overlay open leaves
each range written or committed, never garbage."""

from __future__ import annotations

import mmap
import os
import random
import shutil
import signal

import h5py
import numpy as np
import pytest

from coralfs.fs.writable.control import request
from tests.conftest import run_cli, sha
from tests.mount.conftest import force_unmount, mounted

pytestmark = pytest.mark.mount


def spool_bytes(repo: str) -> int:
    """Disk the staging area's spool holds (allocated blocks: spools of overlays are sparse)."""
    d = os.path.join(repo, "staging", "branches", "main", "spool")
    return sum(os.stat(os.path.join(d, n)).st_blocks * 512 for n in os.listdir(d))


def slack(repo: str, blocks: int = 16) -> int:
    """What a bound on spooled bytes allows beyond the bytes written: a few file-system
    blocks (partial blocks at range ends, HDF5's metadata rewrites, the overlay map)."""
    return blocks * os.statvfs(repo).f_bsize


def committed_bytes(repo: str, path: str, branch: str = "main") -> bytes:
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        view = r.open_file(r.tree_of(r.resolve(branch)).entries[path].file)
        return view.read(0, view.size)
    finally:
        r.close()


@pytest.fixture
def repo(tmp_path):
    r = str(tmp_path / "repo")
    run_cli("init", r)
    return r


def _h5_model(path: str, layers: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["step"] = 0
        for i in range(layers):
            f.create_dataset(f"layer{i}/kernel", data=rng.standard_normal(shape).astype(np.float32))
            f.create_dataset(f"layer{i}/bias", data=rng.standard_normal(shape[1]).astype(np.float32))


def test_h5py_append_edit_of_one_dataset_spools_that_dataset_and_commits_what_local_disk_holds(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _h5_model(str(src / "model.h5"), 8, (1024, 512))
    run_cli("commit", str(src), "-m", "trained", repo=repo)
    new = np.random.default_rng(1).standard_normal((1024, 512)).astype(np.float32)

    def edit(path: str) -> None:  # what a fine-tune script does: open "a", replace one dataset
        with h5py.File(path, "a") as f:
            f["layer5/kernel"][...] = new

    local = str(tmp_path / "local.h5")
    shutil.copy(src / "model.h5", local)
    edit(local)
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, None, "--write"):
        before = spool_bytes(repo)
        edit(os.path.join(mp, "model.h5"))
        spooled = spool_bytes(repo) - before
        size = os.path.getsize(local)
        assert new.nbytes <= spooled <= new.nbytes + slack(repo), (spooled, new.nbytes, size)
        assert sha(os.path.join(mp, "model.h5")) == sha(local)
        out = request(mp, {"op": "commit", "message": "fine-tuned one layer"})
        assert out["ok"] and out["commit"], out
        # Only the changed dataset is new in the store (the others are the commit's chunks).
        assert out["logical"] == size and out["stored"] <= new.nbytes + slack(repo), out
        assert spool_bytes(repo) == 0
        assert sha(os.path.join(mp, "model.h5")) == sha(local)
    assert committed_bytes(repo, "model.h5") == open(local, "rb").read()


class Twin:
    """One file through the mount and one on local disk, given the same operations."""

    def __init__(self, mnt_path: str, local_path: str) -> None:
        self.paths = (mnt_path, local_path)
        self.fds = [os.open(p, os.O_RDWR) for p in self.paths]

    def size(self) -> int:
        return os.fstat(self.fds[1]).st_size

    def pwrite(self, data: bytes, off: int) -> None:
        for fd in self.fds:
            assert os.pwrite(fd, data, off) == len(data)

    def truncate(self, size: int, by_path: bool) -> None:
        for fd, p in zip(self.fds, self.paths, strict=True):
            if by_path:
                os.truncate(p, size)
            else:
                os.ftruncate(fd, size)

    def mmap_write(self, data: bytes, off: int) -> None:
        for fd in self.fds:
            with mmap.mmap(fd, 0) as m:
                m[off:off + len(data)] = data
                m.flush()

    def check(self, off: int, n: int) -> None:
        got, want = (os.pread(fd, n, off) for fd in self.fds)
        assert got == want, f"{n} bytes at {off}: the mount differs from the local file"

    def reopen(self) -> None:
        self.close()
        self.fds = [os.open(p, os.O_RDWR) for p in self.paths]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seeded_random_writes_truncates_and_mmap_writes_match_a_local_file(repo, tmp_path, seed):
    rng = random.Random(seed)
    src = tmp_path / "src"
    src.mkdir()
    base = rng.randbytes(3 << 20)
    (src / "blob.bin").write_bytes(base)
    run_cli("commit", str(src), "-m", "base", repo=repo)
    local = str(tmp_path / "local.bin")
    shutil.copy(src / "blob.bin", local)
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, None, "--write"):
        t = Twin(os.path.join(mp, "blob.bin"), local)
        try:
            for step in range(60):
                size = t.size()
                op = rng.random()
                if op < 0.45:
                    t.pwrite(rng.randbytes(rng.randrange(1, 300_000)), rng.randrange(0, size + 100_000))
                elif op < 0.55:
                    t.truncate(rng.randrange(0, size * 3 // 2 + 2), by_path=rng.random() < 0.5)
                elif op < 0.65 and size > 0:
                    off = rng.randrange(0, size)
                    t.mmap_write(rng.randbytes(min(size - off, rng.randrange(1, 70_000))), off)
                elif op < 0.75:
                    os.fsync(t.fds[0])
                elif op < 0.82:
                    t.reopen()
                elif op < 0.86:  # a commit with the file open: it stays staged, under its overlay
                    assert request(mp, {"op": "commit", "message": f"step {step}"})["ok"]
                a = rng.randrange(0, t.size() + 1)
                t.check(a, rng.randrange(0, 400_000))
            t.check(0, t.size() + 10)
        finally:
            t.close()
        assert sha(os.path.join(mp, "blob.bin")) == sha(local)
        assert request(mp, {"op": "commit", "message": "the end"})["ok"]
    assert committed_bytes(repo, "blob.bin") == open(local, "rb").read()


WRITER = r"""
import os, sys
path, synced_end = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR)
# Synced first: these ranges must survive anything.
os.pwrite(fd, b"S" * 200_000, 100_000)
os.ftruncate(fd, synced_end)
os.fsync(fd)
print("synced", flush=True)
i = 0
while True:  # then unsynced writes, until the daemon dies under them
    off = 401408 + (i * 7919) % ((synced_end - 65536 - 401408) // 4096) * 4096  # past the synced ones
    try:
        os.pwrite(fd, bytes([65 + i % 26]) * 65536, off)
    except OSError:
        break
    print(off, i, flush=True)
    i += 1
"""


def test_kill9_with_an_overlay_open_leaves_each_range_written_or_committed(repo, tmp_path):
    import subprocess
    import time

    from tests.conftest import PYTHON
    src = tmp_path / "src"
    src.mkdir()
    base = random.Random(7).randbytes(4 << 20)
    (src / "blob.bin").write_bytes(base)
    run_cli("commit", str(src), "-m", "base", repo=repo)
    synced_end = 3 << 20  # the writer cuts the file here before its fsync
    synced = bytearray(base[:synced_end])
    synced[100_000:300_000] = b"S" * 200_000
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, None, "--write") as pid:
        w = subprocess.Popen([PYTHON, "-c", WRITER, os.path.join(mp, "blob.bin"), str(synced_end)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert w.stdout.readline().strip() == "synced"
        for _ in range(20):  # some unsynced writes acknowledged
            w.stdout.readline()
        os.kill(pid, signal.SIGKILL)
        out, _ = w.communicate(timeout=60)
        time.sleep(0.2)
    force_unmount(mp)
    with mounted(repo, mp, None, "--write"):
        got = open(os.path.join(mp, "blob.bin"), "rb").read()
        assert len(got) == synced_end
        assert got[100_000:300_000] == b"S" * 200_000
        # Every 64 KiB write after the fsync: each byte the write's or what was there before
        # (the synced state, committed bytes included), never a hole's zeros.
        for off in range(0, synced_end, 4096):
            block = got[off:off + 4096]
            if block != bytes(synced[off:off + 4096]):
                assert len(set(block)) == 1 and 65 <= block[0] < 91, f"garbage at {off}"
        assert request(mp, {"op": "commit", "message": "after the crash"})["ok"]
        assert committed_bytes(repo, "blob.bin") == got
