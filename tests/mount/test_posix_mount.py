"""The writable mount through the kernel as other users use it (--allow-other, mounted by
root, default_permissions): files belong to the uid/gid that made them, chown and chmod
follow POSIX for root and for others (a forked child that drops to another uid), writes
by others clear set-ID bits, and symbolic links, hard links, times and name limits behave
as on a local file system."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

from coralfs.fs.writable.control import request
from tests.conftest import run_cli
from tests.mount.conftest import as_user, mounted
from tests.mount.test_mount_access import public  # noqa: F401 - the fixture

pytestmark = pytest.mark.mount

ALICE, BOB, STAFF = 4321, 4322, 4400


def _make(path: str, mode: int = 0o644) -> str:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, mode))
    return "ok"


def _owner(path: str) -> str:
    s = os.lstat(path)
    return f"{s.st_uid}:{s.st_gid}:{stat.S_IMODE(s.st_mode):o}"


def _write(path: str, data: bytes) -> str:
    with open(path, "r+b") as f:
        f.write(data)
    return "ok"


@pytest.fixture
def rw(public):  # noqa: F811 - the fixture imported above
    d, repo, _src = public
    mp = os.path.join(d, "rw")
    with mounted(repo, mp, None, "--write", "--allow-other"):
        pub = os.path.join(mp, "pub")
        os.mkdir(pub)
        os.chmod(pub, 0o777)
        yield mp, repo


def test_files_belong_to_their_creator_and_only_root_gives_them_away(rw):
    mp, _repo = rw
    pub = os.path.join(mp, "pub")
    got = as_user(ALICE, ALICE, {
        "create": lambda: _make(os.path.join(pub, "a")),
        "mkdir": lambda: os.mkdir(os.path.join(pub, "d")),
        "symlink": lambda: os.symlink("a", os.path.join(pub, "l")),
        "owner": lambda: _owner(os.path.join(pub, "a")),
        "dir owner": lambda: _owner(os.path.join(pub, "d")),
        "link owner": lambda: _owner(os.path.join(pub, "l")).rsplit(":", 1)[0],
        "give away": lambda: os.chown(os.path.join(pub, "a"), BOB, -1),
        "to a group not mine": lambda: os.chown(os.path.join(pub, "a"), -1, BOB),
        "to my other group": lambda: os.chown(os.path.join(pub, "a"), -1, STAFF),
        "group now": lambda: _owner(os.path.join(pub, "a")),
        "mode 0": lambda: _make(os.path.join(pub, "zero"), 0) and _owner(os.path.join(pub, "zero")),
    }, groups=(STAFF,))
    assert got == {"create": "ok", "mkdir": "ok", "symlink": "ok", "owner": f"{ALICE}:{ALICE}:644",
                   "dir owner": f"{ALICE}:{ALICE}:755", "link owner": f"{ALICE}:{ALICE}", "give away": "EPERM",
                   "to a group not mine": "EPERM", "to my other group": "ok", "group now": f"{ALICE}:{STAFF}:644",
                   "mode 0": f"{ALICE}:{ALICE}:0"}, got
    os.chown(os.path.join(pub, "a"), 1234, 5678)  # root
    assert _owner(os.path.join(pub, "a")) == "1234:5678:644"
    got = as_user(ALICE, ALICE, {"chmod not mine": lambda: os.chmod(os.path.join(pub, "a"), 0o666),
                                 "write not mine": lambda: _write(os.path.join(pub, "a"), b"x")})
    assert got == {"chmod not mine": "EPERM", "write not mine": "EACCES"}, got
    st = os.stat(os.path.join(pub, "d"))  # what root sees is what the creator made
    assert (st.st_uid, st.st_gid) == (ALICE, ALICE)


def test_a_write_by_another_user_clears_set_id_bits_and_chown_clears_them(rw):
    mp, _repo = rw
    f = os.path.join(mp, "pub", "tool")
    _make(f)
    os.chmod(f, 0o6777)
    with open(f, "wb") as fh:  # root's write keeps them
        fh.write(b"#!/bin/sh\n")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o6777
    got = as_user(ALICE, ALICE, {"write": lambda: _write(f, b"#"), "mode": lambda: _owner(f)})
    assert got["write"] == "ok" and got["mode"].endswith(":777"), got
    g = os.path.join(mp, "pub", "mine")
    as_user(ALICE, ALICE, {"create": lambda: _make(g)}, groups=(STAFF,))
    os.chmod(g, 0o6755)
    got = as_user(ALICE, ALICE, {"chgrp": lambda: os.chown(g, -1, STAFF), "mode": lambda: _owner(g)}, groups=(STAFF,))
    assert got == {"chgrp": "ok", "mode": f"{ALICE}:{STAFF}:755"}, got


def test_ctime_atime_and_parent_times_through_the_kernel(rw):
    mp, _repo = rw
    p = os.path.join(mp, "f")
    _make(p)
    os.utime(p, ns=(1_000_000_000, 2_000_000_000))
    s = os.stat(p)
    assert (s.st_atime_ns, s.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
    os.utime(mp, ns=(5_000_000_000, 5_000_000_000))
    c0 = os.stat(p).st_ctime_ns
    time.sleep(0.01)  # ctime has nanoseconds, but the clock must move between the two calls
    os.chmod(p, 0o600)
    assert os.stat(p).st_ctime_ns > c0 and os.stat(p).st_mtime_ns == 2_000_000_000
    os.rename(p, os.path.join(mp, "g"))
    root = os.stat(mp)
    assert root.st_mtime_ns > 5_000_000_000 and root.st_ctime_ns > 5_000_000_000


def test_symlinks_hard_links_and_names_through_the_kernel(rw):
    mp, repo = rw
    with open(os.path.join(mp, "a.txt"), "w") as f:
        f.write("one")
    os.symlink("a.txt", os.path.join(mp, "latest"))
    assert os.readlink(os.path.join(mp, "latest")) == "a.txt"
    assert stat.S_ISLNK(os.lstat(os.path.join(mp, "latest")).st_mode)
    assert os.lstat(os.path.join(mp, "latest")).st_size == 5
    with open(os.path.join(mp, "latest")) as f:  # the kernel follows it
        assert f.read() == "one"
    os.link(os.path.join(mp, "a.txt"), os.path.join(mp, "hard"))
    a, h = os.stat(os.path.join(mp, "a.txt")), os.stat(os.path.join(mp, "hard"))
    assert a.st_ino == h.st_ino and a.st_nlink == h.st_nlink == 2
    with open(os.path.join(mp, "hard"), "r+") as f:
        f.write("ONE")
    with open(os.path.join(mp, "a.txt")) as f:
        assert f.read() == "ONE"
    os.unlink(os.path.join(mp, "a.txt"))
    with open(os.path.join(mp, "hard")) as f:
        assert f.read() == "ONE"
    assert os.stat(os.path.join(mp, "hard")).st_nlink == 1
    with pytest.raises(OSError) as e:
        os.link(os.path.join(mp, "pub"), os.path.join(mp, "pub2"))
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        os.mkfifo(os.path.join(mp, "fifo"))
    assert e.value.errno == errno.EPERM
    for make in (lambda n: os.mkdir(n), lambda n: _make(n), lambda n: os.symlink("x", n)):
        with pytest.raises(OSError) as e:
            make(os.path.join(mp, "n" * 256))
        assert e.value.errno == errno.ENAMETOOLONG
    os.mkdir(os.path.join(mp, "pub", "s1"))
    os.mkdir(os.path.join(mp, "pub", "s2"))
    assert os.stat(os.path.join(mp, "pub")).st_nlink == 4
    os.mkdir(os.path.join(mp, "logs"))
    changes = request(mp, {"op": "status"})["changes"]
    assert {"status": "added", "path": "logs", "size": 0, "kind": "d"} in changes
    assert {"status": "added", "path": "latest", "size": 5, "kind": "l", "target": "a.txt"} in changes
    out = run_cli("status", "--mount", mp, repo=repo).stdout
    assert "  A logs/\n" in out and "  A latest -> a.txt\n" in out, out


def test_fallocate_answers_eopnotsupp_and_posix_fallocate_still_extends(rw):
    """pyfuse3 has no fallocate handler, so the kernel answers EOPNOTSUPP itself for every
    mode (docs/decisions.md); glibc's posix_fallocate then writes the range instead."""
    mp, _repo = rw
    p = os.path.join(mp, "pre")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        with pytest.raises(OSError) as e:
            _fallocate(fd, 0, 0, 1 << 20)
        assert e.value.errno == errno.EOPNOTSUPP
        os.posix_fallocate(fd, 0, 1 << 20)
        assert os.fstat(fd).st_size == 1 << 20
    finally:
        os.close(fd)


def _fallocate(fd: int, mode: int, off: int, length: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, off, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
