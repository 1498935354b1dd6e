"""Formats through real mounts: a Hugging Face Trainer saves into a writable mount
(save_total_limit rotates inside it) and ``coralfs commit --mount`` commits it byte-identical,
training_args.bin included; tensors of newer or unknown dtypes are served as their bytes."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from coralfs import Repository
from tests.conftest import run_cli, sha, tree_sha
from tests.hf_trainer import TRAINER_FILES, train
from tests.mount.conftest import mounted

pytestmark = pytest.mark.mount


@pytest.mark.timeout(600)
def test_trainer_saves_into_a_writable_mount_and_commits(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, None, "--write"):
        left = train(os.path.join(mp, "run"), steps=6, save_steps=2, save_total_limit=2)
        assert left == ["checkpoint-4", "checkpoint-6"]
        for name in left:
            assert TRAINER_FILES <= set(os.listdir(os.path.join(mp, "run", name)))
        in_mount = tree_sha(mp)
        p = run_cli("commit", "--mount", mp, "-m", "trainer run", repo=repo)
        assert "trainer run" in p.stdout or p.returncode == 0
        assert tree_sha(mp) == in_mount  # the mount now shows the commit, same bytes
    run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    assert tree_sha(tmp_path / "out") == in_mount
    assert not any(k.startswith("run/checkpoint-2/") for k in in_mount)
    r = Repository.open(repo)
    try:
        tree = r.tree_of("main")
        f = r.read_file(tree.entries["run/checkpoint-6/training_args.bin"].file)
        assert f.format == "torch"
        assert r.read_file(tree.entries["run/checkpoint-6/optimizer.pt"].file).tensors()
    finally:
        r.close()
    assert "no problems" in run_cli("fsck", repo=repo).stdout


def test_tensor_views_of_new_and_unknown_dtypes_serve_their_bytes(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    src = tmp_path / "src"
    src.mkdir()
    parts = {"e8m0": ("F8_E8M0", [4], b"\x7f\x7f\x80\x81"), "f4": ("F4", [8], b"\x12\x34\x56\x78"),
             "fnuz": ("F8_E5M2FNUZ", [2, 2], b"\x00\x3c\x80\xbc"), "new": ("Z7_NEW", [3], b"abcdef")}
    header, data = {}, b""
    for name, (dt, shape, raw) in parts.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    (src / "m.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + data)
    run_cli("commit", str(src), "-m", "new dtypes", repo=repo)
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, "main"):
        assert sha(os.path.join(mp, "m.safetensors")) == sha(src / "m.safetensors")
        views = os.path.join(mp, ".coral", "tensors", "m.safetensors")
        assert sorted(os.listdir(views)) == ["e8m0.npy", "f4.npy", "fnuz.npy", "new.npy"]
        for name, (_dt, shape, raw) in parts.items():
            v = np.load(os.path.join(views, name + ".npy"))
            assert v.dtype == np.uint8 and v.tobytes() == raw
        assert np.load(os.path.join(views, "fnuz.npy")).shape == (2, 2)
