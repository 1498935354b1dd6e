"""gc and fsck read one set of roots (objects/reach.roots): what gc keeps, fsck checks.

Each kind of root gets an object reachable from it alone; gc must keep it, and once it
is gone fsck must name it and gc must refuse. A kind that one of them skipped (fsck
once ignored reflogs, which gc kept) fails here.
"""

from __future__ import annotations

import os
import shutil

import pytest

from coralfs.objects.errors import CoralError
from coralfs.objects.ids import ObjectId
from coralfs.objects.kinds import Tree, TreeEntry
from coralfs.objects.reach import mark, roots
from coralfs.objects.repository import Repository

KINDS = ("branch", "tag", "detached HEAD", "reflog", "pin")


def _tree(repo: Repository, tmp_path, text: str) -> ObjectId:
    p = tmp_path / f"{text}.txt"
    p.write_text(text)
    fid, _ = repo.write_file(str(p))
    return repo.put(Tree({f"{text}.txt": TreeEntry(fid)}))


def _drop_reflogs(repo: Repository) -> None:
    """Reflogs also name every id a ref held: without them a ref is the only root."""
    shutil.rmtree(os.path.join(repo.path, "logs"))
    os.mkdir(os.path.join(repo.path, "logs"))


def _only_root(repo: Repository, tmp_path, kind: str) -> ObjectId:
    """An object that nothing but one root of ``kind`` reaches."""
    tree = _tree(repo, tmp_path, kind.replace(" ", "-"))
    if kind == "pin":
        repo.pins.set("test/only", [tree])
        return tree
    if kind == "detached HEAD":
        repo.checkout(repo.resolve("main").hex())
        cid = repo.commit(tree, kind)
    else:
        cid = repo.commit(tree, kind, branch="side", parents=[])
        if kind == "tag":
            repo.create_tag("t", "side")
        if kind != "branch":
            repo.delete_branch("side")
    if kind != "reflog":
        _drop_reflogs(repo)
    return cid


@pytest.mark.parametrize("kind", KINDS)
def test_gc_keeps_and_fsck_checks_every_kind_of_root(tmp_path, kind):
    repo = Repository.init(str(tmp_path / "repo"))
    repo.commit(_tree(repo, tmp_path, "base"), "base")
    oid = _only_root(repo, tmp_path, kind)
    assert repo.gc(grace_seconds=0).removed == 0
    assert repo.store.has(oid)
    m, problems = mark(repo)
    assert problems == [] and oid in m.seen
    assert repo.fsck().ok
    repo.store.delete(oid)
    rep = repo.fsck()
    assert any(oid.hex() in p and "missing" in p for p in rep.problems), rep.problems
    with pytest.raises(CoralError, match="gc refused"):
        repo.gc(grace_seconds=0)


def test_a_reflog_entry_is_a_root_and_names_its_log(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    repo.commit(_tree(repo, tmp_path, "base"), "base")
    cid = _only_root(repo, tmp_path, "reflog")
    found, problems = roots(repo)
    assert problems == []
    assert ("logs/refs/heads/side", cid) in found
    repo.store.delete(cid)
    assert any(p.startswith("logs/refs/heads/side: missing object") for p in repo.fsck().problems)


def test_after_gc_the_store_holds_exactly_what_the_roots_reach(tmp_path):
    repo = Repository.init(str(tmp_path / "repo"))
    repo.commit(_tree(repo, tmp_path, "base"), "base")
    for kind in ("reflog", "pin"):
        _only_root(repo, tmp_path, kind)
    orphan = _tree(repo, tmp_path, "orphan")
    assert repo.gc(grace_seconds=0).removed == 3  # the orphan tree, its file, its chunk
    assert not repo.store.has(orphan)
    m, _ = mark(repo)
    assert set(repo.store) == m.seen
    assert repo.fsck().ok
