"""Laziness of remote mounts on a 1 GiB model, from a file:// remote and from moto (S3),
built by the test builder and written by `coralfs push`: reading one tensor fetches at
most 1.2x its stored bytes, and a second mount with the warm cache fetches nothing. The
model is made and committed once for the module."""

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
from coralfs.remote.packs import TARGET_PACK, PackIndexes
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


def tensor_chunk_ids(repo_path: str, name: str) -> list[bytes]:
    local = Repository.open(repo_path)
    f = local.read_file(local.tree_of("main").entries["model.safetensors"].file)
    seg = next(s for s in f.segments if isinstance(s, TensorSegment) and s.name == name)
    return list(local.odb.get_object(seg.tensor, Tensor).chunks)


def tensor_stored_bytes(repo_path: str, name: str) -> tuple[int, int]:
    """(stored bytes of tensor ``name``'s chunks, stored bytes of every object)."""
    local = Repository.open(repo_path)
    stored = sum(local.store.size(c) for c in tensor_chunk_ids(repo_path, name))
    return stored, sum(local.store.size(o) for o in local.store)


def assert_chunks_sit_together(blobs, chunks: list[bytes]) -> None:
    """The chunks of one tensor fill one stretch of each pack they are in (nothing else
    between them), in as few packs as their size allows: one tensor, few range GETs."""
    where = PackIndexes(blobs).where
    by_pack: dict[str, list] = {}
    for c in chunks:
        loc = where[c]
        by_pack.setdefault(loc.pack, []).append((loc.offset, loc.length))
    for spans in by_pack.values():
        spans.sort()
        lo, hi = spans[0][0], spans[-1][0] + spans[-1][1]
        assert sum(n for _o, n in spans) == hi - lo, "another object sits among the tensor's chunks"
    stored = sum(n for spans in by_pack.values() for _o, n in spans)
    assert len(by_pack) <= stored // TARGET_PACK + 2, (len(by_pack), stored)


def check_one_tensor_then_warm(remote, big: dict, tmp_path) -> float:
    """Mount ``remote`` twice with one cache: the first mount's read of one tensor fetches
    at most 1.2x its stored bytes (everything fetched since the mount started, metadata
    included), the second fetches nothing. Returns the fetched/stored ratio."""
    ep = ["--endpoint", remote.endpoint] if remote.endpoint else []
    name = "layers.3.weight"
    off, length = tensor_range(big["model"], name)
    want = read_range(big["model"], off, length)
    stored, total_stored = tensor_stored_bytes(big["repo"], name)
    cache = str(tmp_path / "cache")
    mp = str(tmp_path / "m1")
    with remote_mounted(remote.url, mp, "main", "--cache-dir", cache, *ep):
        assert read_range(os.path.join(mp, "model.safetensors"), off, length) == want
        cold = remote_stats(mp)
    assert stored > 100 << 20 and total_stored > 7 * stored
    assert stored <= cold["bytes_fetched"] <= 1.2 * stored, (cold, stored)
    mp2 = str(tmp_path / "m2")
    with remote_mounted(remote.url, mp2, "main", "--cache-dir", cache, *ep):
        assert read_range(os.path.join(mp2, "model.safetensors"), off, length) == want
        warm = remote_stats(mp2)
    assert warm["bytes_fetched"] == 0 and warm["range_gets"] == 0
    print(f"{remote.url}: fetched {cold['bytes_fetched']} of {stored} stored in {cold['range_gets']} range GETs")
    return cold["bytes_fetched"] / stored


def empty(remote) -> None:
    """Delete what a test wrote to its bucket: moto keeps every object in memory, and
    each of these tests writes a 1 GiB model."""
    if remote.kind == "file":
        return
    b = remote.open()
    for key in list(b.list()):
        b.delete(key)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_one_tensor_of_a_1gb_model_fetches_at_most_1_2x_its_stored_bytes(kind, big_repo, tmp_path, request):
    remote = request.getfixturevalue(f"{kind}_remote")
    build_remote(big_repo["repo"], remote.open())
    try:
        ratio = check_one_tensor_then_warm(remote, big_repo, tmp_path)
        print(f"built {kind}: fetched/stored {ratio:.4f}")
    finally:
        empty(remote)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_one_tensor_of_a_pushed_1gb_model_fetches_at_most_1_2x_its_stored_bytes(kind, big_repo, tmp_path, request):
    """The same promise on the bucket users have: the one `coralfs push` wrote (its pack
    order and pack sizes, plan_push's), not the test builder's."""
    remote = request.getfixturevalue(f"{kind}_remote")
    repo = big_repo["repo"]
    name = f"pushed-{kind}"   # the repository is the module's: one remote per test, removed after
    run_cli("remote", "add", name, remote.url, *(["--endpoint", remote.endpoint] if remote.endpoint else []), repo=repo)
    try:
        out = run_cli("push", name, "main", repo=repo).stdout
        assert "main: (new)" in out, out
        assert_chunks_sit_together(remote.open(), tensor_chunk_ids(repo, "layers.3.weight"))
        ratio = check_one_tensor_then_warm(remote, big_repo, tmp_path)
        print(f"pushed {kind}: fetched/stored {ratio:.4f}")
    finally:
        run_cli("remote", "remove", name, repo=repo)
        empty(remote)
