"""The one ingest path (coralfs/ingest.py): commit_paths and the staging commit agree."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs.formats import FormatError
from coralfs.ingest import DiskFile, ingest_files, tree_mode
from coralfs.objects.kinds import MODE_EXEC, MODE_FILE
from coralfs.staging import StagingArea


def _bad_npz(path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", b"\x93NUMPY\x01\x00\x10\x00{garbage}       ")


def _objects(repo) -> int:
    return sum(1 for _ in repo.store)


def test_every_file_is_validated_before_any_object_is_stored(repo, tmp_path):
    (tmp_path / "a.bin").write_bytes(os.urandom(1 << 16))
    _bad_npz(tmp_path / "b.npz")
    before = _objects(repo)
    files = [DiskFile("a.bin", str(tmp_path / "a.bin"), 0o644), DiskFile("b.npz", str(tmp_path / "b.npz"), 0o644)]
    with pytest.raises(FormatError) as e:
        ingest_files(repo, files, {})
    assert e.value.path == f"{tmp_path / 'b.npz'}:a.npy" and str(e.value).endswith("nothing was committed")
    assert _objects(repo) == before  # a.bin, listed first, was not stored either


def test_an_error_names_the_label_and_keeps_the_archive_member(repo, tmp_path):
    _bad_npz(tmp_path / "spool-7f3a")
    with pytest.raises(FormatError) as e:
        ingest_files(repo, [DiskFile("ckpt/b.npz", str(tmp_path / "spool-7f3a"), 0o644, label="ckpt/b.npz")], {})
    assert e.value.path == "ckpt/b.npz:a.npy"
    assert str(e.value).startswith("ckpt/b.npz:a.npy: ") and "spool" not in str(e.value)


def test_the_tree_mode_is_the_owner_executable_bit():
    assert [tree_mode(p) for p in (0o644, 0o755, 0o700, 0o600, 0o055)] == [MODE_FILE, MODE_EXEC, MODE_EXEC, MODE_FILE, MODE_FILE]


def test_the_staging_commit_validates_all_files_first_and_names_tree_paths(repo, tmp_path):
    st = StagingArea.open(repo, "main")
    try:
        for path, data in (("a.bin", os.urandom(1 << 16)), ("b.npz", None)):
            e = st.create(path, 0o644)
            if data is None:
                _bad_npz(st.spool_path(e.spool))
            else:
                with open(st.spool_path(e.spool), "wb") as f:
                    f.write(data)
        before = _objects(repo)
        with pytest.raises(FormatError) as err:
            st.commit("two files")
        assert err.value.path == "b.npz:a.npy"
        assert _objects(repo) == before and repo.branch_head("main") is None
    finally:
        st.close()


def test_commit_paths_and_the_staging_commit_make_the_same_tree(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_file({"w": np.arange(256, dtype=np.float32)}, str(src / "model.safetensors"))
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(src / "run.sh", 0o755)
    by_paths = repo.commit_paths([str(src)], "from disk", branch="disk")
    st = StagingArea.open(repo, "staged")  # the same files written into a staging area of a new branch
    try:
        for name in ("model.safetensors", "run.sh"):
            e = st.create(name, os.stat(src / name).st_mode & 0o777)
            with open(src / name, "rb") as f, open(st.spool_path(e.spool), "wb") as out:
                out.write(f.read())
        cid, _ = st.commit("staged")
    finally:
        st.close()
    assert repo.read_commit(cid).tree == repo.read_commit(by_paths.commit).tree
    assert repo.tree_of(cid).entries["run.sh"].mode == MODE_EXEC
