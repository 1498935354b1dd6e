"""fetch, pull and clone from a file:// remote: verified frames (damage named, nothing of
it stored, refs untouched), fast-forward or a clear refusal, shallow and partial clones."""

from __future__ import annotations

import os

import pytest

from coralfs import Repository
from coralfs.objects.ids import to_hex
from coralfs.objects.refs import HEADS
from coralfs.remote import layout
from coralfs.remote.packs import PACKS, decode_index
from coralfs.remote.partial import FallbackStore
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.sync import DamagedRemoteObject, Diverged, clone, fast_forward, fetch, push
from coralfs.remote.verify import fsck_remote
from tests.remote.sync_helpers import CountingBlobs, checkpoint, exports, make_repo, snapshot

MAIN = "refs/heads/main"


@pytest.fixture
def pushed(tmp_path):
    repo, cks = make_repo(tmp_path, steps=3)
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", [MAIN])
    return repo, blobs, f"file://{tmp_path / 'remote'}", cks


def test_fetch_moves_remote_tracking_refs_and_pull_fast_forwards(tmp_path, pushed):
    repo, blobs, url, _ = pushed
    other, _ = clone(url, str(tmp_path / "other"))
    repo.commit_paths([checkpoint(tmp_path / "c3", 3)], "step 3")
    push(repo, blobs, "origin", [MAIN])
    before = other.branch_head("main")
    res = fetch(other, blobs, "origin")
    assert res.objects > 0
    assert other.refs.read("refs/remotes/origin/main") == repo.branch_head("main")
    assert other.branch_head("main") == before       # fetch never moves local branches
    assert other.resolve("origin/main") == repo.branch_head("main")
    assert fast_forward(other, "origin", "main") == ("fast-forward", repo.branch_head("main"))
    assert fast_forward(other, "origin", "main")[0] == "up-to-date"
    assert fetch(other, blobs, "origin").objects == 0   # nothing new: nothing moves
    assert other.fsck().ok


def test_pull_refuses_diverged_histories_and_names_the_merge(tmp_path, pushed):
    repo, blobs, url, _ = pushed
    other, _ = clone(url, str(tmp_path / "other"))
    repo.commit_paths([checkpoint(tmp_path / "c3", 3)], "theirs")
    push(repo, blobs, "origin", [MAIN])
    os.makedirs(tmp_path / "mine")
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    other.commit_paths([str(tmp_path / "mine")], "mine")
    mine = other.branch_head("main")
    fetch(other, blobs, "origin")
    with pytest.raises(Diverged) as e:
        fast_forward(other, "origin", "main")
    assert "coralfs merge origin/main" in str(e.value)
    assert other.branch_head("main") == mine
    outcome, _cid, _rep = other.merge("origin/main", "theirs")
    assert outcome == "merged"
    push(other, blobs, "origin", [MAIN])
    assert RemoteRefs(blobs).read(MAIN) == other.branch_head("main")


def _a_chunk_location(blobs):
    """(key, offset, length, id) of the largest frame in the remote's packs."""
    best = None
    for key in blobs.list(PACKS):
        if key.endswith(".idx"):
            for oid, off, n in decode_index(blobs.get(key)):
                if best is None or n > best[2]:
                    best = (key[:-4] + ".pack", off, n, oid)
    return best


def test_a_corrupted_object_fails_the_clone_naming_object_and_pack(tmp_path, pushed):
    _repo, blobs, url, _ = pushed
    pack, off, n, oid = _a_chunk_location(blobs)
    path = os.path.join(blobs.root, pack)
    with open(path, "r+b") as f:
        f.seek(off + n // 2)
        b = f.read(1)
        f.seek(off + n // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(DamagedRemoteObject) as e:
        clone(url, str(tmp_path / "c"))
    assert to_hex(oid) in str(e.value) and pack in str(e.value)
    assert e.value.exit_code == 3
    c = Repository.open(str(tmp_path / "c"))
    assert not c.store.has(oid)                  # nothing of it was stored
    assert c.branches() == {} and c.refs.list("refs/remotes/") == {}   # refs only after objects
    assert c.fsck().ok
    rep = fsck_remote(blobs)
    assert any(to_hex(oid) in p and pack in p for p in rep.problems)


def test_a_truncated_pack_fails_the_fetch_and_leaves_the_repository_unchanged(tmp_path, pushed):
    repo, blobs, url, _ = pushed
    other, _ = clone(url, str(tmp_path / "other"))
    repo.commit_paths([checkpoint(tmp_path / "c3", 3)], "step 3")
    push(repo, blobs, "origin", [MAIN])
    new = [k for k in blobs.puts if k.endswith(".pack")][-1]
    with open(os.path.join(blobs.root, new), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(blobs.root, new)) // 2)
    refs_before = {k: v for k, v in snapshot(other.path).items() if k.startswith(("refs/", "HEAD", "logs/"))}
    with pytest.raises(DamagedRemoteObject) as e:
        fetch(other, blobs, "origin")
    assert new in str(e.value) and "cut short" in str(e.value)
    assert {k: v for k, v in snapshot(other.path).items() if k.startswith(("refs/", "HEAD", "logs/"))} == refs_before
    assert other.fsck().ok
    rep = fsck_remote(blobs)
    assert any("truncated" in p and new in p for p in rep.problems)


def test_fsck_remote_is_clean_and_names_a_ref_to_a_missing_object(tmp_path, pushed):
    repo, blobs, _url, _ = pushed
    rep = fsck_remote(blobs)
    assert rep.ok and rep.objects == len(list(repo.store)) and rep.packs == 1
    blobs.put("refs/heads/ghost", b"ab" * 32 + b"\n")
    rep = fsck_remote(blobs)
    assert rep.problems == [f"refs/heads/ghost points at {'ab' * 32}, which the remote does not have"]


def test_a_shallow_clone_has_the_last_commits_and_history_stops_there(tmp_path, pushed):
    repo, _blobs, url, _ = pushed
    cl, res = clone(url, str(tmp_path / "shallow"), depth=2)
    assert res.shallow == {repo.resolve("main~1")}
    assert [c for c, _ in cl.log("main")] == [repo.resolve("main"), repo.resolve("main~1")]
    assert not cl.store.has(repo.resolve("main~2"))
    assert cl.fsck().ok
    assert exports(cl, tmp_path / "a", ["main", "main~1"]) == exports(repo, tmp_path / "b", ["main", "main~1"])
    # and it keeps following the remote
    repo.commit_paths([checkpoint(tmp_path / "c3", 3)], "step 3")
    push(repo, CountingBlobs(str(tmp_path / "remote")), "origin", [MAIN])
    fetch(cl, CountingBlobs(str(tmp_path / "remote")), "origin")
    assert fast_forward(cl, "origin", "main")[0] == "fast-forward"
    assert len(list(cl.log("main"))) == 3 and Repository.open(cl.path).fsck().ok


def test_a_partial_clone_fetches_what_matches_and_the_rest_on_demand(tmp_path, pushed):
    repo, _blobs, url, cks = pushed
    full, full_res = clone(url, str(tmp_path / "full"))
    part, res = clone(url, str(tmp_path / "part"), pattern="head.*")
    tensor_chunks: dict[str, set] = {}
    for rev in ("main", "main~1", "main~2"):
        f = part.read_file(part.tree_of(rev).entries["model.safetensors"].file)
        for name, ref in f.tensors().items():
            tensor_chunks.setdefault(name, set()).update(part.odb.get_object(ref.tensor).chunks)
    left = tensor_chunks["body.weight"] | tensor_chunks["emb.weight"]
    # everything but body and emb: the structure, config.json's bytes, head's chunks
    assert res.bytes == full_res.bytes - sum(full.store.size(c) for c in left) - _bytes_chunks(full)
    local = part.store.local
    assert all(local.has(c) for c in tensor_chunks["head.weight"])
    assert not any(local.has(c) for c in tensor_chunks["body.weight"])
    reopened = Repository.open(part.path)
    assert isinstance(reopened.store, FallbackStore)
    assert exports(reopened, tmp_path / "a", ["main", "main~2"]) == exports(repo, tmp_path / "b", ["main", "main~2"])
    assert reopened.store.fetched > 0
    assert all(local.has(c) for c in tensor_chunks["body.weight"])   # fetched once, kept
    # what was fetched serves without the remote
    os.rename(tmp_path / "remote", tmp_path / "gone")
    again = Repository.open(part.path)
    assert exports(again, tmp_path / "c", ["main"]) == exports(repo, tmp_path / "d", ["main"])
    del full


def _bytes_chunks(repo) -> int:
    """Stored bytes of the literal (non-tensor) chunks of the files: a filter on tensor
    names leaves them behind (headers, config.json), fetched on demand."""
    from coralfs.objects.kinds import BytesSegment, PackSegment
    seen, n = set(), 0
    for rev in ("main", "main~1", "main~2"):
        for e in repo.tree_of(rev).entries.values():
            for s in repo.read_file(e.file).segments:
                if isinstance(s, (BytesSegment, PackSegment)):
                    for c, _ in s.chunks:
                        if c not in seen:
                            seen.add(c)
                            n += repo.store.size(c)
    return n


def test_fetch_reads_loose_objects_too(tmp_path, pushed):
    repo, blobs, url, _ = pushed
    # a commit whose new objects the remote holds as single loose frames (as a remote
    # ObjectStore writes them), not in a pack
    before = set(repo.store)
    cid = repo.commit_paths([checkpoint(tmp_path / "c3", 3)], "loose").commit
    for oid in set(repo.store) - before:
        blobs.put(layout.loose_key(to_hex(oid)), repo.store.get(oid))
    RemoteRefs(blobs).set_if_equals(MAIN, repo.resolve("main~1"), cid, "loose push")
    cl, res = clone(url, str(tmp_path / "c"))
    assert cl.branch_head("main") == cid and cl.fsck().ok
    assert exports(cl, tmp_path / "a", ["main"]) == exports(repo, tmp_path / "b", ["main"])
    assert fsck_remote(blobs).ok


def test_a_remote_without_the_marker_is_refused_in_one_line(tmp_path):
    os.makedirs(tmp_path / "empty")
    from coralfs.remote.layout import NotARemote
    with pytest.raises(NotARemote) as e:
        clone(f"file://{tmp_path / 'empty'}", str(tmp_path / "c"))
    assert "not a coralfs remote" in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists(tmp_path / "c")
    (tmp_path / "empty" / layout.MARKER).write_text('{"format": 7}')
    with pytest.raises(NotARemote) as e:
        clone(f"file://{tmp_path / 'empty'}", str(tmp_path / "c"))
    assert "format 1" in str(e.value)
    assert HEADS  # the names used above


@pytest.mark.mount
def test_a_mount_of_a_partial_clone_serves_every_byte_fetching_on_demand(tmp_path, pushed):
    from tests.mount.conftest import mounted
    repo, _blobs, url, cks = pushed
    part, _ = clone(url, str(tmp_path / "part"), pattern="config.json")
    here = len(list(part.store.local))
    with mounted(part.path, str(tmp_path / "mnt"), "main~1"):
        with open(tmp_path / "mnt" / "model.safetensors", "rb") as f:
            served = f.read()
    with open(os.path.join(cks[1], "model.safetensors"), "rb") as f:
        assert served == f.read()
    assert len(list(Repository.open(part.path).store.local)) > here   # the mount's daemon fetched and kept them


def test_a_whole_fetch_reads_each_pack_once_whatever_order_the_deltas_need(tmp_path):
    """A chain of deltas (d1 on d0 on k) in a pack that sorts before the pack of its
    keyframe k (packs are read in key order, not upload order): the chain waits for k
    instead of costing a second read of it, and every frame is verified."""
    import numpy as np

    from coralfs.objects import codecs
    from coralfs.objects.ids import hash_bytes
    from coralfs.remote.packs import PackBuilder
    from coralfs.remote.sync import Fetcher, RemoteObjects
    rng = np.random.default_rng(0)
    k = rng.standard_normal(1 << 16).astype(np.float32)

    def version(of: np.ndarray, i: int) -> tuple[np.ndarray, bytes]:
        v = of.copy()
        v[i] += 1
        return v, hash_bytes(v.tobytes())

    kid = hash_bytes(k.tobytes())
    kframe = codecs.encode(k.tobytes(), kid, width=4)
    for salt in range(100):
        d0, d0id = version(k, salt)
        d1, d1id = version(d0, salt + 1)
        chain, keypack = PackBuilder(), PackBuilder()
        chain.add(d0id, codecs.encode(d0.tobytes(), d0id, width=4, base=codecs.Base(kid, k.tobytes(), 0)))
        chain.add(d1id, codecs.encode(d1.tobytes(), d1id, width=4, base=codecs.Base(d0id, d0.tobytes(), 1)))
        keypack.add(kid, kframe)
        if chain.upload(CountingBlobs(str(tmp_path / f"c{salt}"))) < keypack.upload(CountingBlobs(str(tmp_path / f"k{salt}"))):
            break   # the chain's pack sorts first
    assert [codecs.parse_header(f, o).base for o, f in zip([d0id, d1id], chain.parts)] == [kid, d0id]
    blobs = CountingBlobs(str(tmp_path / "remote"))
    chain.upload(blobs)
    keypack.upload(blobs)
    layout.initialize(blobs, Repository.init(str(tmp_path / "src")).config, "main")
    reader = CountingBlobs(str(tmp_path / "remote"))
    dest = Repository.init(str(tmp_path / "dest"))
    f = Fetcher(dest, RemoteObjects(reader))
    f.run([])
    assert f.objects == 3 and all(dest.store.has(o) for o in (kid, d0id, d1id))
    packs = sum(os.path.getsize(os.path.join(blobs.root, key)) for key in blobs.list(PACKS))
    assert reader.read_bytes == packs   # each index and each pack once, nothing twice
    assert f.odb.decoded_chunks == 0    # and each frame decoded once: no base again from the disk
    assert dest.odb.read_chunk(d1id) == d1.tobytes()



def test_a_partial_clone_reads_what_it_has_with_the_remote_gone(tmp_path, pushed):
    repo, _blobs, url, cks = pushed
    part, _ = clone(url, str(tmp_path / "part"), pattern="config.json")
    os.rename(tmp_path / "remote", tmp_path / "gone")
    again = Repository.open(part.path)
    assert [c for c, _ in again.log("main")] == [c for c, _ in repo.log("main")]
    again.export("main~1", str(tmp_path / "out"), paths=["config.json"])
    with open(os.path.join(cks[1], "config.json"), "rb") as f:
        assert (tmp_path / "out" / "config.json").read_bytes() == f.read()
    from coralfs.objects.errors import CoralError
    with pytest.raises(CoralError) as e:   # what was left on the remote needs it
        again.export("main", str(tmp_path / "out2"))
    assert "is not a directory" in str(e.value) and "nothing was written" in str(e.value)
    assert not os.path.exists(tmp_path / "out2" / "model.safetensors")


def test_gc_of_a_partial_clone_sweeps_the_temp_files_of_killed_writers(tmp_path, pushed):
    _repo, _blobs, url, _cks = pushed
    part, _ = clone(url, str(tmp_path / "part"), pattern="head.*")
    objects = os.path.join(part.path, "objects")
    fan = next(d for d in sorted(os.listdir(objects)) if len(d) == 2)
    dead = os.path.join(objects, fan, ".tmp-4194305-1-1.part")  # above Linux's largest pid (2**22): no such process
    with open(dead, "wb") as f:
        f.write(b"x" * 100)
    os.utime(dead, (1, 1))
    reopened = Repository.open(part.path)
    assert isinstance(reopened.store, FallbackStore)
    rep = reopened.gc(grace_seconds=3600)
    assert rep.temps == 1 and rep.temps_freed == 100 and not os.path.exists(dead)


def _frames_in_two_packs(tmp_path, fill: int, tiny: int = 0, fill_second: int = 0):
    """A keyframe k, then ``fill`` unrelated 256 KiB keyframes and ``tiny`` 1 KiB ones in
    one pack; a delta d on k and ``fill_second`` 256 KiB keyframes in a pack whose key
    sorts after it. Returns (remote blobs, d's id, d's bytes, objects)."""
    import numpy as np

    from coralfs.objects import codecs
    from coralfs.objects.ids import hash_bytes
    from coralfs.remote.packs import PackBuilder
    rng = np.random.default_rng(1)
    k = rng.standard_normal(1 << 16).astype(np.float32)   # 256 KiB decoded
    kid = hash_bytes(k.tobytes())

    def key(n: int) -> tuple[bytes, bytes]:
        v = rng.standard_normal(n).astype(np.float32).tobytes()
        return hash_bytes(v), codecs.encode(v, hash_bytes(v), width=4)
    first_rest = [key(1 << 16) for _ in range(fill)] + [key(256) for _ in range(tiny)]
    second_rest = [key(1 << 16) for _ in range(fill_second)]
    for salt in range(100):
        d = k.copy()
        d[salt] += 1
        did = hash_bytes(d.tobytes())
        first, second = PackBuilder(), PackBuilder()
        first.add(kid, codecs.encode(k.tobytes(), kid, width=4))
        for o, fr in first_rest:
            first.add(o, fr)
        second.add(did, codecs.encode(d.tobytes(), did, width=4, base=codecs.Base(kid, k.tobytes(), 0)))
        for o, fr in second_rest:
            second.add(o, fr)
        if first.upload(CountingBlobs(str(tmp_path / f"a{salt}"))) < second.upload(CountingBlobs(str(tmp_path / f"b{salt}"))):
            break   # k's pack sorts first: in key order k is decoded before d arrives
    assert codecs.parse_header(second.parts[0], did).base == kid
    blobs = CountingBlobs(str(tmp_path / "remote"))
    first.upload(blobs)
    second.upload(blobs)
    layout.initialize(blobs, Repository.init(str(tmp_path / "src")).config, "main")
    return blobs, did, d.tobytes(), 2 + fill + tiny + fill_second


@pytest.mark.parametrize("cache_size", [1 << 20, 16 << 20])
def test_the_fetch_keeps_decoded_bases_as_far_as_cache_size_allows(tmp_path, monkeypatch, cache_size):
    """The fetch's decoded-chunk cache is the repository's cache.size (at least
    FETCH_CACHE_MIN): a base read eight 256 KiB chunks before its delta is decoded again
    from the disk with 1 MiB (four fit), once with 16 MiB. (The pack of k reads first:
    its many tiny frames make its frames the smaller on average. Each range's jobs are
    done before the next range is read: a delta whose base's job is still running starts
    right after it, the base still cached, whatever came between.)"""
    from coralfs.remote import sync
    from coralfs.remote.sync import Fetcher, RemoteObjects
    monkeypatch.setattr(sync, "FETCH_CACHE_MIN", 64 << 10)
    monkeypatch.setattr(sync, "VERIFY_AHEAD", 0)
    blobs, did, d, n = _frames_in_two_packs(tmp_path, fill=8, tiny=40, fill_second=2)
    dest = Repository.init(str(tmp_path / "dest"))
    dest.config.set("cache.size", str(cache_size))
    f = Fetcher(dest, RemoteObjects(blobs))
    assert f.odb.chunks.budget == cache_size
    f.run([])
    assert f.objects == n and dest.store.has(did)
    assert f.odb.decoded_chunks == (1 if cache_size < (2 << 20) else 0)   # k again, or never
    assert dest.odb.read_chunk(did) == d


def test_a_delta_in_a_later_pack_than_its_base_is_read_first_and_decodes_it_once(tmp_path, monkeypatch):
    """Packs are read smallest frames first, not in key order: the delta's pack (a small
    frame) before its base's pack (large keyframes) that sorts first, so the delta waits
    for its base instead of the base for the delta; with a cache that holds four chunks
    (the base would be gone after the eight that follow it), no chunk is decoded twice."""
    from coralfs.remote import sync
    from coralfs.remote.sync import Fetcher, RemoteObjects
    monkeypatch.setattr(sync, "FETCH_CACHE_MIN", 64 << 10)
    blobs, did, d, n = _frames_in_two_packs(tmp_path, fill=8)
    dest = Repository.init(str(tmp_path / "dest"))
    dest.config.set("cache.size", str(1 << 20))
    f = Fetcher(dest, RemoteObjects(blobs))
    f.run([])
    assert f.objects == n and f.odb.decoded_chunks == 0
    assert dest.odb.read_chunk(did) == d


def test_the_fetch_cache_is_never_below_its_floor(tmp_path):
    from coralfs.remote.sync import FETCH_CACHE_MIN, Fetcher, RemoteObjects
    blobs, *_ = _frames_in_two_packs(tmp_path, fill=0)
    dest = Repository.init(str(tmp_path / "dest"))
    dest.config.set("cache.size", str(1 << 20))
    assert Fetcher(dest, RemoteObjects(blobs)).odb.chunks.budget == FETCH_CACHE_MIN


def test_a_shallow_fetch_with_tags_reads_each_frame_once(tmp_path, monkeypatch):
    """The walk of a --depth fetch does not wait for bases: it reads its packs largest
    frames first, so a base lands before its deltas (smallest first would read a delta,
    GET its base alone, and read the base's pack again)."""
    from coralfs.objects import history
    monkeypatch.setenv("CORALFS_PACK_SIZE", str(256 << 10))
    repo, _ = make_repo(tmp_path, steps=4)
    commits = list(history.walk(repo, [repo.refs.read(f"{HEADS}main")]))
    for i, c in enumerate(commits):   # each level of the walk then holds every commit's closure
        repo.refs.set_if_equals(f"refs/tags/t{i}", None, c, "t")
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", [f"{HEADS}main"] + [f"refs/tags/t{i}" for i in range(len(commits))])
    reader = CountingBlobs(str(tmp_path / "remote"))
    res = fetch(Repository.init(str(tmp_path / "dest")), reader, "origin", depth=1)
    # the fetched frames, plus the refs and the pack indexes (a few KiB): nothing twice
    assert res.bytes <= reader.read_bytes < res.bytes * 1.01


def _keyframes_and_deltas(tmp_path, n: int = 16):
    """``n`` 256 KiB keyframes in one pack, a delta on each in another. Returns (remote
    blobs, the deltas' frames, {delta id: (its bytes, its base's id)})."""
    import numpy as np

    from coralfs.objects import codecs
    from coralfs.objects.ids import hash_bytes
    from coralfs.remote.packs import PackBuilder
    rng = np.random.default_rng(3)
    keys, deltas, made = PackBuilder(), PackBuilder(), {}
    for _ in range(n):
        k = rng.standard_normal(1 << 16).astype(np.float32)
        kid = hash_bytes(k.tobytes())
        keys.add(kid, codecs.encode(k.tobytes(), kid, width=4))
        d = k.copy()
        d[:2000] += np.float32(1e-3)
        did = hash_bytes(d.tobytes())
        deltas.add(did, codecs.encode(d.tobytes(), did, width=4, base=codecs.Base(kid, k.tobytes(), 0)))
        made[did] = (d.tobytes(), kid)
    assert [codecs.parse_header(f, o).base for o, f in zip(made, deltas.parts)] == [v[1] for v in made.values()]
    blobs = CountingBlobs(str(tmp_path / "remote"))
    keys.upload(blobs)
    deltas.upload(blobs)
    layout.initialize(blobs, Repository.init(str(tmp_path / "src")).config, "main")
    return blobs, deltas.parts, made


def test_a_whole_fetch_past_the_deferral_reads_the_bases_pack_not_each_base(tmp_path, monkeypatch):
    """Sixteen keyframes in one pack, a delta on each in another read first (smaller
    frames), and room to defer only a quarter of the deltas: the delta that does not fit
    reads the keyframes' range then, once, instead of a lone GET of each base and the
    keyframes' pack again afterwards."""
    from coralfs.remote import sync
    from coralfs.remote.sync import Fetcher, RemoteObjects
    blobs, frames, made = _keyframes_and_deltas(tmp_path)
    monkeypatch.setattr(sync, "DEFER_MAX", sum(len(f) for f in frames) // 4)
    reader = CountingBlobs(str(tmp_path / "remote"))
    ranges = []
    real = reader.get_range
    monkeypatch.setattr(reader, "get_range", lambda *a: ranges.append(a) or real(*a))
    dest = Repository.init(str(tmp_path / "dest"))
    f = Fetcher(dest, RemoteObjects(reader))
    f.run([])
    packs = sum(os.path.getsize(os.path.join(blobs.root, key)) for key in blobs.list(PACKS))
    assert f.objects == 32 and reader.read_bytes == packs and len(ranges) == 2
    assert all(dest.odb.read_chunk(o) == v for o, (v, _k) in made.items())


def test_a_damaged_base_fails_the_fetch_before_its_delta_is_stored(tmp_path):
    """A delta whose base's verification is still running starts after it (on its
    thread): a damaged base is the error raised, and nothing of the delta is stored."""
    from coralfs.remote.sync import Fetcher, RemoteObjects
    blobs, _frames, made = _keyframes_and_deltas(tmp_path, n=4)
    did, (_d, kid) = next(iter(made.items()))
    key, off, n = next((k[:-4] + ".pack", o, m) for k in blobs.list(PACKS) if k.endswith(".idx")
                       for i, o, m in decode_index(blobs.get(k)) if i == kid)
    with open(os.path.join(blobs.root, key), "r+b") as fh:
        fh.seek(off + n // 2)
        b = fh.read(1)
        fh.seek(off + n // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    dest = Repository.init(str(tmp_path / "dest"))
    with pytest.raises(DamagedRemoteObject) as e:
        Fetcher(dest, RemoteObjects(blobs)).run([])
    assert to_hex(kid) in str(e.value) and key in str(e.value)
    assert not dest.store.has(kid) and not dest.store.has(did)


def test_an_object_of_a_newer_format_asks_for_a_newer_coralfs_and_garbage_is_damaged(tmp_path):
    """A structured object hashed right but of a version (or kind) this coralfs does not
    read is named as needing a newer coralfs, not as damaged; bytes that are no object at
    all are damaged. Nothing of either is stored."""
    from coralfs.objects import codecs
    from coralfs.objects.ids import hash_bytes
    from coralfs.objects.kinds import OBJ_MAGIC, REGISTRY
    from coralfs.remote.graph import NewerRemoteObject
    from coralfs.remote.packs import PackBuilder
    from coralfs.remote.sync import Fetcher, RemoteObjects
    kind = next(iter(REGISTRY))
    unused = next(t for t in range(256) if t not in REGISTRY)
    for i, (content, error, says) in enumerate([
            (OBJ_MAGIC + bytes([kind, 99]), NewerRemoteObject, "needs a newer coralfs (unsupported"),
            (OBJ_MAGIC + bytes([unused, 1]), NewerRemoteObject, "needs a newer coralfs (unknown object type"),
            (b"not an object at all", DamagedRemoteObject, "is damaged (not a structured object)")]):
        oid = hash_bytes(content)
        p = PackBuilder()
        p.add(oid, codecs.encode(content, oid, literal=True, structured=True))
        blobs = CountingBlobs(str(tmp_path / f"remote{i}"))
        p.upload(blobs)
        layout.initialize(blobs, Repository.init(str(tmp_path / f"src{i}")).config, "main")
        dest = Repository.init(str(tmp_path / f"dest{i}"))
        with pytest.raises(error) as e:
            Fetcher(dest, RemoteObjects(blobs)).run([])
        msg = str(e.value)
        assert says in msg and to_hex(oid) in msg and "\n" not in msg, msg
        assert ("upgrade coralfs" in msg) == (error is NewerRemoteObject)
        assert ("push it again" in msg) == (error is DamagedRemoteObject)
        assert not dest.store.has(oid)
