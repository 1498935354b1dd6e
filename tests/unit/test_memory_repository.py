"""A repository whose objects and refs live in memory: Repository(path, store, refs).

The directory still holds config.toml, pins, staging, the similarity index and the
session lock; nothing of the store or the refs is written under it.
"""

from __future__ import annotations

import fcntl
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import coralfs
from coralfs.objects.errors import CoralError, NotARepository
from coralfs.objects.kinds import Tree, TreeEntry
from coralfs.objects.refs import MemoryRefs
from coralfs.objects.repository import Repository
from coralfs.objects.stores import MemoryStore


def _tree(repo: Repository, tmp_path, text: str):
    p = tmp_path / f"{text}.txt"
    p.write_text(text * 100)
    fid, _ = repo.write_file(str(p))
    return repo.put(Tree({f"{text}.txt": TreeEntry(fid)}))


def _try_exclusive(path: str) -> bool:
    fd = os.open(os.path.join(path, "sessions.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
def mem(tmp_path):
    store, refs = MemoryStore(), MemoryRefs()
    repo = Repository.init(str(tmp_path / "repo"), store=store, refs=refs)
    yield repo
    repo.close()


def test_nothing_of_the_store_or_refs_is_on_disk(mem, tmp_path):
    c1 = mem.commit(_tree(mem, tmp_path, "one"), "one")
    assert sorted(os.listdir(mem.path)) == ["config.toml", "index", "sessions.lock", "staging"]
    assert mem.head_branch() == "main" and mem.head() == c1
    assert set(mem.store) and mem.refs.reflog("refs/heads/main")[0].new == c1


def test_history_refs_and_short_ids(mem, tmp_path):
    c1 = mem.commit(_tree(mem, tmp_path, "one"), "one")
    c2 = mem.commit(_tree(mem, tmp_path, "two"), "two")
    assert [c for c, _ in mem.log()] == [c2, c1]
    assert mem.resolve(c1.hex()[:8]) == c1  # a short id resolves through iter_prefix
    assert mem.resolve("main~1") == c1
    mem.create_branch("side", "main~1")
    mem.create_tag("v1", "main")
    assert mem.resolve("v1") == c2 and mem.branches() == {"main": c2, "side": c1}
    assert mem.checkout("side") == ("side", c1)
    assert mem.merge("main")[0] == "fast-forward"


def test_reopened_with_the_same_store_and_refs_and_not_without(mem, tmp_path):
    c1 = mem.commit(_tree(mem, tmp_path, "one"), "one")
    again = Repository.open(mem.path, mem.store, mem.refs)
    assert again.head() == c1 and again.read_commit(c1).message == "one"
    with pytest.raises(NotARepository, match="no HEAD"):
        Repository.open(mem.path)


def test_gc_and_fsck_on_memory(mem, tmp_path):
    mem.commit(_tree(mem, tmp_path, "base"), "base")
    cid = mem.commit(_tree(mem, tmp_path, "side"), "side", branch="side", parents=[])
    mem.delete_branch("side")  # only its reflog entry keeps it
    pinned = _tree(mem, tmp_path, "pinned")
    mem.pins.set("test/p", [pinned])
    orphan = _tree(mem, tmp_path, "orphan")
    assert mem.gc(grace_seconds=0).removed == 3  # orphan's tree, file and chunk
    assert not mem.store.has(orphan) and mem.store.has(cid) and mem.store.has(pinned)
    assert mem.fsck().ok
    mem.store.delete(cid)
    assert any(cid.hex() in p for p in mem.fsck().problems)
    with pytest.raises(CoralError, match="gc refused"):
        mem.gc(grace_seconds=0)


def test_write_sessions_hold_off_gc_on_memory(mem, tmp_path):
    other = Repository.open(mem.path, mem.store, mem.refs)
    with mem.write_session():
        assert not _try_exclusive(mem.path)  # a gc of the same repository would wait
        with pytest.raises(CoralError, match="inside a write session"):
            mem.gc(0)
        with other.write_session():  # writers never block each other
            pass
    assert _try_exclusive(mem.path)
    seen = []
    mem.commit(_tree(mem, tmp_path, "c"), "c", before_move=lambda cid: seen.append(_try_exclusive(mem.path)))
    assert seen == [False]


def test_the_facade_commits_and_exports_over_memory(tmp_path):
    src = tmp_path / "ckpt"
    src.mkdir()
    w = np.arange(4096, dtype=np.float32).reshape(64, 64)
    save_file({"w": w}, str(src / "model.safetensors"))
    repo = coralfs.Repository.init(str(tmp_path / "repo"), store=MemoryStore(), refs=MemoryRefs())
    repo.commit_paths([str(src)], "one")
    repo.export("main", str(tmp_path / "out"))
    assert np.array_equal(load_file(str(tmp_path / "out" / "model.safetensors"))["w"], w)
    assert repo.fsck().ok
    repo.close()
