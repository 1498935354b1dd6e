"""Who may use a mount, through the kernel: a second uid (a forked child that drops to
65534) is kept out of a default mount; with --allow-other it reads what the modes allow
and nothing more, and never reaches the control file; commits are authored by the mount
owner. Also the control protocol and name limits through a real mount, and a failing
auto-commit shown by `status --mount`."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import tempfile
import time

import numpy as np
import pytest
from safetensors.numpy import save, save_file

from coralfs.fs.lifecycle import mount_info
from coralfs.fs.writable.control import request
from tests.conftest import run_cli
from tests.mount.conftest import as_user, mounted

pytestmark = pytest.mark.mount

NOBODY = 65534


@pytest.fixture
def public(tmp_path):
    """A directory every uid can traverse (pytest's own tmp dirs are 0700), with a
    repository of one commit: a file, an executable file and a directory."""
    d = tempfile.mkdtemp(prefix="coralfs-access-", dir="/tmp")
    os.chmod(d, 0o755)
    src = os.path.join(d, "src")
    os.makedirs(os.path.join(src, "sub"))
    save_file({"w": np.arange(4096, dtype=np.float32)}, os.path.join(src, "model.safetensors"))
    with open(os.path.join(src, "run.sh"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(src, "run.sh"), 0o755)
    with open(os.path.join(src, "sub", "notes.txt"), "w") as f:
        f.write("hello")
    repo = os.path.join(d, "repo")
    run_cli("init", repo)
    run_cli("commit", src, "-m", "one", repo=repo)
    try:
        yield d, repo, src
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(attempts: dict) -> dict:
    """Run each attempt in a forked child that dropped to uid/gid 65534 (see as_user)."""
    return as_user(NOBODY, NOBODY, attempts, umask=None)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f"read {len(f.read())}"


def _open(path: str, flags: int, mode: int = 0o644) -> None:
    os.close(os.open(path, flags, mode))


def _mount_options(mp: str) -> set[str]:
    with open("/proc/mounts") as f:
        for ln in f:
            parts = ln.split()
            if parts[1] == os.path.realpath(mp):
                return set(parts[3].split(","))
    raise AssertionError(f"{mp} is not mounted")


def test_a_second_uid_cannot_use_a_default_mount(public):
    d, repo, _src = public
    ro, rw = os.path.join(d, "ro"), os.path.join(d, "rw")
    with mounted(repo, ro, "main"), mounted(repo, rw, None, "--write"):
        assert "allow_other" not in _mount_options(ro) and "allow_other" not in _mount_options(rw)
        assert _read(os.path.join(ro, "model.safetensors")).startswith("read ")  # the owner reads
        got = as_nobody({
            "ro read": lambda: _read(os.path.join(ro, "model.safetensors")),
            "ro stat": lambda: os.stat(ro),
            "rw read": lambda: _read(os.path.join(rw, "model.safetensors")),
            "rw control": lambda: _open(os.path.join(rw, ".coral", "control"), os.O_WRONLY),
            "rw create": lambda: _open(os.path.join(rw, "x"), os.O_WRONLY | os.O_CREAT),
        })
        assert got == {k: "EACCES" for k in got}, got
        assert request(rw, {"op": "status"})["changes"] == []


def test_allow_other_lets_others_read_as_the_modes_say_but_never_control(public):
    d, repo, src = public
    ro, rw = os.path.join(d, "ro"), os.path.join(d, "rw")
    size = os.path.getsize(os.path.join(src, "model.safetensors"))
    with mounted(repo, ro, "main", "--allow-other"), mounted(repo, rw, None, "--write", "--allow-other"):
        for mp in (ro, rw):
            assert {"allow_other", "default_permissions", "nosuid", "nodev"} <= _mount_options(mp)
        # What the mounts report: the tree's modes, everything owned by the mount owner.
        modes = {p: os.stat(os.path.join(rw, p)) for p in ("model.safetensors", "run.sh", "sub", ".coral/control")}
        assert {p: stat.S_IMODE(s.st_mode) for p, s in modes.items()} == {
            "model.safetensors": 0o644, "run.sh": 0o755, "sub": 0o755, ".coral/control": 0o600}
        assert {s.st_uid for s in modes.values()} == {os.getuid()}
        assert stat.S_IMODE(os.stat(os.path.join(ro, "model.safetensors")).st_mode) == 0o444
        with open(os.path.join(rw, "sub", "notes.txt"), "w") as f:  # the owner stages a change
            f.write("root's change")
        fuzz = json.dumps({"op": "commit", "message": "by nobody"}).encode() + b"\n"

        def send_control() -> None:
            fd = os.open(os.path.join(rw, ".coral", "control"), os.O_RDWR)
            try:
                os.write(fd, fuzz)
            finally:
                os.close(fd)

        got = as_nobody({
            "ro read": lambda: _read(os.path.join(ro, "model.safetensors")),
            "rw read": lambda: _read(os.path.join(rw, "model.safetensors")),
            "rw list": lambda: ",".join(sorted(os.listdir(rw))),
            "rw status.json": lambda: _read(os.path.join(rw, ".coral", "status.json"))[:4],
            "ro write": lambda: _open(os.path.join(ro, "model.safetensors"), os.O_WRONLY),
            "control write": lambda: _open(os.path.join(rw, ".coral", "control"), os.O_WRONLY),
            "control read": lambda: _open(os.path.join(rw, ".coral", "control"), os.O_RDONLY),
            "control request": send_control,
            "write a file": lambda: _open(os.path.join(rw, "model.safetensors"), os.O_WRONLY),
            "truncate": lambda: os.truncate(os.path.join(rw, "model.safetensors"), 0),
            "create": lambda: _open(os.path.join(rw, "new.bin"), os.O_WRONLY | os.O_CREAT),
            "create in sub": lambda: _open(os.path.join(rw, "sub", "new.bin"), os.O_WRONLY | os.O_CREAT),
            "mkdir": lambda: os.mkdir(os.path.join(rw, "d")),
            "unlink": lambda: os.unlink(os.path.join(rw, "run.sh")),
            "rename": lambda: os.rename(os.path.join(rw, "run.sh"), os.path.join(rw, "sub", "run.sh")),
            "chmod": lambda: os.chmod(os.path.join(rw, "model.safetensors"), 0o666),
        })
        assert got == {
            "ro read": f"read {size}", "rw read": f"read {size}",
            "rw list": ".coral,model.safetensors,run.sh,sub", "rw status.json": "read",
            "ro write": "EROFS", "control write": "EACCES", "control read": "EACCES",
            "control request": "EACCES", "write a file": "EACCES", "truncate": "EACCES", "create": "EACCES",
            "create in sub": "EACCES", "mkdir": "EACCES", "unlink": "EACCES", "rename": "EACCES",
            "chmod": "EPERM"}, got
        st = request(rw, {"op": "status"})
        assert [(c["status"], c["path"]) for c in st["changes"]] == [("modified", "sub/notes.txt")]
        # The owner commits; the author is the owner whatever a request claims.
        refused = request(rw, {"op": "commit", "message": "forged", "author": "mallory"})
        assert not refused["ok"] and "owner" in refused["error"]
        p = run_cli("commit", "--mount", rw, "-m", "x", "--author", "mallory", check=False)
        assert p.returncode != 0 and "owner" in p.stderr and "Traceback" not in p.stderr
        assert request(rw, {"op": "commit", "message": "by the owner"})["commit"]
    from coralfs import Repository
    r = Repository.open(repo)
    c = r.read_commit(r.branch_head("main"))
    assert c.message == "by the owner" and c.author == r.identity() != "mallory"
    r.close()


def test_control_protocol_and_long_names_through_the_kernel(public, tmp_path):
    d, repo, _src = public
    mp = os.path.join(d, "rw")
    with mounted(repo, mp, None, "--write"):
        ctl = os.path.join(mp, ".coral", "control")
        for line, why in [(b'{"op": "commit", "message": 5}', "message must be a string"),
                          (b'{"op": "commit", "message": "m", "metadata": "x"}', "metadata must be an object"),
                          (b"[" * 200_000, "nested too deeply"),
                          (b"not json", "one JSON object a line"),
                          (b"7", "got a JSON number"),
                          (b"x" * (3 << 20), "at most")]:
            fd = os.open(ctl, os.O_RDWR)
            try:
                os.write(fd, line + b"\n")
                answer = json.loads(os.pread(fd, 1 << 20, 0))
            finally:
                os.close(fd)
            assert not answer["ok"] and why in answer["error"], (line[:40], answer)
        long = "n" * 256
        for name, fn in [("create", lambda: _open(os.path.join(mp, long), os.O_WRONLY | os.O_CREAT)),
                         ("mkdir", lambda: os.mkdir(os.path.join(mp, long))),
                         ("rename", lambda: os.rename(os.path.join(mp, "run.sh"), os.path.join(mp, long))),
                         ("component", lambda: os.stat(os.path.join(mp, "sub", long, "x"))),
                         ("wide", lambda: _open(os.path.join(mp, "é" * 128), os.O_WRONLY | os.O_CREAT))]:
            with pytest.raises(OSError) as e:
                fn()
            assert e.value.errno == errno.ENAMETOOLONG, name
        assert os.statvfs(mp).f_namemax == 255
        with open(os.path.join(mp, "n" * 255), "w") as f:
            f.write("fits")
        assert request(mp, {"op": "commit", "message": "long"})["commit"]
        log = mount_info(mp)["log_file"]
    with open(log) as f:
        assert "Traceback" not in f.read()
    out = str(tmp_path / "out")
    run_cli("export", "main", out, repo=repo)
    with open(os.path.join(out, "n" * 255)) as f:
        assert f.read() == "fits"


def _status(mp: str) -> str:
    return run_cli("status", "--mount", mp).stdout


def test_a_failing_auto_commit_shows_in_status_and_backs_off(public):
    d, repo, _src = public
    mp = os.path.join(d, "rw")
    good = save({"w": np.ones((64, 64), dtype=np.float32)})
    with mounted(repo, mp, None, "--write", "--auto-commit", "0.2"):
        from tests.mount.test_staging_mount import head
        before = head(repo)
        with open(os.path.join(mp, "ckpt.safetensors"), "wb") as f:
            f.write(good[: len(good) // 2])  # a writer killed halfway
        written = time.monotonic()
        deadline = time.monotonic() + 30
        while "auto-commit failed" not in _status(mp) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # polled ~12 times meanwhile: only the attempts (backed off) may log
        line = [ln for ln in _status(mp).splitlines() if "auto-commit failed" in ln]
        with open(os.path.join(mp, ".coral", "status.json")) as f:
            err = json.load(f)["auto_commit"]["last_error"]
        elapsed = time.monotonic() - written
        with open(mount_info(mp)["log_file"]) as f:
            logged = f.read().count("auto-commit failed")
        assert len(line) == 1 and "ckpt.safetensors:" in line[0] and "attempt(s)" in line[0], line
        assert err["path"] == "ckpt.safetensors" and err["time"] <= time.time()
        assert logged in (err["attempts"], err["attempts"] + 1)  # one line an attempt
        # n attempts need 1 + 2 + ... + 2**(n-2) seconds between them (a slow machine makes fewer)
        assert 1 <= err["attempts"] <= math.log2(elapsed + 1) + 1, (err, elapsed)
        assert head(repo) == before
        with open(os.path.join(mp, "ckpt.safetensors"), "wb") as f:  # saved again, whole
            f.write(good)
        deadline = time.monotonic() + 30
        while head(repo) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert head(repo) != before
        assert "auto-commit failed" not in _status(mp)


def test_allow_other_without_root_needs_user_allow_other(tmp_path, monkeypatch):
    from coralfs.fs import lifecycle as daemon
    conf = tmp_path / "fuse.conf"
    conf.write_text("# user_allow_other\nmount_max = 1000\n")
    assert not daemon._user_allow_other(str(conf)) and not daemon._user_allow_other(str(tmp_path / "none"))
    conf.write_text("mount_max = 1000\n  user_allow_other  # let users share mounts\n")
    assert daemon._user_allow_other(str(conf))
    mp = tmp_path / "mp"
    mp.mkdir()
    monkeypatch.setattr(daemon.os, "getuid", lambda: 1000)  # an ordinary user...
    monkeypatch.setattr(daemon, "_user_allow_other", lambda: False)  # ...on a host without it
    with pytest.raises(daemon.MountError, match="user_allow_other"):
        daemon.preflight(daemon.MountSpec(repo=str(tmp_path), mountpoint=str(mp), allow_other=True))
    daemon.preflight(daemon.MountSpec(repo=str(tmp_path), mountpoint=str(mp)))  # fine without it
