"""Remote mounts through the real CLI and real kernel mounts: `coralfs mount URL MNT@REF`
and `--remote NAME`, served from a remote's packs through the local chunk cache."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from coralfs.objects.repository import Repository
from coralfs.remote.store import RemoteObjectStore
from tests.conftest import minilm_dir, run_cli, sha, tree_sha
from tests.mount.conftest import force_unmount
from tests.remote.remote_build import build_remote
from tests.remote.test_remote_store import file_blobs

pytestmark = [pytest.mark.mount, pytest.mark.timeout(900)]


@contextlib.contextmanager
def remote_mounted(url: str, mountpoint: str, ref: str, *extra: str):
    os.makedirs(mountpoint, exist_ok=True)
    p = run_cli("mount", url, f"{mountpoint}@{ref}", *extra)
    assert "mounted" in p.stdout and url in p.stdout
    pid = int(p.stdout.split("(pid ")[1].split(",")[0])
    log = p.stdout.split(", log ")[1].rstrip().rstrip(")")
    try:
        yield {"pid": pid, "log": log}
    finally:
        force_unmount(mountpoint, pid)


def remote_stats(mountpoint: str) -> dict:
    with open(os.path.join(mountpoint, ".coral", "stats.json")) as f:
        return json.load(f)["remote"]


def read_whole_mount(url: str, mountpoint, ref: str, want: dict, *extra: str) -> dict:
    """Mount ``url`` at MOUNTPOINT@REF, check every file against ``want`` (tree_sha) and
    return the mount's remote stats, read before it is unmounted."""
    with remote_mounted(url, str(mountpoint), ref, *extra):
        assert tree_sha(mountpoint) == want
        return remote_stats(str(mountpoint))


@pytest.fixture(scope="module")
def minilm_remote(tmp_path_factory):
    """MiniLM plus an .npy file in two commits of a local repository, and a file://
    remote built from it (tag v1 on the first commit)."""
    base = tmp_path_factory.mktemp("remote-minilm")
    repo = str(base / "repo")
    run_cli("init", repo)
    src = base / "src"
    shutil.copytree(minilm_dir(), src)
    np.save(src / "emb.npy", np.random.default_rng(1).standard_normal((2000, 64)).astype(np.float32))
    run_cli("commit", str(src), "-m", "one", repo=repo)
    run_cli("tag", "v1", repo=repo)
    first = tree_sha(src)
    np.save(src / "emb.npy", np.random.default_rng(2).standard_normal((2000, 64)).astype(np.float32))
    run_cli("commit", str(src), "-m", "two", repo=repo)
    remote = base / "remote"
    build_remote(repo, file_blobs(remote), pack_size=8 << 20)
    return {"repo": repo, "remote": str(remote), "url": f"file://{remote}", "src": str(src),
            "first": first, "second": tree_sha(src), "base": base}


def test_remote_mount_serves_every_file_byte_identical(minilm_remote, tmp_path):
    r = minilm_remote
    cache = str(tmp_path / "cache")
    st = read_whole_mount(r["url"], tmp_path / "m1", "main", r["second"], "--cache-dir", cache)
    assert st["bytes_fetched"] > 0 and st["fetch_failures"] == 0
    with remote_mounted(r["url"], str(tmp_path / "m2"), "v1", "--cache-dir", cache):
        assert tree_sha(tmp_path / "m2") == r["first"]
        commit = json.loads((tmp_path / "m2" / ".coral" / "commit.json").read_text())
        assert commit["id"] == Repository.open(r["repo"]).resolve("v1").hex()
        with pytest.raises(OSError) as e:
            (tmp_path / "m2" / "new.txt").write_text("x")
        assert e.value.errno == errno.EROFS


def test_mount_by_remote_name_of_a_repository(minilm_remote, tmp_path):
    r = minilm_remote
    local = tmp_path / "clone"
    run_cli("init", str(local))
    with open(local / "config.toml", "a") as f:
        f.write(f'\n[remote]\n"origin.url" = "{r["url"]}"\n')
    mp = tmp_path / "m"
    mp.mkdir()
    p = run_cli("mount", "--remote", "origin", str(local), f"{mp}@main", "--cache-dir", str(tmp_path / "c"))
    pid = int(p.stdout.split("(pid ")[1].split(",")[0])
    try:
        assert tree_sha(mp) == r["second"]
        mounts = json.loads(run_cli("mounts", "--json").stdout)
        assert any(m["mountpoint"] == str(mp) and m["repo"] == r["url"] for m in mounts)
    finally:
        run_cli("umount", str(mp))
        force_unmount(str(mp), pid)
    bad = run_cli("mount", "--remote", "nope", str(local), f"{mp}@main", check=False)
    assert bad.returncode != 0 and "no remote 'nope'" in bad.stderr and "remote add" in bad.stderr


def test_a_warm_cache_fetches_nothing(minilm_remote, tmp_path):
    r = minilm_remote
    cache = str(tmp_path / "cache")
    cold = read_whole_mount(r["url"], tmp_path / "m1", "main", r["second"], "--cache-dir", cache)
    warm = read_whole_mount(r["url"], tmp_path / "m2", "main", r["second"], "--cache-dir", cache)
    # main's tree is 72.8 MiB of stored frames: a cold mount fetches at least those (a
    # bound on the bytes, not on duplicate or gap bytes, which fetches now avoid more)
    assert cold["bytes_fetched"] > 72 << 20
    assert warm["bytes_fetched"] == 0 and warm["range_gets"] == 0 and warm["objects_fetched"] == 0
    # The pack indexes are kept too (fetched once, by the mount command's own checks).
    kept = [f for d, _, fs in os.walk(cache) for f in fs if d.endswith("indexes")]
    assert kept and all(f.endswith(".idx") for f in kept) and warm["index_bytes_fetched"] == 0
    assert warm["cache_hits"] > 0


def test_eviction_keeps_the_cache_within_cache_size(minilm_remote, tmp_path):
    r = minilm_remote
    cache = tmp_path / "cache"
    st = read_whole_mount(r["url"], tmp_path / "m", "main", r["second"], "--cache-dir", str(cache), "--cache-size", "8m")
    on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs
                  if "/chunks/" in os.path.join(d, f))
    assert st["cache_evicted"] > 0 and st["cache_budget"] == 8 << 20
    assert 0 < on_disk <= 8 << 20


def test_a_torn_cache_entry_is_refetched(minilm_remote, tmp_path):
    r = minilm_remote
    cache = tmp_path / "cache"
    with remote_mounted(r["url"], str(tmp_path / "m1"), "main", "--cache-dir", str(cache)):
        assert sha(tmp_path / "m1" / "model.safetensors") == r["second"]["model.safetensors"]
    entries = sorted((os.path.getsize(os.path.join(d, f)), os.path.join(d, f))
                     for d, _, fs in os.walk(cache) for f in fs if "/chunks/" in os.path.join(d, f))
    torn = [p for _n, p in entries[-3:]]   # the biggest: tensor chunks
    for p in torn:
        os.truncate(p, os.path.getsize(p) // 3)
    with remote_mounted(r["url"], str(tmp_path / "m2"), "main", "--cache-dir", str(cache)):
        assert sha(tmp_path / "m2" / "model.safetensors") == r["second"]["model.safetensors"]
        st = remote_stats(str(tmp_path / "m2"))
    assert st["cache_discarded"] == 3 and st["objects_fetched"] == 3


def test_a_corrupted_pack_byte_is_eio_naming_the_object(minilm_remote, tmp_path):
    r = minilm_remote
    remote = tmp_path / "remote"
    shutil.copytree(r["remote"], remote)
    local = Repository.open(r["repo"])
    emb = local.read_file(local.tree_of("main").entries["emb.npy"].file)
    victim = emb.segments[-1]
    chunk = (local.odb.get_object(victim.tensor).chunks[0] if hasattr(victim, "tensor") else victim.chunks[0][0])
    s = RemoteObjectStore(file_blobs(remote), str(tmp_path / "probe"), 1 << 30)
    loc = s.indexes.where[chunk]
    s.close()

    def flip() -> None:
        with open(remote / loc.pack, "r+b") as f:
            f.seek(loc.offset + loc.length - 10)   # in the payload: only the decode can tell
            b = f.read(1)
            f.seek(loc.offset + loc.length - 10)
            f.write(bytes([b[0] ^ 0x10]))

    flip()
    mp = tmp_path / "m"
    with remote_mounted(f"file://{remote}", str(mp), "main", "--cache-dir", str(tmp_path / "c")) as m:
        with pytest.raises(OSError) as e:
            (mp / "emb.npy").read_bytes()
        assert e.value.errno == errno.EIO
        # Other files are served, byte-identical.
        assert sha(mp / "model.safetensors") == r["second"]["model.safetensors"]
        with open(m["log"]) as f:
            assert chunk.hex() in f.read()
        # The damaged copy was not kept: once the remote is repaired, the read succeeds.
        flip()
        assert sha(mp / "emb.npy") == r["second"]["emb.npy"]


def test_bad_remote_mounts_are_one_line_errors(minilm_remote, tmp_path):
    r = minilm_remote
    mp = tmp_path / "m"
    mp.mkdir()
    cases = [
        ((r["url"], str(mp)), "shows one commit"),
        ((r["url"], f"{mp}@nope"), "nope"),
        ((f"file://{tmp_path}", f"{mp}@main"), "not a coralfs remote"),
        (("gopher://x/y", f"{mp}@main"), "unknown remote URL"),
        ((r["url"], f"{mp}@main", "--write"), "read-only"),
        ((r["repo"], f"{mp}@main", "--endpoint", "http://127.0.0.1:1"), "belong to remote mounts"),
        ((r["url"], f"{mp}@main", "--fetch-timeout", "0"), "--fetch-timeout"),
    ]
    for args, msg in cases:
        p = run_cli("mount", *args, check=False)
        assert p.returncode != 0, args
        assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
    assert not os.listdir(mp)


def check_stalled_mount(mp, log_file: str, uncached: str, cached: str, cached_sha: str) -> None:
    """With the mount's store stalled: a read of ``uncached`` fails with EIO after the
    fetch budget (3 s), the log naming the object; meanwhile listings, stats.json and
    ``cached`` (page cache dropped, so the daemon serves it again) are served; then
    `coralfs umount` works while the store is still stalled."""
    result: dict = {}

    def big_read() -> None:
        try:
            (mp / uncached).read_bytes()
            result["ok"] = True
        except OSError as e:
            result["errno"] = e.errno

    t = threading.Thread(target=big_read, daemon=True)
    t.start()
    assert uncached in os.listdir(mp) and ".coral" in os.listdir(mp)
    assert remote_stats(str(mp))["packs"] > 0
    with open(mp / cached, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert hashlib.sha256(f.read()).hexdigest() == cached_sha
    t.join(120)
    assert not t.is_alive() and result == {"errno": errno.EIO}
    assert remote_stats(str(mp))["fetch_failures"] >= 1
    with open(log_file) as f:
        log = f.read()
    assert re.search(r"object [0-9a-f]{64} could not be fetched: .* did not answer within 3 s", log), log
    run_cli("umount", str(mp))
    assert not any(ln.split()[1] == str(mp) for ln in open("/proc/mounts"))


def test_a_stalled_store_fails_reads_with_eio_serves_the_rest_and_unmounts(minilm_remote, tmp_path):
    """The remote's directory lives on a second coralfs mount whose daemon is stopped
    (SIGSTOP) mid-run: every read of the remote hangs in the kernel, as on a stalled
    network. Reads needing the remote fail with EIO after the fetch budget (the log names
    the object), cached files and metadata are still served, and umount works."""
    r = minilm_remote
    holder = tmp_path / "holder"
    run_cli("init", str(holder))
    run_cli("commit", r["remote"], "-m", "the remote's files", repo=str(holder))
    inner = tmp_path / "inner"
    inner.mkdir()
    p = run_cli("mount", str(holder), f"{inner}@main")
    inner_pid = int(p.stdout.split("(pid ")[1].split(",")[0])
    outer = tmp_path / "outer"
    stopped = False
    try:
        with remote_mounted(f"file://{inner}", str(outer), "main", "--cache-dir", str(tmp_path / "c"),
                            "--fetch-timeout", "3") as m:
            assert sha(outer / "config.json") == r["second"]["config.json"]
            os.kill(inner_pid, signal.SIGSTOP)
            stopped = True
            check_stalled_mount(outer, m["log"], "model.safetensors", "config.json", r["second"]["config.json"])
    finally:
        if stopped:
            os.kill(inner_pid, signal.SIGCONT)
        force_unmount(str(inner), inner_pid)


def test_include_narrows_a_remote_mount_and_fetches_only_those_tensors(minilm_remote, tmp_path):
    from safetensors.numpy import load_file
    r = minilm_remote
    mp = tmp_path / "m"
    with remote_mounted(r["url"], str(mp), "main", "--cache-dir", str(tmp_path / "c"), "--include", "encoder.layer.0.*"):
        got = load_file(str(mp / "model.safetensors"))
        st = remote_stats(str(mp))
    want = load_file(os.path.join(r["src"], "model.safetensors"))
    names = {k for k in want if k.startswith("encoder.layer.0.")}
    assert set(got) == names
    for k in names:
        assert np.array_equal(got[k], want[k])
    wanted = sum(want[k].nbytes for k in names)
    assert names and st["bytes_fetched"] >= 0.5 * wanted
    # Header chunks and metadata come in too, and read-ahead crosses into the next tensor.
    assert st["bytes_fetched"] < 2 * wanted + (4 << 20)


@pytest.fixture(scope="module")
def pushed_tensors(tmp_path_factory):
    """Three 4 MiB float32 tensors of 16 chunks each (256 KiB chunks) in one safetensors
    file, pushed by `coralfs push` to a file:// remote."""
    from safetensors.numpy import save_file
    base = tmp_path_factory.mktemp("pushed-tensors")
    src = base / "src"
    src.mkdir()
    rng = np.random.default_rng(7)
    save_file({f"t.{i}.w": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(3)},
              str(src / "model.safetensors"))
    repo = str(base / "repo")
    run_cli("init", repo)
    run_cli("config", "set", "storage.chunk_size", "256k", repo=repo)
    run_cli("commit", str(src), "-m", "three tensors", repo=repo)
    remote = base / "remote"
    remote.mkdir()
    run_cli("remote", "add", "origin", f"file://{remote}", repo=repo)
    run_cli("push", "origin", "main", repo=repo)
    return {"repo": repo, "url": f"file://{remote}", "model": str(src / "model.safetensors")}


def tensor_chunks(repo_path: str, path: str) -> dict[str, list[bytes]]:
    """Tensor name -> its chunk ids, of file ``path`` on main."""
    from coralfs.objects.kinds import Tensor, TensorSegment
    local = Repository.open(repo_path)
    f = local.read_file(local.tree_of("main").entries[path].file)
    return {s.name: list(local.odb.get_object(s.tensor, Tensor).chunks)
            for s in f.segments if isinstance(s, TensorSegment)}


def first_tensor(model: str) -> tuple[str, int]:
    """(name, file offset) of the tensor whose bytes come first in a safetensors file."""
    import struct
    with open(model, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    name = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    return name, 8 + n + header[name]["data_offsets"][0]


def cached_ids(cache: str) -> set[bytes]:
    """Ids of the objects in a remote mount's chunk cache on disk (chunks/ab/<rest>)."""
    out = set()
    for d, _, fs in os.walk(cache):
        if os.path.basename(os.path.dirname(d)) == "chunks":
            out |= {bytes.fromhex(os.path.basename(d) + f) for f in fs if not f.startswith(".")}
    return out


def test_a_read_of_a_tensor_s_start_fetches_the_rest_of_that_tensor_and_no_other(pushed_tensors, tmp_path):
    """Read-ahead of a remote mount as of a local one: 768 KiB read from the start of a
    16-chunk tensor (the kernel's own readahead off) makes the daemon fetch every other
    chunk of that tensor in the background, and not one chunk of the other tensors."""
    r = pushed_tensors
    chunks = tensor_chunks(r["repo"], "model.safetensors")
    name, off = first_tensor(r["model"])
    mine = set(chunks[name])
    others = {c for k, cs in chunks.items() if k != name for c in cs}
    assert len(mine) == 16 and len(others) == 32
    with open(r["model"], "rb") as f:
        f.seek(off)
        want = f.read(768 << 10)
    cache = str(tmp_path / "cache")
    mp = tmp_path / "m"
    with remote_mounted(r["url"], str(mp), "main", "--cache-dir", cache):
        with open(mp / "model.safetensors", "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            f.seek(off)
            got = b""
            while len(got) < len(want):
                got += f.read(min(128 << 10, len(want) - len(got)))
        assert got == want
        # The read-ahead runs in the background: wait (bounded) until it has fetched the
        # tensor, or has stopped fetching; what it fetched is checked below either way.
        deadline = time.monotonic() + 60
        last, quiet, reads = None, 0, {}
        while time.monotonic() < deadline and quiet < 20:
            reads = json.loads((mp / ".coral" / "stats.json").read_text())
            n = (remote_stats(str(mp))["objects_fetched"], reads["prefetched_chunks"])
            quiet = quiet + 1 if n == last else 0
            last = n
            # fetched, and the read-ahead's decodes counted (they finish after the fetch)
            if mine <= cached_ids(cache) and reads["prefetched_chunks"] >= 16 - 4:
                break
            time.sleep(0.1)
    have = cached_ids(cache)   # the daemon wrote its pending cache entries when it unmounted
    assert mine <= have, f"{len(mine - have)} of the tensor's 16 chunks were not fetched"
    assert not have & others, f"{len(have & others)} chunks of other tensors were fetched"
    # Most of the tensor came by read-ahead, not by the reads (768 KiB: at most 4 chunks).
    assert reads["prefetched_chunks"] >= 16 - 4, reads
