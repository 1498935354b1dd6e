"""The staging area's POSIX rows on their own: manifests from before owners and times are
migrated, a base tree's symbolic links and empty directories become rows, and stash /
stash pop keep links, empty directories, owners and hard links."""

from __future__ import annotations

import os
import sqlite3
import time

from coralfs.objects.kinds import MODE_DIR, MODE_SYMLINK, Tree, TreeEntry
from coralfs.staging import StagingArea, stage_dir
from tests.unit.staging.test_area import put


def _old_manifest(repo) -> str:
    """A staging area as a version without owners and times wrote it: two rows."""
    st = StagingArea.open(repo, "main")
    st.close()
    path = os.path.join(stage_dir(repo, "main"), "stage.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript("ALTER TABLE entries RENAME TO new_entries;"
                     "CREATE TABLE entries (path TEXT PRIMARY KEY, kind TEXT, mode INT, mtime INT, fid BLOB, spool TEXT);"
                     "INSERT INTO entries SELECT path, kind, mode, mtime, fid, spool FROM new_entries;"
                     "DROP TABLE new_entries;")
    db.close()
    return path


def test_an_older_manifest_gets_owner_and_times_columns(repo, committed):
    path = _old_manifest(repo)
    st = StagingArea.open(repo, "main")
    try:
        cols = [r[1] for r in st.db.execute("PRAGMA table_info(entries)")]
        assert cols[-6:] == ["uid", "gid", "atime", "ctime", "target", "link"]
        e = st.get("sub/notes.txt")
        assert (e.uid, e.gid) == (os.getuid(), os.getgid()) and e.atime_ns == e.ctime_ns == e.mtime_ns
        nulls = st.db.execute("SELECT count(*) FROM entries WHERE uid IS NULL OR ctime IS NULL").fetchone()[0]
        assert nulls == 0
        assert st.changes() == []
    finally:
        st.close()
    assert os.path.exists(path)


def _blob(repo, tmp_path, data: bytes):
    p = tmp_path / f"blob{len(data)}"
    p.write_bytes(data)
    return repo.write_file(str(p))[0]


def test_a_base_tree_with_links_and_empty_directories_becomes_rows(repo, tmp_path):
    target, empty = _blob(repo, tmp_path, b"checkpoint-500"), _blob(repo, tmp_path, b"")
    data = _blob(repo, tmp_path, b"weights")
    tree = Tree({"checkpoint-500/model.bin": TreeEntry(data), "latest": TreeEntry(target, MODE_SYMLINK),
                 "logs": TreeEntry(empty, MODE_DIR)})
    repo.commit(tree, "with a link", branch="main")
    st = StagingArea.open(repo, "main")
    try:
        assert st.get("latest").kind == "l" and st.get("latest").target == "checkpoint-500"
        assert st.get("logs").kind == "d" and st.children("logs") == []
        assert st.changes() == []  # as committed
        st.unlink("latest")
        st.rmdir("logs")
        assert [(c.status, c.path, c.kind) for c in st.changes()] == [("deleted", "latest", "l"),
                                                                       ("deleted", "logs", "d")]
        st.symlink("latest", "checkpoint-600")
        assert [(c.status, c.path, c.target) for c in st.changes()][0] == ("modified", "latest", "checkpoint-600")
    finally:
        st.close()


def test_stash_and_pop_keep_links_empty_directories_owners_and_hard_links(repo, committed):
    st = StagingArea.open(repo, "main")
    try:
        st.symlink("latest", "checkpoint-500", 1000, 1000)
        st.mkdir("logs", 0o750, 1001, 1001)
        put(st, "a.bin", b"shared")
        st.link("a.bin", "sub/b.bin")
        st.chown("a.bin", 1234, 5678)
        before = [(c.status, c.path, c.kind) for c in st.changes()]
        st.stash("posix")
        assert st.changes() == [] and st.get("latest") is None and st.get("logs") is None
        st.stash_pop()
        assert [(c.status, c.path, c.kind) for c in st.changes()] == before
        lnk, logs, a, b = st.get("latest"), st.get("logs"), st.get("a.bin"), st.get("sub/b.bin")
        assert (lnk.target, lnk.uid) == ("checkpoint-500", 1000)
        assert (logs.kind, logs.mode, logs.uid) == ("d", 0o750, 1001)
        assert a is b and (a.uid, a.gid) == (1234, 5678) and st.nlink("a.bin", a) == 2
        with open(st.spool_path(a.spool), "rb") as f:
            assert f.read() == b"shared"
    finally:
        st.close()


def test_times_owner_and_links_persist_in_the_manifest(repo, committed):
    st = StagingArea.open(repo, "main")
    st.set_times("sub/notes.txt", 111, 222)
    st.chown("sub/notes.txt", 7, 8)
    st.link("sub/notes.txt", "again.txt")
    st.chmod("", 0o700)  # the root directory's row is kept too
    st.close()
    st = StagingArea.open(repo, "main")
    try:
        e = st.get("again.txt")
        assert e is st.get("sub/notes.txt") and (e.atime_ns, e.mtime_ns, e.uid, e.gid) == (111, 222, 7, 8)
        assert e.ctime_ns > 222 and e.ctime_ns <= time.time_ns()
        assert st.get("").mode == 0o700
    finally:
        st.close()


def test_a_rebase_drops_directories_the_branch_emptied_and_keeps_empty_ones_made_here(repo, committed, tmp_path):
    st = StagingArea.open(repo, "main")
    st.mkdir("logs", 0o755)
    st.close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "y").write_text("2")
    repo.commit_paths([str(tmp_path / "other")], "elsewhere")  # no sub/ any more
    st = StagingArea.open(repo, "main")
    try:
        assert st.get("sub") is None and st.get("logs").kind == "d"
        assert [(c.status, c.path, c.kind) for c in st.changes()] == [("added", "logs", "d")]
    finally:
        st.close()


def test_a_link_made_again_with_the_committed_target_is_no_change_and_is_read_once(repo, tmp_path, monkeypatch):
    target = _blob(repo, tmp_path, b"checkpoint-500")
    repo.commit(Tree({"latest": TreeEntry(target, MODE_SYMLINK)}), "a link", branch="main")
    st = StagingArea.open(repo, "main")
    try:
        st.unlink("latest")
        st.symlink("latest", "checkpoint-500")  # as `ln -sf` does
        reads = []
        real = st.read_target
        monkeypatch.setattr(st, "read_target", lambda fid: reads.append(fid) or real(fid))
        assert st.changes() == [] and st.changes() == []
        assert reads == [target]
    finally:
        st.close()
