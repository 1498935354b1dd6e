"""What a commit records besides files: symbolic links (MODE_SYMLINK entries whose File is
the target text, never followed), empty directories (MODE_DIR entries of the empty File),
hard links of a staging area (one File), and --preserve-owner (metadata, not the tree)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs.ingest import scan_sources
from coralfs.objects import codecs
from coralfs.objects.errors import CoralError
from coralfs.objects.fsck import EMPTY_FILE
from coralfs.objects.ids import to_hex
from coralfs.objects.kinds import MODE_DIR, MODE_EXEC, MODE_FILE, MODE_SYMLINK, Tree, TreeEntry
from coralfs.staging import StagingArea
from coralfs.staging.entries import Entry

SECRET = os.urandom(4096)  # incompressible: stored, it would be found in a decoded object
# The tree id of _plain_source() committed by coralfs before links and directories were
# recorded (computed with the code of main at b64f6d6): a tree holding neither keeps it.
PLAIN_TREE = "cab4521ca55e92c40aadf43a8bc50722df041bf016736311daceedafb82124b1"


def _plain_source(src) -> None:
    os.makedirs(src / "sub" / "deep")
    (src / "config.json").write_text('{"hidden": 8}\n')
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o755)
    (src / "sub" / "deep" / "notes.txt").write_bytes(bytes(range(256)) * 40)
    save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8), "b": np.ones(8, np.float16)},
              str(src / "sub" / "model.safetensors"))


def _stored_bytes(repo) -> list[bytes]:
    """Every object of the store, decoded."""
    return [codecs.decode(repo.odb.store.get(oid), oid, repo.odb.read_chunk) for oid in repo.store]


def _content(repo, e: TreeEntry) -> bytes:
    f = repo.read_file(e.file)
    return repo.open_file(e.file).read(0, f.size)


@pytest.fixture
def secret(tmp_path):
    p = tmp_path / "secret.bin"
    p.write_bytes(SECRET)
    return p


def test_a_tree_without_links_or_empty_dirs_keeps_its_id(repo, tmp_path):
    _plain_source(tmp_path / "src")
    res = repo.commit_paths([str(tmp_path / "src")], "plain")
    assert to_hex(repo.read_commit(res.commit).tree) == PLAIN_TREE
    assert res.links == res.dirs == 0


def test_links_are_stored_as_their_target_text_and_never_followed(repo, tmp_path, secret):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "w.bin").write_bytes(b"weights")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.bin").write_bytes(SECRET)
    os.symlink("/etc/shadow", src / "evil")
    os.symlink(secret, src / "sub" / "leak")
    os.symlink(outside, src / "dirlink")           # a link to a directory: not walked
    os.symlink("../nowhere", src / "sub" / "dangling")
    os.symlink("w.bin", src / "latest")
    res = repo.commit_paths([str(src)], "links")
    t = repo.tree_of(res.commit).entries
    assert sorted(t) == ["dirlink", "evil", "latest", "sub/dangling", "sub/leak", "w.bin"]
    targets = {p: _content(repo, e) for p, e in t.items() if e.mode == MODE_SYMLINK}
    assert targets == {"evil": b"/etc/shadow", "sub/leak": os.fsencode(secret), "dirlink": os.fsencode(outside),
                       "sub/dangling": b"../nowhere", "latest": b"w.bin"}
    assert t["w.bin"].mode == MODE_FILE and res.links == 5
    with open("/etc/shadow", "rb") as f:
        shadow = f.read()
    stored = _stored_bytes(repo)
    assert not any(SECRET[:64] in b for b in stored)
    assert not any(shadow in b for b in stored)
    # the same target text is one object, whoever holds it
    assert t["latest"].file != t["w.bin"].file and repo.read_file(t["latest"].file).size == 5


def test_empty_directories_become_directory_entries(repo, tmp_path):
    src = tmp_path / "src"
    for d in ("logs", "a/b/c", "only-link", "only-fifo", "full"):
        os.makedirs(src / d)
    (src / "full" / "x.bin").write_bytes(b"x")
    os.symlink("../full/x.bin", src / "only-link" / "x")
    os.mkfifo(src / "only-fifo" / "pipe")  # not committed: the directory is empty in the tree
    res = repo.commit_paths([str(src)], "dirs")
    t = repo.tree_of(res.commit).entries
    assert {p for p, e in t.items() if e.mode == MODE_DIR} == {"logs", "a/b/c", "only-fifo"}
    assert all(e.file == EMPTY_FILE.id for e in t.values() if e.mode == MODE_DIR)
    assert t["only-link/x"].mode == MODE_SYMLINK and t["full/x.bin"].mode == MODE_FILE
    assert res.dirs == 3 and len(res.files) == 1
    # an empty source is still nothing to commit
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoralError, match="nothing to commit"):
        repo.commit_paths([str(tmp_path / "empty")], "nothing")


def test_two_sources_sharing_a_directory_keep_it_only_if_it_stays_empty(tmp_path):
    for name, has in (("one", False), ("two", True)):
        os.makedirs(tmp_path / name / "logs")
        if has:
            (tmp_path / name / "logs" / "run.txt").write_text("r")
    found = scan_sources([str(tmp_path / "one"), str(tmp_path / "two")])
    assert found.dirs == set() and list(found.files) == ["logs/run.txt"]
    os.symlink("x", tmp_path / "one" / "clash")
    (tmp_path / "two" / "clash").write_text("c")
    with pytest.raises(CoralError, match="two sources give the path 'clash'"):
        scan_sources([str(tmp_path / "one"), str(tmp_path / "two")])


def test_reimporting_an_export_gives_the_same_tree(repo, tmp_path, secret):
    src = tmp_path / "src"
    os.makedirs(src / "logs")
    os.makedirs(src / "checkpoint-500")
    save_file({"w": np.ones((4, 4), np.float32)}, str(src / "checkpoint-500" / "model.safetensors"))
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o700)
    os.symlink("checkpoint-500", src / "latest")
    os.symlink(secret, src / "leak")
    first = repo.commit_paths([str(src)], "first").commit
    repo.export("main", str(tmp_path / "out"))
    out = tmp_path / "out"
    assert os.readlink(out / "latest") == "checkpoint-500" and os.readlink(out / "leak") == str(secret)
    assert os.path.isdir(out / "logs") and os.listdir(out / "logs") == []
    second = repo.commit_paths([str(out)], "again").commit
    assert repo.read_commit(second).tree == repo.read_commit(first).tree
    assert repo.tree_of(second).entries["run.sh"].mode == MODE_EXEC


def test_preserve_owner_goes_into_metadata_not_the_tree(repo, tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "logs")
    (src / "w.bin").write_bytes(b"w")
    os.symlink("w.bin", src / "latest")
    os.chown(src / "w.bin", 1234, 4321)
    os.chmod(src / "w.bin", 0o2640)
    os.chmod(src / "logs", 0o750)
    plain = repo.commit_paths([str(src)], "plain", branch="plain")
    kept = repo.commit_paths([str(src)], "kept", branch="kept", preserve_owner=True)
    assert repo.read_commit(kept.commit).tree == repo.read_commit(plain.commit).tree
    assert "owners" not in repo.read_commit(plain.commit).metadata
    owners = repo.read_commit(kept.commit).metadata["owners"]
    assert owners["w.bin"] == [1234, 4321, 0o2640]
    assert owners["logs"] == [os.getuid(), os.getgid(), 0o750]
    assert owners["latest"][:2] == [os.getuid(), os.getgid()] and set(owners) == {"w.bin", "logs", "latest"}
    with pytest.raises(CoralError, match="drop --meta owners"):
        repo.commit_paths([str(src)], "clash", metadata={"owners": 1}, preserve_owner=True)


# -- fsck and gc ----------------------------------------------------------------------------

def _file(repo, tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return repo.write_file(str(p))[0]


def test_fsck_names_a_link_that_is_not_a_target_and_a_dir_that_is_not_empty(repo, tmp_path):
    big = _file(repo, tmp_path, "big", b"a" * 5000)
    nul = _file(repo, tmp_path, "nul", b"a\0b")
    text = _file(repo, tmp_path, "text", b"checkpoint-500")
    repo.put(EMPTY_FILE)
    repo.commit(Tree({"latest": TreeEntry(text, MODE_SYMLINK), "logs": TreeEntry(EMPTY_FILE.id, MODE_DIR)}), "good")
    assert repo.fsck().ok
    repo.commit(Tree({"big": TreeEntry(big, MODE_SYMLINK), "nul": TreeEntry(nul, MODE_SYMLINK),
                      "logs": TreeEntry(text, MODE_DIR)}), "bad")
    rep = repo.fsck()
    assert len(rep.problems) == 3, rep.problems
    joined = "\n".join(rep.problems)
    assert ":big: a symbolic link whose target is 5000 bytes" in joined
    assert ":nul: a symbolic link whose target holds NUL" in joined
    assert ":logs: an empty-directory entry whose file" in joined and "is not the empty file" in joined


def test_gc_keeps_the_files_of_links_and_empty_dirs(repo, tmp_path):
    src = tmp_path / "src"
    os.makedirs(src / "logs")
    (src / "w.bin").write_bytes(b"w")
    os.symlink("a-target-nothing-else-holds", src / "latest")
    repo.commit_paths([str(src)], "one")
    t = repo.tree_of("main").entries
    rep = repo.gc(grace_seconds=0)
    assert rep.kept > 0
    assert repo.store.has(t["latest"].file) and repo.store.has(t["logs"].file)
    assert _content(repo, t["latest"]) == b"a-target-nothing-else-holds"
    assert repo.fsck().ok


# -- the staging commit -----------------------------------------------------------------------

def _write(st: StagingArea, e: Entry, data: bytes) -> None:
    with open(st.spool_path(e.spool), "wb") as f:
        f.write(data)


def test_an_empty_directory_of_a_staging_area_is_committed(repo):
    st = StagingArea.open(repo, "main")
    try:
        _write(st, st.create("w.bin", 0o644), b"w")
        assert st.commit("one")[0] is not None
        st.mkdir("logs", 0o755)       # nothing but an empty directory: still a change
        st.mkdir("runs", 0o755)
        st.mkdir("runs/7", 0o755)     # runs/ is not empty: runs/7 is the entry
        cid, _ = st.commit("dirs")
        assert cid is not None
        t = repo.tree_of(cid).entries
        assert {p: e.mode for p, e in t.items()} == {"w.bin": MODE_FILE, "logs": MODE_DIR, "runs/7": MODE_DIR}
        assert st.commit("again")[0] is None  # nothing changed since
        st.rmdir("logs")
        cid, _ = st.commit("rmdir")
        assert "logs" not in repo.tree_of(cid).entries
    finally:
        st.close()


def test_rows_sharing_a_spool_file_are_one_file_ingested_once(repo):
    """Hard links of a writable mount: several rows naming one spool file."""
    st = StagingArea.open(repo, "main")
    try:
        data = os.urandom(1 << 16)
        e = st.create("a.bin", 0o644)
        _write(st, e, data)
        with st.db:
            st._put("b.bin", Entry("f", 0o755, e.mtime_ns, None, e.spool))
        cid, stats = st.commit("linked")
        t = repo.tree_of(cid).entries
        assert t["a.bin"].file == t["b.bin"].file
        assert (t["a.bin"].mode, t["b.bin"].mode) == (MODE_FILE, MODE_EXEC)
        assert stats.logical == len(data)  # read and stored once, not once per name
    finally:
        st.close()


def test_preserve_owner_of_a_staging_commit(repo):
    st = StagingArea.open(repo, "main")
    try:
        _write(st, st.create("w.bin", 0o640), b"w")
        st.mkdir("logs", 0o750)
        cid, _ = st.commit("kept", preserve_owner=True)
        me = os.stat(st.dir)
        owners = repo.read_commit(cid).metadata["owners"]
        assert owners == {"w.bin": [me.st_uid, me.st_gid, 0o640], "logs": [me.st_uid, me.st_gid, 0o750]}
    finally:
        st.close()


def test_a_base_link_held_as_a_file_row_stays_a_link(repo, tmp_path):
    """A staging area opened on a branch with links keeps them as they are when it
    commits other changes (its rows may predate link rows)."""
    src = tmp_path / "src"
    os.makedirs(src / "logs")
    (src / "w.bin").write_bytes(b"w")
    os.symlink("w.bin", src / "latest")
    base = repo.commit_paths([str(src)], "base").commit
    st = StagingArea.open(repo, "main")
    try:
        _write(st, st.create("new.bin", 0o644), b"n")
        cid, _ = st.commit("more")
    finally:
        st.close()
    old, new = repo.tree_of(base).entries, repo.tree_of(cid).entries
    assert new["latest"] == old["latest"] and new["latest"].mode == MODE_SYMLINK
    assert new["logs"].mode == MODE_DIR and new["new.bin"].mode == MODE_FILE


def test_a_crafted_link_is_refused_by_export_and_diff_never_served(repo, tmp_path):
    from coralfs.export import ExportError
    big = _file(repo, tmp_path, "big", b"a" * 5000)
    repo.commit(Tree({"latest": TreeEntry(big, MODE_SYMLINK)}), "crafted")
    with pytest.raises(ExportError, match="corrupt object .*symbolic link latest is 5000 bytes") as e:
        repo.export("main", str(tmp_path / "out"))
    assert "nothing was written" in str(e.value) and not os.path.exists(tmp_path / "out")
    with pytest.raises(CoralError, match="is 5000 bytes"):
        repo.diff(None, "main")


def test_a_file_replaced_by_a_link_while_committing_is_not_followed(repo, tmp_path, secret):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1 << 16))
    (src / "b.bin").write_bytes(os.urandom(1 << 16))

    def swap(path: str, _n: int) -> None:
        if path == "a.bin":  # a.bin is stored; b.bin, listed as a file, becomes a link now
            os.unlink(src / "b.bin")
            os.symlink(secret, src / "b.bin")

    with pytest.raises(CoralError, match="b.bin: cannot be read .*nothing was committed"):
        repo.commit_paths([str(src)], "race", progress=swap)
    assert repo.branch_head("main") is None
    assert not any(SECRET[:64] in b for b in _stored_bytes(repo))


def test_a_mount_serves_a_link_as_text_and_a_crafted_one_as_corrupt(repo, tmp_path):
    from coralfs.fs.readonly.vfs import ROOT_INO, VFS
    from coralfs.objects.errors import CorruptObject
    text = _file(repo, tmp_path, "text", b"checkpoint-500")
    big = _file(repo, tmp_path, "big", b"a" * 5000)
    repo.put(EMPTY_FILE)
    repo.commit(Tree({"latest": TreeEntry(text, MODE_SYMLINK), "logs": TreeEntry(EMPTY_FILE.id, MODE_DIR),
                      "big": TreeEntry(big, MODE_SYMLINK)}), "links")
    vfs = VFS(repo, "main")
    n = vfs.lookup(ROOT_INO, "latest")
    assert n.kind == "link" and n.size == 14 and vfs.readlink(n.ino) == b"checkpoint-500"
    d = vfs.lookup(ROOT_INO, "logs")
    assert d.kind == "dir" and vfs.children(d.ino) == {} and d.st_nlink == 2
    b = vfs.lookup(ROOT_INO, "big")  # listed with its siblings; its text is never served
    with pytest.raises(CorruptObject, match="5000 bytes"):
        vfs.readlink(b.ino)


def test_a_staging_commit_keeps_links_and_rebases_onto_a_head_with_new_ones(repo, tmp_path):
    st = StagingArea.open(repo, "main")
    try:
        _write(st, st.create("w.bin", 0o644), b"w")
        st.symlink("latest", "w.bin")
        cid, stats = st.commit("one")
        t = repo.tree_of(cid).entries
        assert t["latest"].mode == MODE_SYMLINK and _content(repo, t["latest"]) == b"w.bin"
        # another commit lands on the branch, with a link and an empty directory of its own
        src = tmp_path / "src"
        os.makedirs(src / "logs")
        (src / "w.bin").write_bytes(b"w")
        os.symlink("w.bin", src / "latest")
        os.symlink("/etc/shadow", src / "evil")
        repo.commit_paths([str(src)], "elsewhere")
        _write(st, st.create("new.bin", 0o644), b"n")
        cid, stats = st.commit("two")
        t = repo.tree_of(cid).entries
        assert {p: e.mode for p, e in t.items()} == {"w.bin": MODE_FILE, "latest": MODE_SYMLINK, "evil": MODE_SYMLINK,
                                                     "logs": MODE_DIR, "new.bin": MODE_FILE}
        assert _content(repo, t["evil"]) == b"/etc/shadow"
        assert stats.logical == 1  # the links the head holds are not stored again
    finally:
        st.close()
