"""The similarity index is a cache: a damaged SQLite file is rebuilt with a warning and
the commit goes through (it used to fail with a sqlite3 traceback)."""

from __future__ import annotations

import logging
import os

import numpy as np
from safetensors.numpy import save_file

from coralfs import Repository


def _ckpt(path, seed):
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((64, 64)).astype(np.float32)}, str(path))


def test_damaged_similarity_index_is_rebuilt(tmp_path, caplog):
    path = str(tmp_path / "repo")
    Repository.init(path).close()
    _ckpt(tmp_path / "a.safetensors", 0)
    with Repository.open(path) as repo:
        repo.commit_paths([str(tmp_path / "a.safetensors")], "a")
    index = os.path.join(path, "index", "similarity.sqlite")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(index + suffix):
            os.unlink(index + suffix)
    with open(index, "wb") as f:
        f.write(b"SQLite format 3\0" + b"\xde\xad" * 4096)
    _ckpt(tmp_path / "b.safetensors", 1)
    caplog.set_level(logging.WARNING)
    with Repository.open(path) as repo:
        res = repo.commit_paths([str(tmp_path / "b.safetensors")], "b", branch="other")
        assert repo.fsck().ok
        out = tmp_path / "out"
        repo.export(res.commit.hex(), str(out))
    assert (out / "b.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert any("similarity index" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
