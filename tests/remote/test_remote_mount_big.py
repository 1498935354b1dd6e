"""Laziness of remote mounts on a 1 GiB model, from a file:// remote and from moto (S3):
reading one tensor fetches at most 1.2x its stored bytes, and a second mount with the
warm cache fetches nothing."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs.objects.kinds import Tensor, TensorSegment
from coralfs.objects.repository import Repository
from tests.conftest import run_cli
from tests.remote.remote_build import build_remote
from tests.remote.test_remote_mount import remote_mounted, remote_stats

pytestmark = [pytest.mark.mount, pytest.mark.slow, pytest.mark.timeout(1200)]

TENSORS = 8
SHAPE = (8192, 4096)   # 128 MiB of float32 each: 1 GiB in all


def write_big_model(path: str, seed: int = 0) -> None:
    """A ~1 GiB safetensors file of random float32 (compressible only in the exponent
    bytes, like trained weights), made in a few seconds."""
    rng = np.random.default_rng(seed)
    save_file({f"layers.{i}.weight": rng.standard_normal(SHAPE, dtype=np.float32) for i in range(TENSORS)}, path)


def tensor_range(path: str, name: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    a, b = header[name]["data_offsets"]
    return 8 + n + a, b - a


def read_range(path: str, off: int, length: int, step: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(off)
        left = length
        while left:
            b = f.read(min(step, left))
            assert b
            h.update(b)
            left -= len(b)
    return h.hexdigest()


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("big")
    src = base / "src"
    src.mkdir()
    model = str(src / "model.safetensors")
    write_big_model(model)
    repo = str(base / "repo")
    run_cli("init", repo)
    run_cli("commit", str(src), "-m", "big", repo=repo)
    return {"repo": repo, "model": model}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_one_tensor_of_a_1gb_model_fetches_at_most_1_2x_its_stored_bytes(kind, big_repo, tmp_path, request):
    b = big_repo
    remote = request.getfixturevalue(f"{kind}_remote")
    build_remote(b["repo"], remote.open())
    ep = ["--endpoint", remote.endpoint] if remote.endpoint else []
    name = "layers.3.weight"
    off, length = tensor_range(b["model"], name)
    want = read_range(b["model"], off, length)
    local = Repository.open(b["repo"])
    f = local.read_file(local.tree_of("main").entries["model.safetensors"].file)
    seg = next(s for s in f.segments if isinstance(s, TensorSegment) and s.name == name)
    stored = sum(local.store.size(c) for c in local.odb.get_object(seg.tensor, Tensor).chunks)
    total_stored = sum(local.store.size(o) for o in local.store)
    cache = str(tmp_path / "cache")
    mp = str(tmp_path / "m1")
    with remote_mounted(remote.url, mp, "main", "--cache-dir", cache, *ep):
        assert read_range(os.path.join(mp, "model.safetensors"), off, length) == want
        cold = remote_stats(mp)
    # Everything fetched since the mount started (metadata included) against the tensor.
    assert stored > 100 << 20 and total_stored > 7 * stored
    assert stored <= cold["bytes_fetched"] <= 1.2 * stored, (cold, stored)
    mp2 = str(tmp_path / "m2")
    with remote_mounted(remote.url, mp2, "main", "--cache-dir", cache, *ep):
        assert read_range(os.path.join(mp2, "model.safetensors"), off, length) == want
        warm = remote_stats(mp2)
    assert warm["bytes_fetched"] == 0 and warm["range_gets"] == 0
