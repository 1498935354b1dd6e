"""The ops tier of writable mounts: StagingOperations called directly (no kernel), over a
real StagingArea and repository: write, rename, unlink and truncate edge cases, copy-on-write,
commits, stashes and the auto-commit rules. What needs only the staging area (opening,
crash recovery of a commit) is tested in tests/unit/staging. Each mount serves in one trio
run (tests/ops/serving.py), so writes go through the real write-behind queue."""

from __future__ import annotations

import errno
import json
import os

import pyfuse3
import pytest
import trio

from coralfs.fs.writable.ops import StagingOperations
from coralfs.fs.writable.vfs import CONTROL_INO, CORAL_INO, ROOT_INO, AutoCommit, StageFS
from coralfs.staging import StagingArea, list_stashes
from tests.ops.serving import Serving

RDONLY, WRONLY, RDWR = os.O_RDONLY, os.O_WRONLY, os.O_RDWR


_SERVING: Serving | None = None  # the serving run of the mount a test has open


def run(fn, *args):
    """``await fn(*args)``: in the open mount's serving run, else in a run of its own."""
    if _SERVING is not None:
        return _SERVING.call(fn, *args)
    return trio.run(fn, *args)


class FS:
    """A writable mount without a kernel: names in, bytes out, errno on failure.
    ``serving=False``: no serving run (a test that runs its own and starts the ops there)."""

    def __init__(self, repo, branch="main", auto=None, serving=True):
        global _SERVING
        self.repo = repo
        self.stage = StagingArea.open(repo, branch)
        self.sfs = StageFS(repo, self.stage, auto)
        self.ops = StagingOperations(self.sfs)
        self.serving = Serving(self.ops) if serving else None
        if self.serving is not None:
            _SERVING = self.serving

    def ino(self, path: str) -> int:
        ino = ROOT_INO
        for part in [p for p in path.split("/") if p]:
            ino = run(self.ops.lookup, ino, part.encode(), None).st_ino
        return ino

    def split(self, path):
        parent, _, name = path.rpartition("/")
        return self.ino(parent), name.encode()

    def create(self, path, mode=0o644):
        p, n = self.split(path)
        fi, attr = run(self.ops.create, p, n, mode, WRONLY | os.O_CREAT, None)
        return fi.fh

    def open(self, path, flags=RDONLY):
        return run(self.ops.open, self.ino(path), flags, None).fh

    def write(self, fh, off, data):
        return run(self.ops.write, fh, off, data)

    def read(self, fh, off=0, size=1 << 30):
        return run(self.ops.read, fh, off, size)

    def close(self, fh):
        run(self.ops.flush, fh)
        run(self.ops.release, fh)

    def put(self, path, data):
        fh = self.create(path)
        self.write(fh, 0, data)
        self.close(fh)

    def cat(self, path):
        fh = self.open(path)
        try:
            return self.read(fh)
        finally:
            self.close(fh)

    def size(self, path):
        return run(self.ops.getattr, self.ino(path), None).st_size

    def mkdir(self, path):
        p, n = self.split(path)
        run(self.ops.mkdir, p, n, 0o755, None)

    def rename(self, a, b, flags=0):
        pa, na = self.split(a)
        pb, nb = self.split(b)
        run(self.ops.rename, pa, na, pb, nb, flags, None)

    def unlink(self, path):
        p, n = self.split(path)
        run(self.ops.unlink, p, n, None)

    def rmdir(self, path):
        p, n = self.split(path)
        run(self.ops.rmdir, p, n, None)

    def ls(self, path=""):
        fh = run(self.ops.opendir, self.ino(path), None)
        names = [n for n, _a in self.ops.dirs[fh]]
        run(self.ops.releasedir, fh)
        return names

    def truncate(self, path, size):
        attr = pyfuse3.EntryAttributes()
        attr.st_size = size
        return run(self.ops.setattr, self.ino(path), attr, _Fields(update_size=True), None, None)

    def control(self, req: dict) -> dict:
        fh = run(self.ops.open, CONTROL_INO, RDWR, None).fh
        self.write(fh, 0, (json.dumps(req) + "\n").encode())
        out = json.loads(self.read(fh))
        self.close(fh)
        return out

    def close_all(self):
        global _SERVING
        if self.serving is not None:
            if _SERVING is self.serving:
                _SERVING = None
            self.serving.stop()
        self.sfs.close()
        self.stage.close()


class _Fields:
    def __init__(self, **kw):
        for k in ("update_size", "update_mode", "update_mtime", "update_atime", "update_uid", "update_gid",
                  "update_ctime"):
            setattr(self, k, kw.get(k, False))


def errno_of(fn, *args):
    with pytest.raises(pyfuse3.FUSEError) as e:
        fn(*args)
    return e.value.errno


@pytest.fixture
def fs(repo, committed):
    f = FS(repo)
    yield f
    f.close_all()


def test_unchanged_files_are_served_from_the_repository_without_a_spool(fs, committed):
    assert fs.cat("model.safetensors") == (committed / "model.safetensors").read_bytes()
    assert sorted(fs.ls()) == [".coral", "model.safetensors", "sub"]
    assert fs.stage.changes() == []
    assert os.listdir(fs.stage.spool_dir) == []


def test_write_at_any_offset_sparse_and_out_of_order_then_read_back(fs):
    fh = fs.create("new.bin")
    fs.write(fh, 1 << 20, b"tail")
    fs.write(fh, 0, b"head")
    fs.write(fh, 500, b"mid")
    assert fs.read(fh, 0, 4) == b"head"
    fs.close(fh)
    data = fs.cat("new.bin")
    assert len(data) == (1 << 20) + 4 and data[500:503] == b"mid" and data[-4:] == b"tail"
    assert data[4:500] == b"\0" * 496
    assert [(c.status, c.path) for c in fs.stage.changes()] == [("added", "new.bin")]


def test_first_write_copies_a_committed_file_into_the_spool(fs, committed):
    orig = (committed / "sub" / "notes.txt").read_bytes()
    fh = fs.open("sub/notes.txt", RDWR)
    fs.write(fh, 0, b"J")
    fs.close(fh)
    assert fs.cat("sub/notes.txt") == b"J" + orig[1:]
    assert fs.sfs.counters["copy_ups"] == 1
    assert [(c.status, c.path) for c in fs.stage.changes()] == [("modified", "sub/notes.txt")]


def test_open_with_o_trunc_and_truncate_and_extend(fs):
    fh = fs.open("sub/notes.txt", WRONLY | os.O_TRUNC)
    fs.close(fh)
    assert fs.cat("sub/notes.txt") == b""
    assert fs.sfs.counters["copy_ups"] == 1  # truncation copies nothing
    fs.truncate("model.safetensors", 100)
    assert fs.size("model.safetensors") == 100
    fs.truncate("model.safetensors", 5000)
    assert fs.cat("model.safetensors")[100:] == b"\0" * 4900


def test_a_reader_opened_before_a_write_sees_the_written_bytes(fs):
    r = fs.open("sub/notes.txt")
    w = fs.open("sub/notes.txt", WRONLY)
    fs.write(w, 0, b"HELLO")
    fs.close(w)
    assert fs.read(r) == b"HELLO"
    fs.close(r)


def test_rename_over_an_existing_file_temp_then_rename(fs):
    fs.put("model.safetensors.tmp", b"new weights")
    fs.rename("model.safetensors.tmp", "model.safetensors")
    assert fs.cat("model.safetensors") == b"new weights"
    assert "model.safetensors.tmp" not in fs.ls()
    assert len(os.listdir(fs.stage.spool_dir)) == 1  # the replaced copy is gone


def test_rename_keeps_the_inode_and_moves_directories_whole(fs):
    ino = fs.ino("sub/notes.txt")
    fs.rename("sub", "moved")
    assert fs.ino("moved/notes.txt") == ino
    assert fs.cat("moved/notes.txt") == b"hello"
    assert errno_of(fs.ino, "sub") == errno.ENOENT
    ch = {(c.status, c.path) for c in fs.stage.changes()}
    assert ch == {("added", "moved/notes.txt"), ("deleted", "sub/notes.txt")}
    # a renamed committed file is not copied: it keeps its File object
    assert os.listdir(fs.stage.spool_dir) == []


def test_rename_flags_and_errors(fs):
    fs.put("a", b"A")
    fs.put("b", b"B")
    assert errno_of(fs.rename, "a", "b", 1) == errno.EEXIST  # RENAME_NOREPLACE
    fs.rename("a", "b", 2)  # RENAME_EXCHANGE
    assert fs.cat("a") == b"B" and fs.cat("b") == b"A"
    assert errno_of(fs.rename, "missing", "c") == errno.ENOENT
    assert errno_of(fs.rename, "a", "sub") == errno.EISDIR
    fs.mkdir("empty")
    assert errno_of(fs.rename, "empty", "a") == errno.ENOTDIR
    assert errno_of(fs.rename, "empty", "sub") == errno.ENOTEMPTY
    assert errno_of(fs.rename, "sub", "sub/inner") == errno.EINVAL


def test_unlink_while_open_keeps_the_bytes_until_release(fs):
    fh = fs.create("scratch")
    fs.write(fh, 0, b"abc")
    fs.unlink("scratch")
    assert "scratch" not in fs.ls()
    assert fs.read(fh) == b"abc"
    fs.write(fh, 3, b"def")
    attr = run(fs.ops.getattr, fs.sfs.handles[fh].ino, None)
    assert attr.st_size == 6 and attr.st_nlink == 0
    fs.close(fh)
    assert os.listdir(fs.stage.spool_dir) == []
    assert fs.stage.changes() == []


def test_directories(fs):
    fs.mkdir("d")
    fs.mkdir("d/e")
    assert errno_of(fs.mkdir, "d") == errno.EEXIST
    assert errno_of(fs.rmdir, "d") == errno.ENOTEMPTY
    assert errno_of(fs.unlink, "d") == errno.EISDIR
    assert errno_of(fs.rmdir, "sub/notes.txt") == errno.ENOTDIR
    assert errno_of(fs.mkdir, "nope/x") == errno.ENOENT
    fs.rmdir("d/e")
    fs.rmdir("d")
    assert "d" not in fs.ls()
    fs.unlink("sub/notes.txt")
    fs.rmdir("sub")
    assert [(c.status, c.path) for c in fs.stage.changes()] == [("deleted", "sub/notes.txt")]


def test_coral_is_reserved(fs):
    assert errno_of(fs.create, ".coral/x") == errno.EPERM
    assert errno_of(fs.mkdir, ".coral2/x") == errno.ENOENT
    p = run(fs.ops.lookup, ROOT_INO, b".coral", None)
    assert p.st_ino == CORAL_INO
    assert errno_of(fs.unlink, ".coral/status.json") == errno.EPERM
    status = json.loads(fs.cat(".coral/status.json"))
    assert status["branch"] == "main" and status["changes"] == []


def test_chmod_and_xattrs(fs):
    fs.put("run.sh", b"#!/bin/sh\n")
    attr = pyfuse3.EntryAttributes()
    attr.st_mode = 0o755
    run(fs.ops.setattr, fs.ino("run.sh"), attr, _Fields(update_mode=True), None, None)
    assert run(fs.ops.getattr, fs.ino("run.sh"), None).st_mode & 0o777 == 0o755
    ino = fs.ino("run.sh")
    assert errno_of(run, fs.ops.setxattr, ino, b"system.posix_acl_access", b"\x02", None) == errno.ENOTSUP
    run(fs.ops.setxattr, ino, b"user.step", b"600", None)
    assert run(fs.ops.getxattr, ino, b"user.step", None) == b"600"
    assert run(fs.ops.listxattr, ino, None) == [b"user.step"]
    fs.rename("run.sh", "go.sh")
    assert run(fs.ops.getxattr, fs.ino("go.sh"), b"user.step", None) == b"600"
    run(fs.ops.removexattr, fs.ino("go.sh"), b"user.step", None)
    assert errno_of(run, fs.ops.getxattr, fs.ino("go.sh"), b"user.step", None) == pyfuse3.ENOATTR
    cid, _ = fs.stage.commit("exec bit")
    assert fs.repo.tree_of(cid).entries["go.sh"].mode == 0o755


def test_commit_through_the_control_file_records_deltas_and_keeps_serving(fs, committed):
    fh = fs.open("model.safetensors", RDWR)
    data = bytearray(fs.read(fh))
    data[-4:] = b"\x01\x02\x03\x04"  # a small change of the last float
    fs.write(fh, len(data) - 4, bytes(data[-4:]))
    fs.close(fh)
    fs.put("sub/new.txt", b"added")
    fs.unlink("sub/notes.txt")
    got = fs.control({"op": "commit", "message": "step 2", "metadata": {"metrics": {"loss": 0.1}}})
    assert got["ok"] and got["commit"]
    assert {(c["status"], c["path"]) for c in got["changes"]} == {
        ("modified", "model.safetensors"), ("added", "sub/new.txt"), ("deleted", "sub/notes.txt")}
    assert got["stored"] < len(data) / 4  # a delta, not a copy
    head = fs.repo.branch_head("main")
    assert head.hex() == got["commit"]
    assert fs.repo.read_commit(head).metadata["metrics"] == {"loss": 0.1}
    tree = fs.repo.tree_of(head)
    assert fs.repo.open_file(tree.entries["model.safetensors"].file).read(0, len(data)) == bytes(data)
    assert fs.stage.changes() == [] and os.listdir(fs.stage.spool_dir) == []
    assert fs.cat("model.safetensors") == bytes(data)
    assert fs.control({"op": "commit", "message": "again"})["commit"] is None
    fh = fs.open("sub/new.txt", RDWR)
    fs.write(fh, 0, b"added")  # written (so copied), but with the bytes it had
    fs.close(fh)
    assert [c.path for c in fs.stage.changes()] == ["sub/new.txt"]
    assert fs.control({"op": "commit", "message": "same bytes"})["commit"] is None
    assert fs.stage.changes() == [] and os.listdir(fs.stage.spool_dir) == []


def test_commit_of_a_malformed_file_names_it_and_keeps_the_spool(fs):
    fs.put("bad.safetensors", b"\xff" * 64)
    head = fs.repo.branch_head("main")
    got = fs.control({"op": "commit", "message": "x"})
    assert not got["ok"] and got["error"].startswith("bad.safetensors:") and got["exit_code"] == 2
    assert fs.repo.branch_head("main") == head
    assert [c.path for c in fs.stage.changes()] == ["bad.safetensors"]


def test_a_branch_that_moved_is_rebased_onto_unless_both_changed_a_file(fs, repo, tmp_path):
    fs.put("x", b"1")
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "y").write_text("2")
    (other / "sub" / "notes.txt").write_text("theirs")
    repo.commit_paths([str(other)], "elsewhere")  # replaces the tree: model.safetensors goes
    moved = repo.branch_head("main")
    got = fs.control({"op": "commit", "message": "mine"})
    assert got["ok"], got
    c = repo.read_commit(repo.branch_head("main"))
    assert c.parents == [moved]
    assert sorted(repo.tree_of(repo.branch_head("main")).entries) == ["sub/notes.txt", "x", "y"]
    assert fs.cat("y") == b"2" and "model.safetensors" not in fs.ls()
    fs.put("y", b"mine")
    (other / "y").write_text("theirs again")
    repo.commit_paths([str(other)], "elsewhere again")
    head = repo.branch_head("main")
    got = fs.control({"op": "commit", "message": "conflict"})
    assert not got["ok"] and "both changed y" in got["error"] and "stash" in got["error"]
    assert repo.branch_head("main") == head and fs.cat("y") == b"mine"


def test_stash_and_pop(fs, repo):
    fs.put("sub/notes.txt", b"changed")
    fs.put("extra.bin", b"x" * 1000)
    fs.rename("model.safetensors", "renamed.safetensors")
    assert fs.control({"op": "stash", "message": "wip"})["stash"] == 0
    assert fs.stage.changes() == []
    assert fs.cat("sub/notes.txt") == b"hello"
    assert list_stashes(repo, "main")[0]["message"] == "wip"
    got = fs.control({"op": "stash-pop"})
    assert got["ok"]
    assert fs.cat("sub/notes.txt") == b"changed" and fs.cat("extra.bin") == b"x" * 1000
    assert "renamed.safetensors" in fs.ls() and "model.safetensors" not in fs.ls()
    assert list_stashes(repo, "main") == []
    assert not fs.control({"op": "stash-pop"})["ok"]


def test_stash_refuses_while_a_file_is_open_for_writing(fs):
    fh = fs.create("open.bin")
    got = fs.control({"op": "stash"})
    assert not got["ok"] and "open for writing" in got["error"]
    fs.close(fh)


def test_a_new_branch_starts_empty(repo, committed):
    f = FS(repo, "fresh")
    assert f.ls() == [".coral"]
    f.put("a.txt", b"a")
    cid, _ = f.stage.commit("first on fresh")
    assert repo.branch_head("fresh") == cid and repo.read_commit(cid).parents == []
    f.close_all()


def test_auto_commit_rules(repo, committed):
    f = FS(repo, auto=AutoCommit(debounce=5.0, paths=["ckpt/*"], min_interval=0, keep_last=2))
    s = f.sfs
    f.mkdir("ckpt")
    f.put("log.txt", b"not counted")
    assert not s.auto_due(s.last_write + 100)  # only log.txt changed: it does not count
    fh = f.create("ckpt/a.bin")
    f.write(fh, 0, b"1")
    assert not s.auto_due(s.last_write + 100)  # open for writing
    f.close(fh)
    assert not s.auto_due(s.last_write + 1)    # debounce
    assert s.auto_due(s.last_write + 5.5)
    for i in range(3):
        out = s.auto_commit()
        assert out["commit"] and "ckpt/a.bin" in repo.read_commit(repo.branch_head("main")).message
        f.put("ckpt/a.bin", bytes([i]) * 10)
    tags = sorted(t for t in repo.tags() if t.startswith("auto/main/"))
    assert tags == ["auto/main/2", "auto/main/3"]
    s.auto.min_interval = 60
    assert not s.auto_due(s.last_write + 10)  # the last auto-commit was moments ago
    assert s.auto_due(s.last_commit + 61)
    f.close_all()


def test_gc_keeps_what_the_staging_area_and_stashes_need(repo, committed, tmp_path):
    f = FS(repo, "side")  # based on nothing: a new branch
    f.put("x.bin", b"x" * 5000)
    f.stage.commit("on side")
    f.rename("x.bin", "y.bin")  # a staged rename of a committed file: no spool copy
    f.put("z.bin", b"z")
    assert f.control({"op": "stash"})["ok"]
    f.close_all()
    repo.delete_branch("side")
    os.unlink(repo.refs._log_path("refs/heads/side"))  # the reflog expired too
    f = FS(repo, "side")  # the staging area follows the branch: nothing now
    assert f.ls() == [".coral"]
    assert repo.gc(grace_seconds=0).removed == 0  # the stash keeps its base commit
    assert f.control({"op": "stash-pop"})["ok"]  # y.bin is staged again; the stash is gone
    assert repo.gc(grace_seconds=0).removed > 0  # the commit of "side" goes now...
    assert f.cat("y.bin") == b"x" * 5000 and f.cat("z.bin") == b"z"  # ...what is staged stays
    cid, _ = f.stage.commit("side again")
    assert repo.fsck().ok
    f.close_all()


def test_write_behind_applies_in_order_and_drains_when_cancelled(repo, committed):
    """Writes answered from the queue reach the spool in order, reads see them, and a
    shutdown (the nursery cancelled, as SIGTERM does) still applies what was queued."""
    f = FS(repo, serving=False)
    fh = f.create("queued.bin")
    chunks = [bytes([i]) * (1 << 20) for i in range(12)]

    async def main():
        async with trio.open_nursery() as nursery:
            f.ops.start(nursery)
            await f.ops.write(fh, 0, b"x" * (12 << 20))
            assert await f.ops.read(fh, 0, 4) == b"xxxx"  # a read waits for the queue
            for i, c in enumerate(chunks):  # answered before they are written
                assert await f.ops.write(fh, i << 20, c) == len(c)
            assert f.sfs.pending, "the writes should still be queued"
            await f.ops.write(fh, 12 << 20, b"tail")  # past the end, while the queue is full
            attr = await f.ops.getattr(f.sfs.handles[fh].ino, None)
            assert attr.st_size == (12 << 20) + 4  # the size queued writes reach, already
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert not f.sfs.pending
    f.close(fh)
    assert f.cat("queued.bin") == b"".join(chunks) + b"tail"
    f.close_all()


def test_a_handle_follows_its_file_through_renames_and_ftruncate(fs):
    fh = fs.create("ckpt.tmp")
    fs.write(fh, 0, b"0123456789")
    fs.rename("ckpt.tmp", "ckpt.bin")  # renamed while open (a save finishing early)
    fs.write(fh, 10, b"abc")
    attr = pyfuse3.EntryAttributes()
    attr.st_size = 4
    run(fs.ops.setattr, fs.ino("ckpt.bin"), attr, _Fields(update_size=True), fh, None)  # ftruncate
    fs.close(fh)
    assert fs.cat("ckpt.bin") == b"0123"
    assert [c.path for c in fs.stage.changes()] == ["ckpt.bin"]


def test_only_a_write_copies_a_committed_file(fs, committed):
    fh = fs.open("model.safetensors")
    assert errno_of(fs.write, fh, 0, b"x") == errno.EBADF
    fs.close(fh)
    fh = fs.open("model.safetensors", RDWR)  # h5py "a", numpy "r+": opened read-write, read
    assert fs.read(fh, 0, 8) == (committed / "model.safetensors").read_bytes()[:8]
    fs.close(fh)
    assert fs.sfs.counters["copy_ups"] == 0 and fs.stage.changes() == []
    fh = fs.open("model.safetensors", RDWR)
    fs.write(fh, 8, b"{")  # the first write copies, then lands on the copy
    assert fs.sfs.counters["copy_ups"] == 1 and fs.read(fh, 8, 1) == b"{"
    fs.close(fh)
    assert [c.status for c in fs.stage.changes()] == ["modified"]


def test_a_malformed_control_request_is_answered_not_run(fs):
    fh = run(fs.ops.open, CONTROL_INO, RDWR, None).fh
    fs.write(fh, 0, b"commit please\n")
    got = json.loads(fs.read(fh))
    fs.close(fh)
    assert not got["ok"] and got["exit_code"] == 2 and "one JSON object a line" in got["error"]
    assert fs.control({"op": "nope"})["error"] == "unknown control request 'nope'"
