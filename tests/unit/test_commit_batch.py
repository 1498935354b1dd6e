"""A commit's objects go through one DiskStore batch: no fsync per object, re-encoded
parents swapped in only after the keyframes they name are durable under their names, and
a process killed at any flush step leaves a consistent repository."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs import Repository
from coralfs.objects import codecs, dtypes
from coralfs.objects.kinds import Tensor, TensorSegment
from coralfs.objects.stores import disk

# 8 tensors of 256 KiB: above SMALL_CHUNK, so a child commit re-encodes its parent's
# chunks as reverse deltas against the child's keyframes.
SHAPE = (256, 256)


def _checkpoint(d, seed: int, parent: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)
    if parent is None:
        tensors = {f"layer{i}.w": (rng.standard_normal(SHAPE) * 0.05).astype(np.float32) for i in range(8)}
    else:
        tensors = {k: (v + rng.standard_normal(SHAPE).astype(np.float32) * 1e-4).astype(np.float32)
                   for k, v in parent.items()}
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    return tensors


def _chunks(repo: Repository, commit) -> list:
    f = repo.read_file(repo.tree_of(commit).entries["model.safetensors"].file)
    return [c for s in f.segments if isinstance(s, TensorSegment)
            for c in repo.odb.get_object(s.tensor, Tensor).chunks]


def _parent_and_child(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    first = _checkpoint(tmp_path / "c0", 1)
    old = repo.commit_paths([str(tmp_path / "c0")], "parent").commit
    _checkpoint(tmp_path / "c1", 2, first)
    return repo, old


def test_a_commit_fsyncs_no_object_and_flushes_a_few_times(tmp_path, monkeypatch):
    repo, old = _parent_and_child(tmp_path)
    objects = os.path.join(repo.path, "objects")
    fsynced: list[str] = []
    flushes: list[str] = []
    real_fsync, real_flush = os.fsync, disk.sync_filesystem

    def fsync(fd: int) -> None:
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def flush(path: str) -> None:
        flushes.append(path)
        real_flush(path)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(disk, "sync_filesystem", flush)
    res = repo.commit_paths([str(tmp_path / "c1")], "child")
    monkeypatch.undo()
    assert res.stats.chunks_new >= 8
    # Reverse deltas happened: the parent's chunks now name the child's keyframes.
    parents = _chunks(repo, old)
    assert all(repo.odb.chunk_header(c).base in set(_chunks(repo, res.commit)) for c in parents)
    # Not one object file or fan-out directory fsynced on its own (there were ~30 before:
    # chunks, tensors, re-encoded parents, file, tree, commit): three flushes for all.
    assert [p for p in fsynced if p.startswith(objects)] == []
    assert flushes == [objects] * 3
    assert [f for d, _, fs in os.walk(objects) for f in fs if f.startswith(".tmp")] == []
    assert repo.fsck().ok


def test_a_reverse_delta_replaces_its_parent_only_after_the_keyframe_name_is_durable(tmp_path, monkeypatch):
    repo, old = _parent_and_child(tmp_path)
    objects = os.path.join(repo.path, "objects")
    events: list[tuple[str, str]] = []
    real_replace, real_link, real_flush = os.replace, os.link, disk.sync_filesystem

    def named(dst) -> None:
        if str(dst).startswith(objects):
            h = os.path.basename(os.path.dirname(dst)) + os.path.basename(dst)
            events.append(("name", h))

    def replace(src, dst, **kw):  # a re-encoded frame swapped in
        real_replace(src, dst, **kw)
        named(dst)

    def link(src, dst, **kw):  # a new object named (never over another)
        real_link(src, dst, **kw)
        named(dst)

    def flush(path: str) -> None:
        real_flush(path)
        events.append(("flush", ""))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(disk, "sync_filesystem", flush)
    new = repo.commit_paths([str(tmp_path / "c1")], "child").commit
    monkeypatch.undo()
    at = {h: i for i, (kind, h) in enumerate(events) if kind == "name"}
    flushed = [i for i, (kind, _) in enumerate(events) if kind == "flush"]
    checked = 0
    for p in _chunks(repo, old):
        k = repo.odb.chunk_header(p).base
        assert k in set(_chunks(repo, new))
        # The parent's new frame got its name after a flush that came after the keyframe's
        # name (and after a first flush of the bytes of both).
        assert any(at[k.hex()] < f < at[p.hex()] for f in flushed), events
        assert flushed[0] < at[k.hex()]
        checked += 1
    assert checked == 8
    # The ref moved last: every name precedes the final flush.
    assert max(at.values()) < flushed[-1]


KILLER = r"""
import os, sys
from coralfs import Repository
from coralfs.objects.stores import disk
repo_path, src, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
real, calls = disk.sync_filesystem, []
def flush(path):
    calls.append(path)
    if len(calls) == at:
        os._exit(9)    # the moment just before this flush: what a crash there leaves
    real(path)
disk.sync_filesystem = flush
Repository.open(repo_path).commit_paths([src], "child")
print("COMMITTED", flush=True)
"""


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_kill_9_at_each_flush_step_leaves_a_consistent_repository(tmp_path, at):
    """Killed before the bytes flush (1), before the names flush (2: new objects named, the
    parents still keyframes), before the last flush (3: parents re-encoded) or never (4:
    the commit has three flushes): fsck is clean and the old head reads back whole."""
    repo, old = _parent_and_child(tmp_path)
    with open(tmp_path / "c0" / "model.safetensors", "rb") as f:
        original = f.read()
    p = subprocess.run([sys.executable, "-c", KILLER, repo.path, str(tmp_path / "c1"), str(at)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    fresh = Repository.open(repo.path)
    if at <= 3:
        assert p.returncode == -9 or p.returncode == 9, p.stderr
        assert fresh.head() == old
    else:
        assert p.returncode == 0 and "COMMITTED" in p.stdout, p.stderr
        assert fresh.read_commit(fresh.head()).parents == [old]
    rep = fresh.fsck()
    assert rep.ok, rep.problems
    data = b"".join(fresh.open_file(fresh.tree_of(old).entries["model.safetensors"].file).iter_bytes())
    assert data == original
    parents = _chunks(fresh, old)
    deltas = [fresh.odb.chunk_header(c).codec in codecs.DELTA_CODECS for c in parents]
    # Before the re-encoded frames are swapped in, the parents are the keyframes they were.
    assert deltas == [at >= 3] * len(parents)


def test_gc_removes_the_temp_files_of_a_killed_batch_and_only_those(tmp_path):
    """A commit killed before its first flush leaves its objects as hidden temp files; gc
    removes them once their writer is gone and they are older than its grace, never a
    live writer's."""
    repo, old = _parent_and_child(tmp_path)
    p = subprocess.run([sys.executable, "-c", KILLER, repo.path, str(tmp_path / "c1"), "1"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert p.returncode in (-9, 9), p.stderr
    objects = os.path.join(repo.path, "objects")
    left = [os.path.join(d, n) for d, _, fs in os.walk(objects) for n in fs if n.startswith(".tmp-")]
    assert left  # what the killed commit had written
    mine = os.path.join(objects, os.listdir(objects)[0], f".tmp-{os.getpid()}-1-1.part")
    with open(mine, "wb") as f:
        f.write(b"a write in progress")
    fresh = Repository.open(repo.path)
    assert fresh.gc(grace_seconds=3600).temps == 0  # too young: a pid may be reused
    rep = fresh.gc(grace_seconds=0, dry_run=True)
    assert rep.temps == len(left) and all(os.path.exists(x) for x in left)
    rep = fresh.gc(grace_seconds=0)
    assert rep.temps == len(left) and rep.temps_freed > 0
    assert not any(os.path.exists(x) for x in left) and os.path.exists(mine)
    assert fresh.fsck().ok and fresh.head() == old


def _names(repo: Repository) -> set[str]:
    objects = os.path.join(repo.path, "objects")
    return {d + f for d in os.listdir(objects) if len(d) == 2
            for f in os.listdir(os.path.join(objects, d)) if not f.startswith(".")}


def test_two_writers_of_one_object_never_make_a_delta_cycle(tmp_path):
    """Process A stores X as a delta against P (a similarity base) while process B stores X
    as a keyframe and re-encodes P against it (a reverse delta). Whichever X is named
    first keeps the name, and P is swapped only while the X on disk is a keyframe: never
    P -> X -> P."""
    from coralfs.objects.ids import hash_bytes
    root = str(tmp_path / "objects")
    os.makedirs(root)
    rng = np.random.default_rng(0)
    p = (rng.standard_normal(1 << 16) * 0.05).astype(np.float32)
    x = (p + rng.standard_normal(p.shape).astype(np.float32) * 1e-4).astype(np.float32)
    pb, xb = p.tobytes(), x.tobytes()
    po, xo = hash_bytes(pb), hash_bytes(xb)
    kw = dict(width=4, key=dtypes.KEY_FLOAT)
    a, b = disk.DiskStore(root), disk.DiskStore(root)  # two processes sharing objects/
    a.put(po, codecs.encode(pb, po, **kw))
    with a.batch():
        a.put(xo, codecs.encode(xb, xo, base=codecs.Base(po, pb, 0), **kw))  # A: X against P
        with b.batch():  # B's batch ends first: its X is named, P re-encoded against it
            b.put(xo, codecs.encode(xb, xo, **kw))
            b.replace(po, codecs.encode(pb, po, base=codecs.Base(xo, xb, 0), **kw))
    fresh = disk.DiskStore(root)
    hx, hp = codecs.parse_header(fresh.get(xo), xo), codecs.parse_header(fresh.get(po), po)
    assert not (hx.base == po and hp.base == xo)

    def get(o):
        return codecs.decode(fresh.get(o), o, get)

    assert get(po) == pb and get(xo) == xb


def test_a_failed_flush_names_nothing_and_the_next_commit_works(tmp_path, monkeypatch):
    """The file-system flush before the names fails (EIO): the commit raises, no object
    gets a name (its bytes may not be on disk), the parents stay keyframes, no temp file
    is left, and the next commit goes through."""
    repo, old = _parent_and_child(tmp_path)
    before = _names(repo)
    real = disk.sync_filesystem
    calls = []

    def failing(root):
        calls.append(root)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real(root)

    monkeypatch.setattr(disk, "sync_filesystem", failing)
    with pytest.raises(OSError):
        repo.commit_paths([str(tmp_path / "c1")], "child")
    assert _names(repo) == before and repo.head() == old
    assert not [n for d, _, fs in os.walk(os.path.join(repo.path, "objects")) for n in fs if n.startswith(".tmp-")]
    assert not any(repo.odb.chunk_header(c).codec in codecs.DELTA_CODECS for c in _chunks(repo, old))
    new = repo.commit_paths([str(tmp_path / "c1")], "child").commit
    assert repo.head() == new and repo.fsck().ok
    assert b"".join(repo.open_file(repo.tree_of(old).entries["model.safetensors"].file).iter_bytes()) == \
        (tmp_path / "c0" / "model.safetensors").read_bytes()
