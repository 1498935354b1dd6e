"""Remote mounts served from each emulator (moto, gcp-storage-emulator, Azurite): every file
byte-identical, a warm cache fetches nothing; and a paused store (SIGSTOP of moto) mid-read
fails the reads that need it with EIO while the rest is served, and umount works."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import run_cli, sha, tree_sha
from tests.remote.remote_build import build_remote
from tests.remote.test_remote_mount import remote_mounted, remote_stats

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
            result: dict = {}

            def big_read() -> None:
                try:
                    (mp / "model.safetensors").read_bytes()
                    result["ok"] = True
                except OSError as e:
                    result["errno"] = e.errno

            t = threading.Thread(target=big_read, daemon=True)
            t.start()
            assert sorted(os.listdir(mp)) == [".coral", "config.json", "emb.npy", "model.safetensors"]
            assert remote_stats(str(mp))["packs"] > 0
            with open(mp / "config.json", "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                assert hashlib.sha256(f.read()).hexdigest() == small_repo["second"]["config.json"]
            t.join(120)
            assert not t.is_alive() and result == {"errno": errno.EIO}
            with open(m["log"]) as f:
                log = f.read()
            assert re.search(r"object [0-9a-f]{64} could not be fetched: .* did not answer within 3 s", log), log
            run_cli("umount", str(mp))   # while the store is still paused
            assert not any(ln.split()[1] == str(mp) for ln in open("/proc/mounts"))
        finally:
            s3_remote.service.resume()
    shutil.rmtree(tmp_path / "c")
