"""Read-only mounts of trees with symbolic links and empty directories (real kernel
mounts): a link is a symlink whose readlink is the stored text, an empty directory is an
empty directory, and every directory's st_nlink is 2 plus its subdirectories."""

from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import run_cli, sha
from tests.mount.conftest import mounted

pytestmark = pytest.mark.mount


@pytest.fixture
def linked(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    src = tmp_path / "src"
    for d in ("checkpoint-500", "logs", "a/b/c", "a/d"):
        os.makedirs(src / d)
    (src / "checkpoint-500" / "model.bin").write_bytes(b"weights" * 1000)
    os.symlink("checkpoint-500", src / "latest")
    os.symlink("checkpoint-500/model.bin", src / "model.bin")
    os.symlink("/etc/shadow", src / "evil")
    os.symlink("x" * 300, src / "a" / "long")
    run_cli("commit", str(src), "-m", "links", repo=repo)
    return repo, src


def test_links_and_empty_dirs_in_a_snapshot_mount(linked, mnt):
    repo, src = linked
    with mounted(repo, mnt, "main"):
        st = os.lstat(os.path.join(mnt, "latest"))
        assert stat.S_ISLNK(st.st_mode) and st.st_size == len("checkpoint-500")
        assert os.readlink(os.path.join(mnt, "latest")) == "checkpoint-500"
        assert os.readlink(os.path.join(mnt, "evil")) == "/etc/shadow"  # text, as stored
        assert os.readlink(os.path.join(mnt, "a", "long")) == "x" * 300
        assert os.lstat(os.path.join(mnt, "a", "long")).st_size == 300
        # the kernel follows links inside the read-only view
        assert sha(os.path.join(mnt, "model.bin")) == sha(src / "checkpoint-500" / "model.bin")
        assert os.listdir(os.path.join(mnt, "latest")) == ["model.bin"]
        for d in ("logs", "a/b/c", "a/d"):
            p = os.path.join(mnt, d)
            assert stat.S_ISDIR(os.lstat(p).st_mode) and os.listdir(p) == []
        assert sorted(os.listdir(mnt)) == [".coral", "a", "checkpoint-500", "evil", "latest", "logs", "model.bin"]
        # st_nlink: 2 + subdirectories (the root also holds .coral/)
        nlink = {d: os.lstat(os.path.join(mnt, d)).st_nlink for d in ("", "a", "a/b", "a/b/c", "logs")}
        assert nlink == {"": 2 + 3 + 1, "a": 4, "a/b": 3, "a/b/c": 2, "logs": 2}
        assert os.lstat(os.path.join(mnt, "checkpoint-500", "model.bin")).st_nlink == 1
        with pytest.raises(OSError):
            os.symlink("x", os.path.join(mnt, "new"))


def test_links_in_a_whole_repository_mount(linked, mnt):
    repo, _src = linked
    run_cli("branch", "exp", repo=repo)
    with mounted(repo, mnt):
        main = os.path.join(mnt, "branches", "main")
        assert os.readlink(os.path.join(main, "latest")) == "checkpoint-500"
        assert os.listdir(os.path.join(main, "logs")) == []
        assert os.lstat(os.path.join(mnt, "branches")).st_nlink == 2 + 2  # main, exp
        assert os.lstat(main).st_nlink == 2 + 3 + 1
        assert os.lstat(mnt).st_nlink == 2 + 4  # branches, tags, commits, .coral


# -- committed from a writable mount ------------------------------------------------------------

def test_an_empty_directory_and_owners_committed_from_a_writable_mount(linked, tmp_path):
    repo, _src = linked
    mp = str(tmp_path / "rw")
    with mounted(repo, mp, None, "--write"):
        os.mkdir(os.path.join(mp, "eval"))              # nothing but a new empty directory
        with open(os.path.join(mp, "notes.txt"), "w") as f:
            f.write("n")
        os.chmod(os.path.join(mp, "notes.txt"), 0o640)
        p = run_cli("commit", "--mount", mp, "-m", "from the mount", "--preserve-owner", repo=repo)
        assert "[main " in p.stdout
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        t = r.tree_of("main").entries
        c = r.read_commit(r.resolve("main"))
    finally:
        r.close()
    assert t["eval"].is_dir and t["logs"].is_dir and t["latest"].is_symlink  # the base's kept as they were
    assert c.metadata["owners"]["notes.txt"][2] == 0o640
    ro = str(tmp_path / "ro")
    with mounted(repo, ro, "main"):
        assert os.listdir(os.path.join(ro, "eval")) == [] and os.readlink(os.path.join(ro, "latest")) == "checkpoint-500"
