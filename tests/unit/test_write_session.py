"""The write session lock: shared among writers (they never block each other), exclusive
for gc; re-entrant within one Repository."""

from __future__ import annotations

import fcntl
import os

import pytest

from coralfs import Repository
from coralfs.objects.errors import CoralError
from coralfs.objects.kinds import MODE_FILE, Tree, TreeEntry


def _try(path: str, op: int) -> bool:
    fd = os.open(os.path.join(path, "sessions.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_sessions_share_and_exclude_gc(tmp_path):
    a = Repository.init(str(tmp_path / "repo"))
    b = Repository.open(a.path)
    with a.write_session():
        with a.write_session():  # nested: same lock
            assert not _try(a.path, fcntl.LOCK_EX)  # a gc would wait
        assert not _try(a.path, fcntl.LOCK_EX)
        with b.write_session():  # another writer gets in at once
            assert _try(a.path, fcntl.LOCK_SH)
        with pytest.raises(CoralError, match="inside a write session"):
            a.gc(0)
    assert _try(a.path, fcntl.LOCK_EX)  # released
    with b.exclusive_session():
        assert not _try(a.path, fcntl.LOCK_SH)  # writers wait while gc runs
    a.close()
    b.close()


def test_a_commit_holds_the_session_until_its_ref_moved(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    seen = []
    (tmp_path / "f").write_bytes(b"x" * 100)
    fid, _ = repo.write_file(str(tmp_path / "f"))
    repo.commit(Tree({"f": TreeEntry(fid, MODE_FILE)}), "m",
                before_move=lambda cid: seen.append(_try(repo.path, fcntl.LOCK_EX)))
    assert seen == [False]
    assert _try(repo.path, fcntl.LOCK_EX)
    repo.close()
