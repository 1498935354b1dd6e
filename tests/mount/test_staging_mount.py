"""Writable staging mounts through the kernel: real frameworks save into them by path, commits
are byte-identical and stored as deltas, a training loop auto-commits, kill -9 loses nothing
fsynced, concurrent writers and rename races, a full spool gives ENOSPC."""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import coralfs
from coralfs.fs.writable.control import request
from tests.conftest import DELTA_CODEC_NAMES, PYTHON, minilm_dir, run_cli, sha, tree_sha
from tests.mount.conftest import force_unmount, mounted

pytestmark = pytest.mark.mount


@contextlib.contextmanager
def staging(repo: str, mp: str, *extra: str):
    with mounted(repo, mp, None, "--write", *extra) as pid:
        yield pid


def head(repo: str, branch: str = "main") -> str | None:
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        h = r.branch_head(branch)
        return h.hex() if h else None
    finally:
        r.close()


def fsck_clean(repo: str) -> None:
    p = run_cli("fsck", repo=repo)
    assert "no problems" in p.stdout, p.stdout


@pytest.fixture
def repo(tmp_path):
    r = str(tmp_path / "repo")
    run_cli("init", r)
    return r


def _minilm_state(scale: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    sd = load_file(os.path.join(minilm_dir(), "model.safetensors"))
    if scale:
        g = torch.Generator().manual_seed(seed)
        sd = {k: (v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)) if v.is_floating_point() else v
              for k, v in sd.items()}
    return sd


def _save_everything(root: str, step: int, sd: dict[str, torch.Tensor]) -> None:
    """What trainers write: safetensors, a full torch checkpoint (temp-then-rename), h5py with
    random-order writes, numpy.save."""
    os.makedirs(root, exist_ok=True)
    save_file(sd, os.path.join(root, "model.safetensors"), metadata={"step": str(step)})
    torch.manual_seed(step)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Linear(128, 4))
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(8, 64)).sum().backward()
    opt.step()
    tmp = os.path.join(root, "training.pt.tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
    os.replace(tmp, os.path.join(root, "training.pt"))
    rng = np.random.default_rng(step)
    kernel = rng.standard_normal((256, 128)).astype(np.float32)
    with h5py.File(os.path.join(root, "weights.h5"), "w") as f:
        d = f.create_dataset("dense/kernel", shape=kernel.shape, dtype=np.float32)
        rows = list(range(0, 256, 32))
        random.Random(step).shuffle(rows)
        for r in rows:  # out-of-order writes
            d[r:r + 32] = kernel[r:r + 32]
        f.attrs["step"] = step
    np.save(os.path.join(root, "embeddings.npy"), rng.standard_normal((500, 64)).astype(np.float32))
    m = np.lib.format.open_memmap(os.path.join(root, "buffer.npy"), mode="w+", dtype=np.float32, shape=(256, 256))
    m[:] = rng.standard_normal((256, 256)).astype(np.float32)  # written through a shared mapping
    m.flush()
    del m


def _check_loads(root: str, step: int, sd: dict[str, torch.Tensor]) -> None:
    got = load_file(os.path.join(root, "model.safetensors"))
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    ck = torch.load(os.path.join(root, "training.pt"), weights_only=True)
    assert ck["step"] == step and "optimizer" in ck
    rng = np.random.default_rng(step)
    with h5py.File(os.path.join(root, "weights.h5"), "r") as f:
        assert np.array_equal(f["dense/kernel"][:], rng.standard_normal((256, 128)).astype(np.float32))
        assert f.attrs["step"] == step
    assert np.array_equal(np.load(os.path.join(root, "embeddings.npy")),
                          rng.standard_normal((500, 64)).astype(np.float32))
    assert np.array_equal(np.load(os.path.join(root, "buffer.npy")), rng.standard_normal((256, 256)).astype(np.float32))


def test_frameworks_save_into_the_mount_then_commits_are_exact_and_deltas(repo, tmp_path):
    from transformers import AutoModel
    mp, ro = str(tmp_path / "stage"), str(tmp_path / "ro")
    with staging(repo, mp):
        sd = _minilm_state()
        _save_everything(os.path.join(mp, "ckpt"), 1, sd)
        model = AutoModel.from_pretrained(minilm_dir())
        model.save_pretrained(os.path.join(mp, "hf"))
        _check_loads(os.path.join(mp, "ckpt"), 1, sd)
        saved1 = tree_sha(mp)
        p = run_cli("commit", "--mount", mp, "-m", "step 1", "--metric", "loss=1.5", repo=repo)
        assert "[main " in p.stdout and "A ckpt/model.safetensors" in p.stdout
        first = head(repo)
        assert json.load(open(os.path.join(mp, ".coral", "commit.json")))["id"] == first
        assert tree_sha(mp) == saved1  # the mount keeps serving the new head

        # Step 2: slightly trained weights saved over the same paths.
        sd2 = _minilm_state(1e-5, seed=2)  # about one optimizer step at a fine-tuning learning rate
        _save_everything(os.path.join(mp, "ckpt"), 2, sd2)
        _check_loads(os.path.join(mp, "ckpt"), 2, sd2)
        saved2 = tree_sha(mp)
        got = coralfs.commit_mount(mp, "step 2", metadata={"step": 2})  # from a training script
        assert got["ok"] and got["commit"]
        changed = {c["path"] for c in got["changes"]}
        assert "ckpt/model.safetensors" in changed and not any(p.startswith("hf/") for p in changed)
        size = os.path.getsize(os.path.join(mp, "ckpt", "model.safetensors"))
        assert got["stored"] < 0.6 * got["logical"], got  # deltas against step 1 (a copy: ~0.85)
        assert sum(got["codecs"].get(n, 0) for n in DELTA_CODEC_NAMES) > 0, got
        assert got["logical"] >= size
    with mounted(repo, ro, first):
        assert tree_sha(ro) == saved1
        m = AutoModel.from_pretrained(os.path.join(ro, "hf"))
        ref = AutoModel.from_pretrained(minilm_dir())
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values()))
        del m  # its weights map the mount's file
        gc.collect()
    with mounted(repo, ro, "main"):
        assert tree_sha(ro) == saved2
        _check_loads(os.path.join(ro, "ckpt"), 2, sd2)
    fsck_clean(repo)


TRAIN = r"""
import hashlib, os, sys, time, torch
from safetensors.torch import save_file
mp, every, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
for step in range(1, steps + 1):
    x = torch.randn(16, 32)
    loss = ((net(x) - x.sum(1, keepdim=True)) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    time.sleep(0.75)  # the rest of a training step
    if step % every == 0:
        d = os.path.join(mp, "checkpoint")
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, "model.safetensors.tmp")
        save_file(dict(net.state_dict()), tmp, metadata={"step": str(step)})
        os.replace(tmp, os.path.join(d, "model.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "step": step}, os.path.join(d, "optimizer.pt"))
        with open(os.path.join(d, "model.safetensors"), "rb") as f:
            print(step, hashlib.sha256(f.read()).hexdigest(), flush=True)
"""


def test_training_loop_with_auto_commit_gives_one_commit_per_checkpoint(repo, tmp_path):
    """A trainer saving every 4 steps (3 s apart) into a mount with a 1 s auto-commit."""
    import hashlib
    mp = str(tmp_path / "stage")
    with staging(repo, mp, "--auto-commit", "1"):
        out = subprocess.run([PYTHON, "-c", TRAIN, mp, "4", "12"], capture_output=True, text=True,
                             check=True, timeout=120).stdout
        saved = [line.split()[1] for line in out.splitlines()]
        assert len(saved) == 3
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and request(mp, {"op": "status"})["changes"]:
            time.sleep(0.1)
        time.sleep(1.5)  # and no further commit once nothing changes
        st = request(mp, {"op": "status"})
        assert st["changes"] == [] and st["counters"]["auto_commits"] == 3
    from coralfs import Repository
    r = Repository.open(repo)
    log = list(r.log("main"))
    assert len(log) == 3
    for (cid, c), digest in zip(log, reversed(saved)):
        assert c.message.startswith("auto-commit: checkpoint/")
        assert c.metadata.get("auto_commit") is True
        f = r.open_file(r.tree_of(cid).entries["checkpoint/model.safetensors"].file)
        assert hashlib.sha256(f.read(0, f.size)).hexdigest() == digest
    r.close()


WRITER = r"""
import os, sys, hashlib
mp, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    data = os.urandom(256 * 1024 + i)
    p = os.path.join(mp, f"f{i}.bin")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    print(p, hashlib.sha256(data).hexdigest(), flush=True)
    with open(os.path.join(mp, "unsynced.bin"), "ab") as f:
        f.write(os.urandom(1 << 20))
"""


def _daemon_pid(mp: str) -> int:
    p = run_cli("mounts", "--json")
    for m in json.loads(p.stdout):
        if m["mountpoint"] == os.path.realpath(mp):
            return m["pid"]
    raise AssertionError(f"{mp} is not listed by `coralfs mounts`")


def test_kill9_during_writes_loses_nothing_fsynced(repo, tmp_path):
    mp = str(tmp_path / "stage")
    os.makedirs(mp)
    synced: dict[str, str] = {}
    for round_ in range(3):
        with staging(repo, mp):
            pid = _daemon_pid(mp)
            w = subprocess.Popen([PYTHON, "-c", WRITER, os.path.join(mp, f"r{round_}"), "1000"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            os.makedirs(os.path.join(mp, f"r{round_}"), exist_ok=True)
            time.sleep(0.6 + 0.3 * round_)
            os.kill(pid, signal.SIGKILL)
            out, _ = w.communicate(timeout=60)
            for line in out.splitlines():
                path, digest = line.split()
                synced[os.path.relpath(path, mp)] = digest
        force_unmount(mp)
    assert len(synced) >= 3
    with staging(repo, mp):
        for rel, digest in synced.items():
            assert sha(os.path.join(mp, rel)) == digest, rel
        run_cli("commit", "--mount", mp, "-m", "after crashes", repo=repo)
        run_cli("umount", mp)
    fsck_clean(repo)


COMMITTER = r"""
import sys
import coralfs
from coralfs.fs.writable.control import request
print(request(sys.argv[1], {"op": "commit", "message": "interrupted"}), flush=True)
"""


def test_kill9_during_commits_leaves_the_branch_at_a_complete_commit(repo, tmp_path):
    mp = str(tmp_path / "stage")
    os.makedirs(mp)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4 << 20) // 4 * 12).astype(np.float32)  # 48 MB
    for round_ in range(4):
        with staging(repo, mp):
            pid = _daemon_pid(mp)
            w[round_::7] += 0.01
            np.save(os.path.join(mp, "w.npy"), w)
            expect = sha(os.path.join(mp, "w.npy"))
            before = head(repo)
            c = subprocess.Popen([PYTHON, "-c", COMMITTER, mp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(random.Random(round_).uniform(0.05, 0.6))
            os.kill(pid, signal.SIGKILL)
            c.wait(30)
        force_unmount(mp)
        fsck_clean(repo)
        after = head(repo)
        with staging(repo, mp):
            assert sha(os.path.join(mp, "w.npy")) == expect  # nothing lost either way
            st = request(mp, {"op": "status"})
            if after != before:  # the commit landed: it holds the file, nothing is left staged
                assert st["changes"] == [] and st["base"] == after
            else:
                assert [c["path"] for c in st["changes"]] == ["w.npy"]
                assert request(mp, {"op": "commit", "message": f"round {round_}"})["ok"]
        force_unmount(mp)
    with mounted(repo, str(tmp_path / "ro"), "main"):
        assert sha(os.path.join(tmp_path, "ro", "w.npy")) == expect
    fsck_clean(repo)


def test_concurrent_writers_and_rename_races(repo, tmp_path):
    mp = str(tmp_path / "stage")
    contents: dict[str, bytes] = {}
    errors: list[BaseException] = []
    latest: list[bytes] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        try:
            for i in range(6):
                data = os.urandom(300_000 + t * 1000 + i)
                name = os.path.join(mp, f"w{t}", f"part{i}.bin")
                with open(name + ".tmp", "wb") as f:
                    f.write(data)
                os.replace(name + ".tmp", name)
                tmp = os.path.join(mp, f"latest.{t}.{i}.tmp")
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, os.path.join(mp, "latest.bin"))  # all threads race here
                with lock:
                    contents[f"w{t}/part{i}.bin"] = data
                    latest.append(data)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    with staging(repo, mp):
        for t in range(4):
            os.mkdir(os.path.join(mp, f"w{t}"))
        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        for rel, data in contents.items():
            with open(os.path.join(mp, rel), "rb") as f:
                assert f.read() == data, rel
        with open(os.path.join(mp, "latest.bin"), "rb") as f:
            assert f.read() in latest
        names = sorted(os.listdir(mp))
        assert names == [".coral", "latest.bin", "w0", "w1", "w2", "w3"]
        st = request(mp, {"op": "status"})
        assert sorted(c["path"] for c in st["changes"]) == sorted(list(contents) + ["latest.bin"])
        assert request(mp, {"op": "commit", "message": "races"})["ok"]
        # the spool holds nothing once committed: no orphaned temp files
        assert os.listdir(os.path.join(repo, "staging", "branches", "main", "spool")) == []


def test_a_full_spool_gives_enospc_and_keeps_what_was_written(repo, tmp_path):
    mp = str(tmp_path / "stage")
    spool = os.path.join(repo, "staging")
    os.makedirs(spool, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", spool], check=True)
    try:
        with staging(repo, mp):
            kept = os.urandom(8 << 20)
            with open(os.path.join(mp, "kept.bin"), "wb") as f:
                f.write(kept)
            with pytest.raises(OSError) as e:
                with open(os.path.join(mp, "huge.bin"), "wb") as f:
                    for _ in range(64):
                        f.write(os.urandom(1 << 20))
                        f.flush()
            assert e.value.errno == errno.ENOSPC
            assert os.statvfs(mp).f_bavail * os.statvfs(mp).f_frsize < 1 << 20  # df shows the spool
            with open(os.path.join(mp, "kept.bin"), "rb") as f:
                assert f.read() == kept
            os.unlink(os.path.join(mp, "huge.bin"))
            got = request(mp, {"op": "commit", "message": "after ENOSPC"})
            assert got["ok"] and [c["path"] for c in got["changes"]] == ["kept.bin"]
            run_cli("umount", mp)
    finally:
        force_unmount(mp)
        subprocess.run(["umount", spool], check=False)
    with mounted(repo, str(tmp_path / "ro"), "main"):
        with open(os.path.join(tmp_path, "ro", "kept.bin"), "rb") as f:
            assert f.read() == kept
    fsck_clean(repo)


def test_umount_refuses_to_drop_changes_and_a_remount_resumes_them(repo, tmp_path):
    mp = str(tmp_path / "stage")
    with staging(repo, mp):
        with open(os.path.join(mp, "notes.txt"), "w") as f:
            f.write("step 1")
        p = run_cli("umount", mp, check=False)
        assert p.returncode == 6 and "uncommitted" in p.stderr and "--keep" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        p = run_cli("status", "--mount", mp, repo=repo)
        assert "A notes.txt" in p.stdout
        run_cli("umount", mp, "--keep")
        p = run_cli("status", repo=repo)
        assert "Staged on branch main" in p.stdout and "A notes.txt" in p.stdout
    with staging(repo, mp):
        with open(os.path.join(mp, "notes.txt")) as f:
            assert f.read() == "step 1"
        p = run_cli("umount", mp, "--commit", "-m", "from umount")
        assert "committed" in p.stdout
    assert head(repo) is not None
    p = run_cli("status", repo=repo)
    assert "Staged" not in p.stdout


def test_stash_through_the_cli(repo, tmp_path):
    mp = str(tmp_path / "stage")
    with staging(repo, mp):
        with open(os.path.join(mp, "a.txt"), "w") as f:
            f.write("one")
        p = run_cli("commit", mp, "-m", "one", repo=repo)  # the mount as a source commits through it
        assert "A a.txt" in p.stdout
        with open(os.path.join(mp, "a.txt"), "w") as f:
            f.write("two")
        p = run_cli("stash", "--mount", mp, "-m", "try two", repo=repo)
        assert "stash@{0}" in p.stdout
        time.sleep(1.2)  # the kernel's attribute cache (1 s) then sees the restored file
        with open(os.path.join(mp, "a.txt")) as f:
            assert f.read() == "one"
        assert "try two" in run_cli("stash", "list", repo=repo).stdout
        p = run_cli("stash", "pop", "--mount", mp, repo=repo)
        assert "M a.txt" in p.stdout
        time.sleep(1.2)
        with open(os.path.join(mp, "a.txt")) as f:
            assert f.read() == "two"
        run_cli("umount", mp, "--keep")
    # offline: the staging area is not served by a daemon now
    p = run_cli("stash", "-m", "offline", repo=repo)
    assert "stash@{0}" in p.stdout
    assert "Staged" not in run_cli("status", repo=repo).stdout
    run_cli("stash", "pop", repo=repo)
    assert "M a.txt" in run_cli("status", repo=repo).stdout


def test_writable_mount_errors(repo, tmp_path):
    mp = str(tmp_path / "stage")
    os.makedirs(mp)
    p = run_cli("mount", repo, mp + "@main", "--write", check=False)
    assert p.returncode == 6 and "--branch main" in p.stderr
    p = run_cli("mount", repo, mp, "--auto-commit", "5", check=False)
    assert p.returncode == 6 and "--write" in p.stderr
    p = run_cli("mount", repo, mp, "--write", "--branch", "bad..name", check=False)
    assert p.returncode != 0 and "bad..name" in p.stderr
    p = run_cli("commit", "--mount", mp, "-m", "x", repo=repo, check=False)
    assert p.returncode != 0 and "not a writable coralfs mount" in p.stderr
    with staging(repo, mp):
        other = str(tmp_path / "other")
        os.makedirs(other)
        p = run_cli("mount", repo, other, "--write", check=False)
        assert p.returncode != 0 and "in use" in p.stderr
        p = run_cli("stash", repo=repo, check=False)
        assert p.returncode != 0 and "--mount" in p.stderr
        with pytest.raises(OSError) as e:
            os.mkfifo(os.path.join(mp, "fifo"))  # (symlinks work now: issue 12)
        assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:
            open(os.path.join(mp, ".coral", "new"), "w")
        assert e.value.errno in (errno.EPERM, errno.EACCES)
        with open(os.path.join(mp, "bad.safetensors"), "wb") as f:
            f.write(b"\xff" * 32)
        p = run_cli("commit", "--mount", mp, "-m", "x", repo=repo, check=False)
        assert p.returncode == 2 and p.stderr.startswith("coralfs: error: bad.safetensors:")
        assert head(repo) is None
        os.unlink(os.path.join(mp, "bad.safetensors"))
        p = run_cli("mounts", repo=repo)
        assert "main (writable)" in p.stdout


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"daemon {pid} still runs")


def test_sigterm_keeps_acknowledged_writes(repo, tmp_path):
    import hashlib
    mp = str(tmp_path / "stage")
    with staging(repo, mp) as pid:
        data = os.urandom(24 << 20)
        fd = os.open(os.path.join(mp, "open.bin"), os.O_WRONLY | os.O_CREAT)
        try:
            os.write(fd, data)  # acknowledged, not fsynced, still open
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    force_unmount(mp)
    with staging(repo, mp):
        assert sha(os.path.join(mp, "open.bin")) == hashlib.sha256(data).hexdigest()


def test_umount_commit_of_a_killed_daemon_commits_nothing_and_keeps_the_changes(repo, tmp_path):
    mp = str(tmp_path / "stage")
    with staging(repo, mp) as pid:
        with open(os.path.join(mp, "a.txt"), "w") as f:
            f.write("kept")
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        p = run_cli("umount", mp, "--commit", "-m", "too late", check=False)
        assert p.returncode == 6 and "nothing was committed" in p.stderr
        assert head(repo) is None
        p = run_cli("umount", mp, check=False)
        assert p.returncode == 6 and "not mounted" in p.stderr
    with staging(repo, mp):
        run_cli("umount", mp, "--commit", "-m", "now")
    from coralfs import Repository
    r = Repository.open(repo)
    assert r.open_file(r.tree_of("main").entries["a.txt"].file).read(0, 4) == b"kept"
    r.close()


def test_cp_a_and_shutil_copy_keep_modes_times_and_bytes(repo, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "sub" / "w.bin").write_bytes(os.urandom(300_000))
    os.utime(src / "sub" / "w.bin", ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    mp = str(tmp_path / "stage")
    with staging(repo, mp):
        subprocess.run(["cp", "-a", str(src), os.path.join(mp, "copy")], check=True)
        shutil.copytree(src, os.path.join(mp, "tree"))  # copy2: chmod, utime, user xattrs
        for d in ("copy", "tree"):
            for rel in ("run.sh", "sub/w.bin"):
                a, b = os.stat(src / rel), os.stat(os.path.join(mp, d, rel))
                assert (a.st_mode, a.st_mtime_ns) == (b.st_mode, b.st_mtime_ns), (d, rel)
                assert sha(src / rel) == sha(os.path.join(mp, d, rel))
            assert os.stat(os.path.join(mp, d, "sub")).st_mode & 0o777 == os.stat(src / "sub").st_mode & 0o777
        request(mp, {"op": "commit", "message": "copied"})
    from coralfs import Repository
    r = Repository.open(repo)
    assert r.tree_of("main").entries["copy/run.sh"].mode == 0o755
    r.close()


def test_foreground_writable_mount_auto_commits_and_stops_on_ctrl_c(repo, tmp_path):
    mp = str(tmp_path / "stage")
    os.makedirs(mp)
    proc = subprocess.Popen([PYTHON, "-m", "coralfs", "mount", repo, mp, "--write", "--foreground",
                             "--auto-commit", "0.3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mounted branch main, writable,"), line + proc.stderr.read()
        with open(os.path.join(mp, "x.txt"), "w") as f:
            f.write("auto")
        deadline = time.monotonic() + 20
        while head(repo) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert head(repo) is not None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        with open("/proc/mounts") as f:
            assert not any(ln.split()[1] == os.path.realpath(mp) for ln in f)
    finally:
        proc.kill()
        force_unmount(mp)
    from coralfs import Repository
    r = Repository.open(repo)
    c = r.read_commit(r.branch_head("main"))
    assert c.message == "auto-commit: x.txt"
    r.close()


def test_auto_commit_follows_the_config_rules(repo, tmp_path):
    run_cli("config", "set", "staging.auto_commit_paths", "ckpt/*", repo=repo)
    run_cli("config", "set", "staging.keep_last", "1", repo=repo)
    mp = str(tmp_path / "stage")
    with staging(repo, mp, "--auto-commit", "0.3"):
        assert request(mp, {"op": "status"})["auto_commit"]["paths"] == ["ckpt/*"]
        with open(os.path.join(mp, "log.txt"), "w") as f:
            f.write("not a checkpoint")
        time.sleep(1.5)
        assert head(repo) is None  # log.txt does not count
        os.mkdir(os.path.join(mp, "ckpt"))
        for i in (1, 2):
            before = head(repo)
            with open(os.path.join(mp, "ckpt", "w.bin"), "wb") as f:
                f.write(os.urandom(1000))
            deadline = time.monotonic() + 20
            while head(repo) == before and time.monotonic() < deadline:
                time.sleep(0.1)
            assert head(repo) != before
        # The tags rotate right after the branch moves, in the same worker call: wait for
        # that before the daemon is stopped (the fixture kills it once unmounted).
        from coralfs import Repository
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with Repository.open(repo) as r:
                if sorted(r.tags()) == ["auto/main/2"]:
                    break
            time.sleep(0.1)
    r = Repository.open(repo)
    assert sorted(r.tags()) == ["auto/main/2"]  # keep_last 1
    assert "log.txt" in r.tree_of("main").entries  # counted or not, what is staged is committed
    r.close()



def test_a_writable_mount_imports_numpy_once_it_answers_before_any_read(repo, tmp_path):
    """The first read of a committed tensor through a writable mount (h5py's open of a
    file to edit) does not wait for numpy's import (50-70 ms): the daemon loads it right
    after the mount answers, with nothing read yet."""
    with staging(repo, str(tmp_path / "stage")) as pid:
        def loaded() -> bool:
            with open(f"/proc/{pid}/maps") as f:
                return "_multiarray_umath" in f.read()
        deadline = time.monotonic() + 20
        while not loaded() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loaded()
