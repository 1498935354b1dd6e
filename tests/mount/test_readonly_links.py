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


def test_a_symlink_and_a_hard_link_committed_from_a_writable_mount(linked, tmp_path):
    repo, _src = linked
    mp = str(tmp_path / "rw")
    data = os.urandom(1 << 20)
    with mounted(repo, mp, None, "--write"):
        assert os.readlink(os.path.join(mp, "latest")) == "checkpoint-500"  # the base's link, as a link
        with open(os.path.join(mp, "weights.bin"), "wb") as f:
            f.write(data)
        os.link(os.path.join(mp, "weights.bin"), os.path.join(mp, "weights-copy.bin"))
        os.symlink("weights.bin", os.path.join(mp, "current"))
        os.symlink("/etc/shadow", os.path.join(mp, "evil2"))
        from coralfs.api import commit_mount
        got = commit_mount(mp, "links from the mount")
        assert got["commit"] and got["logical"] <= len(data) + 64  # the hard-linked bytes ingested once
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        t = r.tree_of("main").entries
        target = {p: r.open_file(t[p].file).read(0, 100) for p in ("current", "evil2", "latest")}
    finally:
        r.close()
    assert t["weights.bin"].file == t["weights-copy.bin"].file and not t["weights.bin"].is_symlink
    assert all(t[p].is_symlink for p in target)
    assert target == {"current": b"weights.bin", "evil2": b"/etc/shadow", "latest": b"checkpoint-500"}
    ro = str(tmp_path / "ro")
    with mounted(repo, ro, "main"):
        assert os.readlink(os.path.join(ro, "current")) == "weights.bin"
        assert sha(os.path.join(ro, "current")) == sha(os.path.join(ro, "weights-copy.bin"))
    run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    assert os.readlink(tmp_path / "out" / "evil2") == "/etc/shadow"
    assert (tmp_path / "out" / "weights-copy.bin").read_bytes() == data
