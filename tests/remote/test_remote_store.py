"""RemoteObjectStore over a file:// remote: the whole ObjectStore contract, packed reads by
range GET, coalescing, the chunk cache (torn entries, eviction, two processes), damage named
and never served, and the read budget (a stalled blob store: a test double of the budget
logic only; mounts are tested against real stores in test_remote_mount.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs.objects import codecs
from coralfs.objects.errors import CorruptObject
from coralfs.objects.repository import Repository
from coralfs.remote.blobs import RemoteError, RemoteUnavailable
from coralfs.remote.cache import HEAD_SIZE, ChunkCache
from coralfs.remote.file import FileBlobs
from coralfs.remote.packs import PackIndexes
from coralfs.remote.store import ObjectUnavailable, RemoteObjectStore, open_remote_repository
from coralfs.remote.url import parse_url
from tests.remote.remote_build import build_remote, walk_order
from tests.unit.store_conformance import StoreConformance


def file_blobs(d) -> FileBlobs:
    os.makedirs(d, exist_ok=True)
    return FileBlobs(parse_url(f"file://{d}"))


class TestRemoteStoreFile(StoreConformance):
    def make(self, tmp_path):
        return RemoteObjectStore(file_blobs(tmp_path / "remote"), str(tmp_path / "cache"), 1 << 30)


@pytest.fixture
def pushed(tmp_path):
    """A local repository with two commits (safetensors of a few tensors, a text file),
    and a file:// remote built from it in small packs."""
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(3)
    tensors = {f"layer{i}.weight": rng.standard_normal((256, 512)).astype(np.float32) for i in range(6)}
    save_file(tensors, str(src / "model.safetensors"))
    (src / "README.md").write_text("a model\n")
    repo = Repository.init(str(tmp_path / "repo"))
    repo.config.set("storage.chunk_size", "64k")
    repo.commit_paths([str(src)], "one")
    tensors["layer2.weight"] += 0.001
    save_file(tensors, str(src / "model.safetensors"))
    repo.commit_paths([str(src)], "two")
    repo.close()
    remote = tmp_path / "remote"
    built = build_remote(str(tmp_path / "repo"), file_blobs(remote), pack_size=512 << 10)
    return {"repo": str(tmp_path / "repo"), "remote": str(remote), "src": src, "tmp": tmp_path, **built}


def store_of(p, cache_size=1 << 30, **kw) -> RemoteObjectStore:
    return RemoteObjectStore(file_blobs(p["remote"]), str(p["tmp"] / "cache"), cache_size, **kw)


def test_packed_frames_come_back_as_stored_one_range_get_each(pushed):
    local = Repository.open(pushed["repo"])
    s = store_of(pushed)
    assert len(pushed["packs"]) > 1
    ids = walk_order(local)
    for o in ids[:50]:
        assert s.has(o)
        assert s.get(o) == local.store.get(o)
        assert s.size(o) == local.store.size(o)
    st = s.stats()
    assert st["range_gets"] == st["objects_fetched"] == 50
    assert st["bytes_fetched"] == sum(local.store.size(o) for o in ids[:50])
    # Second reads come from the local cache.
    for o in ids[:50]:
        assert s.get(o) == local.store.get(o)
    assert s.stats()["range_gets"] == 50 and s.stats()["cache_hits"] >= 50
    assert set(s) == set(local.store)


def test_fetch_many_coalesces_neighbours_and_follows_delta_bases(pushed):
    local = Repository.open(pushed["repo"])
    s = store_of(pushed)
    ids = walk_order(local)
    # Neighbours in one pack: fewer range GETs than objects.
    by_pack: dict = {}
    for o in ids:
        by_pack.setdefault(s.indexes.where[o].pack, []).append(o)
    # Objects that are not deltas: fetching a delta also brings its base, which may lie
    # outside the run (where a pack boundary falls depends on the codecs' sizes).
    run = [o for o in max(by_pack.values(), key=len) if local.odb.chunk_header(o).base is None][:20]
    s.fetch_many(run)
    assert len(run) > 5
    assert s.stats()["objects_fetched"] == len(run) and s.stats()["range_gets"] == 1
    assert s.missing(run) == []
    # A delta chunk of commit two: fetching it brings its base too.
    deltas = [o for o in ids if local.odb.chunk_header(o).base is not None]
    assert deltas, "commit two stores deltas"
    base = local.odb.chunk_header(deltas[0]).base
    s.cache.discard(base)
    s.cache.discard(deltas[0])
    s.fetch_many([deltas[0]])
    assert s.missing([deltas[0], base]) == []


def test_repository_over_the_remote_reads_every_file(pushed):
    blobs = file_blobs(pushed["remote"])
    blobs.put("refs/heads/gone", b"")   # a deleted ref: a tombstone
    r = open_remote_repository(f"file://{pushed['remote']}", cache_dir=str(pushed["tmp"] / "c2"))
    local = Repository.open(pushed["repo"])
    assert r.resolve("main") == local.resolve("main")
    assert r.branches() == local.branches() and r.branch_head("gone") is None
    for path, e in r.tree_of("main").entries.items():
        want = local.open_file(e.file)
        got = r.open_file(e.file)
        assert got.read(0, got.size) == want.read(0, want.size), path
    with pytest.raises(Exception, match="read-only"):
        r.create_branch("x", "main")
    r.store.close()


def test_not_a_remote_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RemoteError, match="not a coralfs remote.*coralfs push"):
        open_remote_repository(f"file://{tmp_path / 'empty'}", cache_dir=str(tmp_path / "c"))


def test_torn_or_damaged_cache_entry_is_refetched_not_served(pushed):
    local = Repository.open(pushed["repo"])
    o = walk_order(local)[-1]
    s = store_of(pushed)
    want = local.store.get(o)
    assert s.get(o) == want
    path = s.cache.path(o)
    size = os.path.getsize(path)
    for damage in ("truncate", "flip"):
        if damage == "truncate":
            os.truncate(path, size // 2)
        else:
            with open(path, "r+b") as f:
                f.seek(HEAD_SIZE + 40)
                b = f.read(1)
                f.seek(HEAD_SIZE + 40)
                f.write(bytes([b[0] ^ 0xFF]))
        before = s.stats()
        assert s.get(o) == want
        after = s.stats()
        assert after["cache_discarded"] == before["cache_discarded"] + 1
        assert after["range_gets"] == before["range_gets"] + 1
        assert os.path.getsize(path) == size


def test_eviction_keeps_the_cache_within_its_budget(pushed):
    local = Repository.open(pushed["repo"])
    ids = walk_order(local)
    budget = 300 << 10
    s = store_of(pushed, cache_size=budget)
    for o in ids:
        assert s.get(o) == local.store.get(o)
        on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(s.cache.root) for f in fs)
        assert on_disk <= budget
    assert s.stats()["cache_evicted"] > 0
    # The most recently fetched object survived; a reopened cache knows its size.
    assert s.cache.get(ids[-1]) == local.store.get(ids[-1])
    assert ChunkCache(s.cache.root, budget).used == s.cache.used


RACE = r"""
import sys
from coralfs.remote.file import FileBlobs
from coralfs.remote.url import parse_url
from coralfs.remote.store import RemoteObjectStore
from coralfs.objects.ids import from_hex
remote, cache, ids = sys.argv[1], sys.argv[2], [from_hex(h) for h in sys.argv[3].split(",")]
s = RemoteObjectStore(FileBlobs(parse_url("file://" + remote)), cache, 1 << 30)
for _ in range(30):
    for o in ids:
        s.cache.discard(o)
    s._fresh.clear()   # what this process fetched last round: fetch it again
    s.fetch_many(ids)
    for o in ids:
        frame = s.get(o)
        from coralfs.objects import codecs
        codecs.parse_header(frame, o)
print("ok", s.stats()["range_gets"])
"""


def test_two_processes_racing_on_one_cache_entry(pushed):
    local = Repository.open(pushed["repo"])
    ids = walk_order(local)[-8:]
    cache = str(pushed["tmp"] / "shared-cache")
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, pushed["remote"], cache, ",".join(o.hex() for o in ids)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.startswith("ok") and int(out.split()[1]) >= 30   # every round fetched and wrote again
    c = ChunkCache(cache, 1 << 30)
    for o in ids:
        assert c.get(o) == local.store.get(o)
    assert not [f for _, _, fs in os.walk(cache) for f in fs if f.startswith(".tmp")]


def flip_pack_byte(p, oid, at: int) -> None:
    s = store_of(p)
    loc = s.indexes.where[oid]
    path = os.path.join(p["remote"], loc.pack)
    with open(path, "r+b") as f:
        f.seek(loc.offset + at)
        b = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([b[0] ^ 0x01]))


def test_a_damaged_pack_is_named_never_served(pushed):
    local = Repository.open(pushed["repo"])
    chunks = [o for o in walk_order(local) if local.odb.chunk_header(o).base is None
              and local.store.size(o) > codecs.HEADER_SIZE + 64]
    head_hit, body_hit = chunks[-1], chunks[-2]
    flip_pack_byte(pushed, head_hit, 5)                            # in the frame header
    flip_pack_byte(pushed, body_hit, codecs.HEADER_SIZE + 20)      # in the payload
    r = open_remote_repository(f"file://{pushed['remote']}", cache_dir=str(pushed["tmp"] / "c3"))
    with pytest.raises(CorruptObject, match=head_hit.hex()):
        r.store.get(head_hit)
    assert r.store.missing([head_hit]) == [head_hit]   # a bad header is never cached
    with pytest.raises(CorruptObject, match=body_hit.hex()):
        r.odb.read_chunk(body_hit)
    r.store.close()


class StallingBlobs(FileBlobs):
    """A test double of the budget logic only: range GETs of chosen keys block until
    released (as a stalled connection does), or fail a set number of times."""

    def __init__(self, url, stall: set[str], fail_first: int = 0) -> None:
        super().__init__(url)
        self.stall = stall
        self.release = threading.Event()
        self.fail_left = fail_first

    def get_range(self, key, start, length):
        if self.fail_left > 0:
            self.fail_left -= 1
            raise RemoteUnavailable(f"{self.url}: connection reset")
        if key in self.stall:
            self.release.wait()
        return super().get_range(key, start, length)


def test_a_stalled_fetch_fails_after_the_budget_and_others_go_on(pushed):
    local = Repository.open(pushed["repo"])
    probe = store_of(pushed)
    ids = walk_order(local)
    stalled_pack = probe.indexes.where[ids[-1]].pack
    other = next(o for o in ids if probe.indexes.where[o].pack != stalled_pack)
    blobs = StallingBlobs(parse_url(f"file://{pushed['remote']}"), {stalled_pack})
    s = RemoteObjectStore(blobs, str(pushed["tmp"] / "c4"), 1 << 30, read_budget=1.5, fetch_threads=2)
    errors: list[BaseException] = []

    def stuck() -> None:
        try:
            s.get(ids[-1])
        except ObjectUnavailable as e:
            errors.append(e)

    threads = [threading.Thread(target=stuck) for _ in range(3)]   # more than the fetch threads
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 3 and all(ids[-1].hex() in str(e) for e in errors)
    assert time.monotonic() - t0 < 10
    assert not any(t.is_alive() for t in threads)
    # Both fetch threads are still stuck in the stalled request: a read of another pack
    # waits its budget and fails too, then succeeds once the store answers again.
    with pytest.raises(ObjectUnavailable):
        s.get(other)
    blobs.release.set()
    assert s.get(other) == local.store.get(other)
    assert s.get(ids[-1]) == local.store.get(ids[-1])
    assert s.stats()["fetch_failures"] == 4
    s.close()


def test_transient_failures_are_retried_within_the_budget(pushed):
    local = Repository.open(pushed["repo"])
    o = walk_order(local)[-1]
    blobs = StallingBlobs(parse_url(f"file://{pushed['remote']}"), set(), fail_first=2)
    s = RemoteObjectStore(blobs, str(pushed["tmp"] / "c5"), 1 << 30, read_budget=5.0, retry_delay=0.05)
    assert s.get(o) == local.store.get(o)
    assert s.stats()["fetch_retries"] == 2
    blobs.fail_left = 1000
    s.cache.discard(o)
    with pytest.raises(ObjectUnavailable, match="connection reset"):
        s.get(o)
    s.close()


def test_pack_indexes_are_refreshed_on_a_miss_at_most_every_n_seconds(pushed, tmp_path):
    s = RemoteObjectStore(file_blobs(tmp_path / "late"), str(tmp_path / "c6"), 1 << 30, refresh_every=0.3)
    local = Repository.open(pushed["repo"])
    o = walk_order(local)[0]
    assert not s.has(o)
    build_remote(pushed["repo"], file_blobs(tmp_path / "late"))
    assert not s.has(o)                       # within refresh_every: the old listing
    time.sleep(0.35)
    assert s.has(o) and s.get(o) == local.store.get(o)
    assert s.stats()["index_refreshes"] == 1
    assert isinstance(s.indexes, PackIndexes)


def test_pack_indexes_are_kept_and_a_damaged_copy_is_fetched_again(pushed):
    local = Repository.open(pushed["repo"])
    idx = str(pushed["tmp"] / "indexes")
    first = store_of(pushed, index_dir=idx)
    assert set(first) == set(local.store)
    n = first.stats()["index_bytes_fetched"]
    assert n == sum(os.path.getsize(os.path.join(idx, f)) for f in os.listdir(idx)) > 0
    assert store_of(pushed, index_dir=idx).stats()["index_bytes_fetched"] == 0
    victim = os.path.join(idx, sorted(os.listdir(idx))[0])
    with open(victim, "r+b") as f:
        f.seek(20)
        b = f.read(1)
        f.seek(20)
        f.write(bytes([b[0] ^ 1]))
    again = store_of(pushed, index_dir=idx)
    assert 0 < again.stats()["index_bytes_fetched"] < n
    assert set(again) == set(local.store)


def test_a_pack_gone_since_the_indexes_were_read_names_the_object(pushed):
    local = Repository.open(pushed["repo"])
    s = store_of(pushed)
    o = walk_order(local)[-1]
    os.unlink(os.path.join(pushed["remote"], s.indexes.where[o].pack))
    with pytest.raises(ObjectUnavailable, match=f"{o.hex()}.*is gone from"):
        s.get(o)
