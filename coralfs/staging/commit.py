"""Committing a staging area (ingest its spool files, move the branch by compare-and-
swap, turn committed rows into File rows) and rebasing it onto a branch that moved.

The commit id is recorded as ``pending`` before the branch moves, so a process killed in
between is finished by the next :meth:`StagingArea.open` (:func:`finalize`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..ingest import DiskFile, ingest_files, tree_mode
from ..objects.ids import ObjectId, to_hex
from ..objects.kinds import Tree, TreeEntry
from ..objects.repository import in_write_session
from ..objects.writer import IngestStats
from .entries import Entry, StagingError, perm_of

if TYPE_CHECKING:
    from .area import StagingArea


@in_write_session
def commit(area: StagingArea, message: str, *, author: str | None = None, metadata: dict | None = None,
           busy: set[str] = frozenset(), progress=None) -> tuple[ObjectId | None, IngestStats]:
    """Record the working tree as a commit on the branch. Returns (None, stats) when
    nothing changed. ``busy`` names spool files still open for writing: they are
    committed as they are now and stay in the spool."""
    rebase(area)
    if not area.changes():
        return None, IngestStats()
    files = sorted((p, e) for p, e in area.entries.items() if e.kind == "f")
    tree = {p: TreeEntry(e.fid, tree_mode(e.mode)) for p, e in files if e.fid is not None}
    written, stats = ingest_files(area.repo, [DiskFile(p, area.spool_path(e.spool), e.mode, label=p)
                                              for p, e in files if e.fid is None],
                                  area.base_entries(), progress)
    new_tree = Tree(tree | written)
    if area.base and area.repo.put(new_tree) == area.repo.read_commit(area.base).tree:
        # Written, but back to what the base holds (a file opened for writing and left
        # as it was): the spool copies go, the tree stays as it is.
        finalize(area, area.base, busy)
        return None, stats

    def record(cid: ObjectId) -> None:
        with area.db:
            area._set_meta("pending", to_hex(cid))
        area._write_roots()

    cid = area.repo.commit(new_tree, message, branch=area.branch, author=author, metadata=metadata,
                           expected_head=area.base, before_move=record)
    finalize(area, cid, busy)
    return cid, stats


def rebase(area: StagingArea) -> None:
    """The branch moved (another commit landed on it): put the staged changes on its
    new head. Files the branch changed and the staging area did not are taken from
    the head; a file both changed is a conflict, and nothing changes."""
    head = area.head()
    if head == area.base:
        return
    old = area.base_entries()
    new = area.repo.tree_of(head).entries if head else {}
    theirs = {p for p in set(old) | set(new) if old.get(p) != new.get(p)}
    ours = {c.path for c in area.changes()}
    both = sorted(ours & theirs)
    if both:
        def s(x):
            return to_hex(x)[:12] if x else "nothing"
        raise StagingError(
            f"branch {area.branch!r} moved to {s(head)} after this staging area was based on {s(area.base)}, "
            f"and both changed {', '.join(both[:3])}{' ...' if len(both) > 3 else ''}: `coralfs stash` the "
            "changes, then `coralfs stash pop` them onto the new head")
    now = time.time_ns()
    with area.db:
        area.db.execute("BEGIN IMMEDIATE")
        for path in sorted(theirs):
            cur = area.entries.get(path)
            if path in new:
                te = new[path]
                if cur is not None and cur.kind == "d":
                    raise StagingError(f"cannot rebase onto the branch head: {path} is a directory here")
                area._add_parents(path, now)
                area._put(path, Entry("f", perm_of(te.mode), now, te.file))
            elif cur is not None and cur.kind == "f":
                area._drop(path)
        area._set_meta("base", to_hex(head) if head else "")
    area.base = head
    area._write_roots()


def finalize(area: StagingArea, cid: ObjectId, busy: set[str]) -> None:
    """The branch is at ``cid``: committed spool rows become File rows."""
    tree = area.repo.tree_of(cid).entries
    dropped = []
    with area.db:
        area.db.execute("BEGIN IMMEDIATE")
        for path, e in area.entries.items():
            if e.kind == "f" and e.spool and e.spool not in busy and path in tree:
                dropped.append(e.spool)
                e.fid, e.spool = tree[path].file, None
                area._row(path, e)
        area._set_meta("base", to_hex(cid))
        area._set_meta("pending", None)
    area.base = cid
    area._write_roots()
    for s in dropped:
        area.discard_spool(s)
