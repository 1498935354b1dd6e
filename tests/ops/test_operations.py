"""The ops tier: Operations methods called directly (no kernel), for edge cases."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pyfuse3
import pytest
import trio
from safetensors.numpy import save_file

from coralfs.fs.readonly.ops import CoralOperations
from coralfs.fs.readonly.vfs import ROOT_INO, VFS


def run(coro_fn, *args):
    return trio.run(coro_fn, *args)


@pytest.fixture
def ops(repo, tmp_path):
    d = tmp_path / "ck"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal((300, 300)).astype(np.float32), "b": np.arange(10, dtype=np.int64)},
              str(d / "model.safetensors"))
    (d / "sub" / "notes.txt").write_text("hello")
    repo.commit_paths([str(d)], "one")
    repo.create_tag("v1")
    vfs = VFS(repo, "v1")
    o = CoralOperations(vfs)
    o.src = d
    return o


def lookup(ops, parent, name):
    return run(ops.lookup, parent, name.encode(), None)


def expect_errno(code, fn, *args):
    with pytest.raises(pyfuse3.FUSEError) as e:
        run(fn, *args)
    assert e.value.errno == code


def test_lookup_getattr_and_stable_inodes(ops):
    a = lookup(ops, ROOT_INO, "model.safetensors")
    assert a.st_size == os.path.getsize(ops.src / "model.safetensors")
    assert a.st_mode & 0o777 == 0o444 and a.entry_timeout > 60
    b = lookup(ops, ROOT_INO, "model.safetensors")
    assert a.st_ino == b.st_ino
    sub = lookup(ops, ROOT_INO, "sub")
    assert sub.st_mode & 0o040000
    notes = lookup(ops, sub.st_ino, "notes.txt")
    assert run(ops.getattr, notes.st_ino, None).st_size == 5
    expect_errno(errno.ENOENT, ops.lookup, ROOT_INO, b"nope", None)
    expect_errno(errno.ENOENT, ops.getattr, 999999, None)
    expect_errno(errno.ENOENT, ops.lookup, ROOT_INO, b"..", None)


def test_forget_frees_and_numbers_stay_stable(ops):
    a = lookup(ops, ROOT_INO, "model.safetensors")
    lookup(ops, ROOT_INO, "model.safetensors")
    run(ops.forget, [(a.st_ino, 1)])
    assert run(ops.getattr, a.st_ino, None).st_ino == a.st_ino  # one reference left
    run(ops.forget, [(a.st_ino, 1)])
    expect_errno(errno.ENOENT, ops.getattr, a.st_ino, None)  # forgotten
    again = lookup(ops, ROOT_INO, "model.safetensors")
    assert again.st_ino == a.st_ino  # derived from what the node is
    run(ops.forget, [(ROOT_INO, 5)])
    assert run(ops.getattr, ROOT_INO, None).st_ino == ROOT_INO  # the root is never forgotten


def test_read_edges(ops):
    a = lookup(ops, ROOT_INO, "model.safetensors")
    fi = run(ops.open, a.st_ino, os.O_RDONLY, None)
    assert fi.keep_cache and not fi.direct_io
    want = (ops.src / "model.safetensors").read_bytes()
    assert run(ops.read, fi.fh, 0, 100) == want[:100]
    assert run(ops.read, fi.fh, len(want) - 10, 100) == want[-10:]  # clipped at EOF
    assert run(ops.read, fi.fh, len(want) + 5, 100) == b""          # past EOF
    assert run(ops.read, fi.fh, 1000, 0) == b""
    assert run(ops.read, fi.fh, 0, len(want) + 1000) == want
    run(ops.release, fi.fh)
    expect_errno(errno.EBADF, ops.read, fi.fh, 0, 10)  # released handle (issue 10: EBADF, was ENOENT)
    d = lookup(ops, ROOT_INO, "sub")
    expect_errno(errno.EISDIR, ops.open, d.st_ino, os.O_RDONLY, None)


def test_writes_answer_erofs(ops):
    a = lookup(ops, ROOT_INO, "model.safetensors")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        expect_errno(errno.EROFS, ops.open, a.st_ino, flags, None)
    expect_errno(errno.EROFS, ops.write, 1, 0, b"x")
    expect_errno(errno.EROFS, ops.create, ROOT_INO, b"n", 0o644, os.O_WRONLY, None)
    expect_errno(errno.EROFS, ops.unlink, ROOT_INO, b"model.safetensors", None)
    expect_errno(errno.EROFS, ops.mkdir, ROOT_INO, b"d", 0o755, None)
    expect_errno(errno.EROFS, ops.rename, ROOT_INO, b"a", ROOT_INO, b"b", 0, None)
    expect_errno(errno.EROFS, ops.setattr, a.st_ino, None, None, None, None)
    expect_errno(errno.EROFS, ops.setxattr, a.st_ino, b"user.x", b"1", None)
    expect_errno(errno.EROFS, ops.access, a.st_ino, os.W_OK, None)
    assert run(ops.access, a.st_ino, os.R_OK, None) is True


def test_readdir_model_and_coral_views(ops):
    vfs = ops.vfs
    names = set(vfs.children(ROOT_INO))
    assert names == {"model.safetensors", "sub", ".coral"}
    coral = lookup(ops, ROOT_INO, ".coral")
    assert set(vfs.children(coral.st_ino)) == {"commit.json", "stats.json", "tensors"}
    cj = lookup(ops, coral.st_ino, "commit.json")
    fi = run(ops.open, cj.st_ino, os.O_RDONLY, None)
    meta = json.loads(run(ops.read, fi.fh, 0, cj.st_size))
    assert meta["message"] == "one"
    t = lookup(ops, coral.st_ino, "tensors")
    f = lookup(ops, t.st_ino, "model.safetensors")
    assert set(vfs.children(f.st_ino)) == {"w.npy", "b.npy"}
    w = lookup(ops, f.st_ino, "w.npy")
    fi = run(ops.open, w.st_ino, os.O_RDONLY, None)
    import io
    arr = np.load(io.BytesIO(run(ops.read, fi.fh, 0, w.st_size)))
    assert arr.shape == (300, 300) and arr.dtype == np.float32
    st = lookup(ops, coral.st_ino, "stats.json")
    fi = run(ops.open, st.st_ino, os.O_RDONLY, None)
    assert fi.direct_io and not fi.keep_cache
    assert "decoded_bytes" in json.loads(run(ops.read, fi.fh, 0, st.st_size))
    assert run(ops.listxattr, w.st_ino, None) == []
    expect_errno(pyfuse3.ENOATTR, ops.getxattr, w.st_ino, b"user.x", None)
    assert run(ops.statfs, None).f_namemax == 255


def test_repository_view_resolution(repo, tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    (d / "f.bin").write_bytes(b"abc")
    c1 = repo.commit_paths([str(d)], "c1").commit
    repo.create_branch("feature/x")
    ops = CoralOperations(VFS(repo, None))
    br = lookup(ops, ROOT_INO, "branches")
    assert br.entry_timeout <= 1
    feat = lookup(ops, br.st_ino, "feature")
    x = lookup(ops, feat.st_ino, "x")
    assert lookup(ops, x.st_ino, "f.bin").st_size == 3
    commits = lookup(ops, ROOT_INO, "commits")
    short = lookup(ops, commits.st_ino, c1.hex()[:6])
    full = lookup(ops, commits.st_ino, c1.hex())
    assert short.st_ino == full.st_ino
    expect_errno(errno.ENOENT, ops.lookup, commits.st_ino, b"zzzz", None)
    expect_errno(errno.ENOENT, ops.lookup, commits.st_ino, b"abc", None)  # too short
    head = lookup(ops, ROOT_INO, "HEAD")
    assert run(ops.readlink, head.st_ino, None) == b"branches/main"


def test_corrupt_chunk_is_eio_missing_file_object_is_enoent(ops):
    repo = ops.vfs.repo
    a = lookup(ops, ROOT_INO, "model.safetensors")
    f = repo.read_file(repo.tree_of("v1").entries["model.safetensors"].file)
    victim = repo.odb.get_object(f.tensors()["w"].tensor).chunks[0]
    path = repo.store._path(victim)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xde\xad")
    repo.odb.chunks.clear()
    fi = run(ops.open, a.st_ino, os.O_RDONLY, None)
    expect_errno(errno.EIO, ops.read, fi.fh, os.path.getsize(ops.src / "model.safetensors") - 64, 64)
    assert run(ops.read, fi.fh, 0, 8)  # the header chunk is fine


def test_a_bug_deep_in_the_vfs_answers_eio_and_is_logged_not_enoent(ops, monkeypatch, caplog):
    from tests.ops.conftest import unexpected_errors
    a = lookup(ops, ROOT_INO, "model.safetensors")

    def broken(ino):
        raise KeyError("a bug, not a missing name")
    monkeypatch.setattr(ops.vfs, "node", broken)
    expect_errno(errno.EIO, ops.getattr, a.st_ino, None)
    bad = unexpected_errors(caplog.records)
    assert len(bad) == 1 and "getattr: unexpected error" in bad[0].getMessage()
    assert bad[0].exc_info[0] is KeyError
    caplog.clear()  # seen: the autouse check would fail this test otherwise


def test_unknown_handles_answer_ebadf(ops):
    expect_errno(errno.EBADF, ops.read, 12345, 0, 10)
    expect_errno(errno.EBADF, ops.readdir, 12345, 0, None)
    expect_errno(errno.ENOENT, ops.getattr, 999999, None)  # an unknown inode is still ENOENT
