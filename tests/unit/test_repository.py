"""Repository behaviour on real files: commits, history, refs, merge, gc, fsck, corruption."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from coralfs.objects.errors import CoralError, CorruptObject
from coralfs.objects.history import BadRevision
from coralfs.objects.merge import MergeConflict
from coralfs.objects.refs import RefMoved


def _ckpt(path, tensors: dict) -> str:
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"))
    return path


def _model(seed=0, scale=1.0, n=64):
    rng = np.random.default_rng(seed)
    return {"w": (rng.standard_normal((n, n)) * 0.05 * scale).astype(np.float32),
            "b": (rng.standard_normal(n) * 0.01).astype(np.float32),
            "steps": np.array([seed], dtype=np.int64)}


def _export_tensors(repo, rev, tmp_path):
    out = tmp_path / f"out-{rev.replace('/', '_').replace('~', '_')}"
    repo.export(rev, str(out))
    return load_file(str(out / "model.safetensors"))


def test_commit_log_resolve(repo, tmp_path):
    ids = []
    for i in range(4):
        r = repo.commit_paths([_ckpt(tmp_path / f"c{i}", _model(i))], f"step {i}", metadata={"step": i})
        ids.append(r.commit)
    assert [c.message for _, c in repo.log()] == ["step 3", "step 2", "step 1", "step 0"]
    assert repo.resolve("main") == ids[3]
    assert repo.resolve("HEAD~1") == ids[2]
    assert repo.resolve("main~3") == ids[0]
    assert repo.resolve("main^") == ids[2]
    assert repo.resolve("main^^") == ids[1]
    assert repo.resolve(ids[1].hex()[:8]) == ids[1]
    assert repo.resolve(ids[1].hex().upper()) == ids[1]
    assert repo.read_commit(ids[2]).metadata == {"step": 2}
    with pytest.raises(BadRevision):
        repo.resolve("main~9")
    with pytest.raises(BadRevision):
        repo.resolve("nope")
    with pytest.raises(BadRevision):
        repo.resolve("main^3")


def test_branches_tags_checkout(repo, tmp_path):
    c0 = repo.commit_paths([_ckpt(tmp_path / "a", _model(0))], "a").commit
    repo.create_branch("exp")
    repo.create_tag("v1.0.0", "main", "first release")
    assert repo.resolve("v1.0.0") == c0
    tag = repo.odb.get_object(repo.tags()["v1.0.0"])
    assert tag.message == "first release" and tag.target == c0
    repo.checkout("exp")
    c1 = repo.commit_paths([_ckpt(tmp_path / "b", _model(1))], "b").commit
    assert repo.branches() == {"exp": c1, "main": c0}
    repo.checkout(c0.hex()[:10])
    assert repo.head_branch() is None and repo.head() == c0
    c2 = repo.commit_paths([_ckpt(tmp_path / "c", _model(2))], "detached").commit
    assert repo.head() == c2 and repo.branches()["main"] == c0
    with pytest.raises(CoralError):
        repo.create_branch("exp")
    with pytest.raises(CoralError):
        repo.create_branch("exp/sub")  # file/directory clash with exp
    repo.checkout("main")
    repo.delete_branch("exp")
    assert "exp" not in repo.branches()


def test_identical_tensors_cost_nothing(repo, tmp_path):
    m = _model(0)
    repo.commit_paths([_ckpt(tmp_path / "a", m)], "a")
    before = sum(repo.store.size(o) for o in repo.store)
    r = repo.commit_paths([_ckpt(tmp_path / "b", m)], "same weights again")
    after = sum(repo.store.size(o) for o in repo.store)
    assert r.stats.chunks_new == 0
    assert after - before < 1024  # only a commit object (tree and file are equal)


def test_delta_against_parent(repo, tmp_path):
    a = _model(0, n=512)
    repo.commit_paths([_ckpt(tmp_path / "a", a)], "a")
    b = dict(a)
    b["w"] = (a["w"] + np.random.default_rng(9).standard_normal(a["w"].shape).astype(np.float32) * 1e-5)
    r = repo.commit_paths([_ckpt(tmp_path / "b", b)], "b")
    assert set(r.stats.codecs) & {"xor", "sub", "subs", "sparse"}
    assert r.stats.stored < 0.5 * a["w"].nbytes
    np.testing.assert_array_equal(_export_tensors(repo, "main", tmp_path)["w"], b["w"])
    np.testing.assert_array_equal(_export_tensors(repo, "main~1", tmp_path)["w"], a["w"])


def test_reads_never_need_more_than_max_chain_decodes(repo, tmp_path):
    repo.config.set("storage.max_chain", "3")
    repo.close()
    from coralfs import Repository
    r2 = Repository.open(repo.path)
    m = _model(0, n=256)
    rng = np.random.default_rng(5)
    versions = []
    for i in range(8):
        m = dict(m)
        m["w"] = (m["w"] + rng.standard_normal(m["w"].shape).astype(np.float32) * 1e-6).astype(np.float32)
        r2.commit_paths([_ckpt(tmp_path / f"s{i}", m)], f"s{i}")
        versions.append(m["w"])
    # a fork from an old commit takes the forward path
    r2.create_branch("fork", "main~6")
    r2.checkout("fork")
    fork = dict(m, w=(versions[1] * 1.0001).astype(np.float32))
    r2.commit_paths([_ckpt(tmp_path / "fork", fork)], "fork")
    depths = [r2.odb.chain_depth(o) for o in r2.store if not r2.odb.chunk_header(o).structured]
    assert max(depths) <= 2  # at most 3 decodes for any read
    assert sum(1 for d in depths if d > 0) >= 5  # and deltas were really used
    # The branch head is a keyframe: reading it decodes once.
    head_w = r2.read_file(r2.tree_of("main").entries["model.safetensors"].file).tensors()["w"]
    assert all(r2.odb.chain_depth(c) == 0 for c in r2.odb.get_object(head_w.tensor).chunks)
    for i, w in enumerate(versions):
        np.testing.assert_array_equal(_export_tensors(r2, f"main~{7 - i}", tmp_path)["w"], w)
    np.testing.assert_array_equal(_export_tensors(r2, "fork", tmp_path)["w"], fork["w"])
    assert r2.fsck().ok


def test_similarity_index_finds_a_base_for_a_new_lineage(repo, tmp_path):
    base = _model(0, n=512)
    repo.commit_paths([_ckpt(tmp_path / "a", base)], "base")
    ft = {"renamed.w": (base["w"] + np.float32(1e-6)).astype(np.float32)}
    repo.create_branch("ft")
    repo.checkout("ft")
    # A new file name: no same-path base; the index must propose the base's tensor.
    os.makedirs(tmp_path / "ft")
    save_file(ft, str(tmp_path / "ft" / "other.safetensors"))
    r = repo.commit_paths([str(tmp_path / "ft")], "fine-tune as a new lineage")
    assert set(r.stats.codecs) & {"xor", "sub", "subs", "sparse"}, r.stats.codecs
    assert r.stats.stored < 0.6 * ft["renamed.w"].nbytes
    # and the index survives a new process (it is on disk)
    from coralfs.objects.similarity import SimilarityIndex
    idx = SimilarityIndex(os.path.join(repo.path, "index", "similarity.sqlite"))
    assert idx._db().execute("select count(*) from tensors").fetchone()[0] >= 2


def _diverge(repo, tmp_path):
    base = _model(0)
    repo.commit_paths([_ckpt(tmp_path / "base", base)], "base")
    repo.create_branch("other")
    ours = dict(base, w=(base["w"] + 1).astype(np.float32))
    repo.commit_paths([_ckpt(tmp_path / "ours", ours)], "ours")
    repo.checkout("other")
    theirs = dict(base, w=(base["w"] + 3).astype(np.float32), b=(base["b"] * 2).astype(np.float32))
    repo.commit_paths([_ckpt(tmp_path / "theirs", theirs)], "theirs")
    repo.checkout("main")
    return base, ours, theirs


@pytest.mark.parametrize("strategy", ["ours", "theirs", "average", "weighted:0.25"])
def test_merge_strategies(repo, tmp_path, strategy):
    base, ours, theirs = _diverge(repo, tmp_path)
    head = repo.head()
    outcome, cid, rep = repo.merge("other", strategy)
    assert outcome == "merged"
    c = repo.read_commit(cid)
    assert c.parents == [head, repo.resolve("other")]
    got = _export_tensors(repo, "main", tmp_path)
    np.testing.assert_array_equal(got["b"], theirs["b"])  # changed on one side only
    np.testing.assert_array_equal(got["steps"], base["steps"])
    alpha = {"ours": 0.0, "theirs": 1.0, "average": 0.5, "weighted:0.25": 0.25}[strategy]
    want = ((1 - alpha) * ours["w"].astype(np.float64) + alpha * theirs["w"].astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(got["w"], want)
    assert repo.fsck().ok


def test_merge_fail_changes_nothing(repo, tmp_path):
    _diverge(repo, tmp_path)
    head = repo.head()
    with pytest.raises(MergeConflict) as e:
        repo.merge("other", "fail")
    assert "model.safetensors[w]" in str(e.value)
    assert repo.head() == head


def test_merge_fast_forward_and_up_to_date(repo, tmp_path):
    repo.commit_paths([_ckpt(tmp_path / "a", _model(0))], "a")
    repo.create_branch("ahead")
    repo.checkout("ahead")
    c = repo.commit_paths([_ckpt(tmp_path / "b", _model(1))], "b").commit
    repo.checkout("main")
    assert repo.merge("ahead")[0] == "fast-forward"
    assert repo.head() == c
    assert repo.merge("ahead")[0] == "up-to-date"


def test_merge_average_bf16(repo, tmp_path):
    base = {"w": np.ones((8, 8), dtype=ml_dtypes.bfloat16)}
    repo.commit_paths([_ckpt(tmp_path / "b0", base)], "base")
    repo.create_branch("o")
    repo.commit_paths([_ckpt(tmp_path / "b1", {"w": (base["w"].astype(np.float32) * 2).astype(ml_dtypes.bfloat16)})], "x2")
    repo.checkout("o")
    repo.commit_paths([_ckpt(tmp_path / "b2", {"w": (base["w"].astype(np.float32) * 4).astype(ml_dtypes.bfloat16)})], "x4")
    repo.checkout("main")
    repo.merge("o", "average")
    from safetensors.numpy import load_file as lf
    out = tmp_path / "bfout"
    repo.export("main", str(out))
    got = lf(str(out / "model.safetensors"))["w"]
    assert got.dtype == ml_dtypes.bfloat16 and np.all(got.astype(np.float32) == 3.0)


def test_merge_base_of_criss_cross(repo, tmp_path):
    c0 = repo.commit_paths([_ckpt(tmp_path / "0", _model(0))], "0").commit
    repo.create_branch("b")
    c1 = repo.commit_paths([_ckpt(tmp_path / "1", _model(1))], "1").commit
    repo.checkout("b")
    c2 = repo.commit_paths([_ckpt(tmp_path / "2", _model(2))], "2").commit
    assert repo.merge_base(c1, c2) == c0


def test_gc_keeps_reachable_and_reflog(repo, tmp_path):
    repo.commit_paths([_ckpt(tmp_path / "a", _model(0))], "a")
    repo.create_branch("tmp")
    repo.checkout("tmp")
    repo.commit_paths([_ckpt(tmp_path / "b", _model(5))], "b")
    repo.checkout("main")
    repo.delete_branch("tmp")
    # The deleted branch's commit is still in the reflog: gc keeps it.
    rep = repo.gc(grace_seconds=0)
    assert rep.removed == 0
    # An unreachable object (not in any reflog) is removed once old enough.
    from coralfs.objects.kinds import Tree
    orphan = repo.put(Tree({}))
    assert repo.gc(grace_seconds=3600).removed == 0  # too young
    assert repo.gc(grace_seconds=0).removed == 1
    assert not repo.store.has(orphan)
    assert repo.fsck().ok


def test_gc_keeps_pinned_objects(repo, tmp_path):
    from coralfs.objects.kinds import Tree, TreeEntry
    from coralfs.formats import layout_of
    path = str(_ckpt(tmp_path / "s", _model(3))) + "/model.safetensors"
    fid, _ = repo.write_file(path, layout_of(path).regions, "safetensors")
    tid = repo.put(Tree({"m": TreeEntry(fid)}))
    repo.pins.set("staging/x/pending", [tid])
    assert repo.gc(grace_seconds=0).removed == 0
    assert repo.store.has(fid)
    # a pin naming a tensor keeps its chunks
    f = repo.read_file(fid)
    tensor_id = next(iter(f.tensors().values())).tensor
    repo.pins.set("staging/x/pending", [tensor_id])
    repo.gc(grace_seconds=0)
    assert all(repo.store.has(c) for c in repo.odb.get_object(tensor_id).chunks)
    assert not repo.store.has(fid)
    assert repo.fsck().ok
    # fsck and gc read the same roots: a pinned object that is missing fails fsck
    missing = bytes(31) + b"\x01"
    repo.pins.set("other/pin", [missing])
    assert any("pin other/pin" in p and missing.hex() in p for p in repo.fsck().problems)
    with pytest.raises(CoralError, match="gc refused"):
        repo.gc(grace_seconds=0)
    repo.pins.delete("other/pin")
    assert repo.pins.names() == ["staging/x/pending"]
    repo.pins.delete("staging/x/pending")
    assert repo.pins.names() == [] and not os.path.exists(os.path.join(repo.path, "pins", "staging"))
    assert repo.gc(grace_seconds=0).removed > 0  # unpinned, the tensor's objects go


def test_damaged_pin_makes_fsck_fail_and_gc_refuse(repo):
    os.makedirs(os.path.join(repo.path, "pins", "a"))
    with open(os.path.join(repo.path, "pins", "a", "b"), "w") as f:
        f.write("not an id\n")
    assert any("pins/a/b is damaged" in p for p in repo.fsck().problems)
    with pytest.raises(CoralError, match="pins/a/b is damaged"):
        repo.gc(grace_seconds=0)
    for bad in ("", "a//b", "../x", "a/.hidden", "sp ace", "a\\b"):
        with pytest.raises(CoralError, match="invalid pin name"):
            repo.pins.set(bad, [])


def _flip(path: str, offset: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def test_flipped_byte_in_any_object_is_detected(repo, tmp_path):
    a = _model(0, n=256)
    repo.commit_paths([_ckpt(tmp_path / "a", a)], "a")
    b = dict(a, w=(a["w"] * 1.0001).astype(np.float32))
    repo.commit_paths([_ckpt(tmp_path / "b", b)], "b")
    assert repo.fsck().ok
    from coralfs import Repository
    ids = sorted(repo.store)
    for i, oid in enumerate(ids):
        path = repo.store._path(oid)
        size = os.path.getsize(path)
        off = (i * 7919) % size
        with open(path, "rb") as f:
            original = f.read()
        _flip(path, off)
        fresh = Repository.open(repo.path)  # no caches
        rep = fresh.fsck()
        assert not rep.ok and any(oid.hex() in p for p in rep.problems), (oid.hex(), off, rep.problems)
        # Reading through the store never returns wrong bytes: it raises, naming an object.
        for rev in ("main", "main~1"):
            try:
                for path_, e in fresh.tree_of(rev).entries.items():
                    data = b"".join(fresh.open_file(e.file).iter_bytes())
                    want = open(os.path.join(tmp_path / ("b" if rev == "main" else "a"), path_), "rb").read()
                    assert data == want
            except CorruptObject as err:
                assert len(err.object_id) == 64
        os.chmod(path, 0o644)
        with open(path, "wb") as f:
            f.write(original)
    assert Repository.open(repo.path).fsck().ok


def test_missing_object_reported(repo, tmp_path):
    repo.commit_paths([_ckpt(tmp_path / "a", _model(0))], "a")
    victim = next(o for o in repo.store if not repo.odb.chunk_header(o).structured)
    os.unlink(repo.store._path(victim))
    from coralfs import Repository
    rep = Repository.open(repo.path).fsck()
    assert any(victim.hex() in p and "missing" in p for p in rep.problems)


def test_stale_head_cas(repo, tmp_path):
    r1 = repo.commit_paths([_ckpt(tmp_path / "a", _model(0))], "a")
    from coralfs.objects.kinds import Tree
    with pytest.raises(RefMoved):
        repo.commit(Tree({}), "stale", expected_head=None)
    assert repo.head() == r1.commit


def test_init_refuses_non_empty(tmp_path):
    from coralfs import Repository
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CoralError):
        Repository.init(str(tmp_path / "full"))
    with pytest.raises(CoralError):
        Repository.open(str(tmp_path / "full"))
