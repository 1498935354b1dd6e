"""Remote mounts served from each emulator (moto, gcp-storage-emulator, Azurite): every file
byte-identical, a warm cache fetches nothing; and a paused store (SIGSTOP of moto) mid-read
fails the reads that need it with EIO while the rest is served, and umount works."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import run_cli, sha, tree_sha
from tests.remote.remote_build import build_remote
from tests.remote.test_remote_mount import check_stalled_mount, remote_mounted, remote_stats

pytestmark = [pytest.mark.mount, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory):
    """Two commits of a 16 MiB safetensors file (16 tensors), a text file and an .npy."""
    base = tmp_path_factory.mktemp("cloud-src")
    src = base / "src"
    src.mkdir()
    rng = np.random.default_rng(5)
    tensors = {f"h.{i}.w": rng.standard_normal((1024, 256), dtype=np.float32) for i in range(16)}
    save_file(tensors, str(src / "model.safetensors"))
    (src / "config.json").write_text('{"layers": 16}\n')
    np.save(src / "emb.npy", rng.standard_normal((512, 64)).astype(np.float32))
    repo = str(base / "repo")
    run_cli("init", repo)
    run_cli("config", "set", "storage.chunk_size", "256k", repo=repo)
    run_cli("commit", str(src), "-m", "one", repo=repo)
    first = tree_sha(src)
    tensors["h.3.w"] += 1e-3
    save_file(tensors, str(src / "model.safetensors"))
    run_cli("commit", str(src), "-m", "two", repo=repo)
    return {"repo": repo, "src": str(src), "first": first, "second": tree_sha(src)}


def populate(remote, repo: str) -> None:
    blobs = remote.open()
    build_remote(repo, blobs, pack_size=4 << 20)


def test_remote_mount_on_each_cloud_is_byte_identical_and_warm_fetches_nothing(cloud_remote, small_repo, tmp_path):
    populate(cloud_remote, small_repo["repo"])
    cache = str(tmp_path / "cache")
    ep = ["--endpoint", cloud_remote.endpoint] if cloud_remote.endpoint else []
    with remote_mounted(cloud_remote.url, str(tmp_path / "m1"), "main", "--cache-dir", cache, *ep):
        assert tree_sha(tmp_path / "m1") == small_repo["second"]
        cold = remote_stats(str(tmp_path / "m1"))
    with remote_mounted(cloud_remote.url, str(tmp_path / "m2"), "main~1", "--cache-dir", cache, *ep):
        assert tree_sha(tmp_path / "m2") == small_repo["first"]
    with remote_mounted(cloud_remote.url, str(tmp_path / "m3"), "main", "--cache-dir", cache, *ep):
        assert tree_sha(tmp_path / "m3") == small_repo["second"]
        warm = remote_stats(str(tmp_path / "m3"))
    assert cold["bytes_fetched"] > 8 << 20 and cold["fetch_failures"] == 0
    assert warm["bytes_fetched"] == 0 and warm["range_gets"] == 0 and warm["index_bytes_fetched"] == 0


def test_a_paused_store_fails_reads_with_eio_serves_the_rest_and_unmounts(s3_remote, small_repo, tmp_path):
    populate(s3_remote, small_repo["repo"])
    mp = tmp_path / "m"
    with remote_mounted(s3_remote.url, str(mp), "main", "--cache-dir", str(tmp_path / "c"),
                        "--fetch-timeout", "3") as m:
        assert sha(mp / "config.json") == small_repo["second"]["config.json"]
        s3_remote.service.pause()
        try:
            check_stalled_mount(mp, m["log"], "model.safetensors", "config.json", small_repo["second"]["config.json"])
        finally:
            s3_remote.service.resume()
    shutil.rmtree(tmp_path / "c")
