"""Committing a staging area (ingest its spool files, move the branch by compare-and-
swap, turn committed rows into File rows) and rebasing it onto a branch that moved.

The commit id is recorded as ``pending`` before the branch moves, so a process killed in
between is finished by the next :meth:`StagingArea.open` (:func:`finalize`).

What a row becomes in the tree: a file row (kind "f") a file entry with the owner's
executable bit; a link row ("l") a MODE_SYMLINK entry whose File holds ``Entry.target``;
a directory row ("d") with nothing under it a MODE_DIR entry; rows sharing one spool file
(hard links) entries of one File object, the spool ingested once."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from typing import TYPE_CHECKING

from ..ingest import (
    DiskFile,
    ingest_files,
    read_link,
    special_entries,
    tree_mode,
    with_owners,
)
from ..objects.ids import ObjectId, to_hex
from ..objects.kinds import Tree, TreeEntry
from ..objects.repository import in_write_session
from ..objects.writer import IngestStats
from .entries import StagingError

if TYPE_CHECKING:
    from .area import StagingArea


def _links(area: StagingArea) -> tuple[dict[str, TreeEntry], dict[str, bytes]]:
    """The link rows: those the base holds as they are (their entries, nothing to store)
    and the others (their target text, to store)."""
    base = area.base_entries()
    kept, new = {}, {}
    for p, e in area.entries.items():
        if e.kind != "l":
            continue
        was = base.get(p)
        if was is not None and was.is_symlink and e.fid == was.file:
            kept[p] = was
        else:
            new[p] = os.fsencode(e.target)
    return kept, new


def _empty_dirs(area: StagingArea) -> list[str]:
    return sorted(p for p, e in area.entries.items() if e.kind == "d" and not area.dirs.get(p))


def owners_of_rows(area: StagingArea) -> dict[str, list[int]]:
    """--preserve-owner of a staging area: [uid, gid, permission bits] of every row, as
    the mount shows them."""
    return {p: [e.uid, e.gid, stat.S_IMODE(e.mode)] for p, e in area.entries.items()}


@in_write_session
def commit(area: StagingArea, message: str, *, author: str | None = None, metadata: dict | None = None,
           busy: set[str] = frozenset(), progress=None,
           preserve_owner: bool = False) -> tuple[ObjectId | None, IngestStats]:
    """Record the working tree as a commit on the branch. Returns (None, stats) when
    nothing changed. ``busy`` names spool files still open for writing: they are
    committed as they are now and stay in the spool. ``preserve_owner``: the rows'
    uid, gid and mode go into the commit's metadata (:func:`owners_of_rows`)."""
    rebase(area)
    if not area.changes():  # files, links and empty directories
        return None, IngestStats()
    kept_links, links = _links(area)
    dirs = _empty_dirs(area)
    if preserve_owner:
        metadata = with_owners(metadata, owners_of_rows(area))
    base = area.base_entries()
    files = sorted((p, e) for p, e in area.entries.items() if e.kind == "f")
    tree = {p: TreeEntry(e.fid, tree_mode(e.mode)) for p, e in files if e.fid is not None}
    # Hard links: rows naming one spool file are one file, ingested once.
    by_spool: dict[str, list[str]] = {}
    for p, e in files:
        if e.fid is None:
            by_spool.setdefault(e.spool, []).append(p)
    sources = {sp: area.spool_path(sp) for sp in by_spool}
    try:
        for sp in by_spool:
            ov = area.overlay(sp)
            if ov is not None:  # range copy-on-write: the written ranges over the committed bytes
                sources[sp] = area.spool_path(f"{sp}.{secrets.token_hex(4)}.commit")
                ov.materialize(area.spool_path(sp), area.repo.open_file(ov.fid).read, sources[sp])
        written, stats = ingest_files(area.repo, [DiskFile(ps[0], sources[sp], area.entries[ps[0]].mode,
                                                           label=ps[0]) for sp, ps in by_spool.items()],
                                      base, progress, kept=tree)
    finally:  # what a crash leaves here goes when the area is next opened (no row names it)
        for sp, src in sources.items():
            if src != area.spool_path(sp):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(src)
    for ps in by_spool.values():
        for p in ps[1:]:
            written[p] = TreeEntry(written[ps[0]].file, tree_mode(area.entries[p].mode))
    new_tree = Tree(tree | kept_links | written | special_entries(area.repo, links, dirs, stats))
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
                    if te.is_dir:
                        continue  # an empty directory here already
                    raise StagingError(f"cannot rebase onto the branch head: {path} is a directory here")
                area._add_parents(path, now)
                area._put(path, area.entry_of(te, now))  # a file, link or empty directory
            elif cur is not None and (cur.kind == "f" or cur.kind == "l"
                                      or (cur.kind == "d" and old[path].is_dir and not area.dirs.get(path))):
                area._drop(path)
        area._set_meta("base", to_hex(head) if head else "")
    area.base = head
    area._write_roots()


def finalize(area: StagingArea, cid: ObjectId, busy: set[str]) -> None:
    """The branch is at ``cid``: committed spool rows become File rows, and committed
    link rows name the File of their target (so the next commit reuses it)."""
    tree = area.repo.tree_of(cid).entries
    dropped = []
    with area.db:
        area.db.execute("BEGIN IMMEDIATE")
        for path, e in area.entries.items():
            if e.kind == "f" and e.spool and e.spool not in busy and path in tree:
                dropped.append(e.spool)
                e.fid, e.spool = tree[path].file, None
                area._row(path, e)
            elif e.kind == "l" and path in tree and tree[path].is_symlink and e.fid != tree[path].file \
                    and read_link(area.repo, tree[path].file, path) == os.fsencode(e.target):
                e.fid = tree[path].file
                area._row(path, e)
        area._set_meta("base", to_hex(cid))
        area._set_meta("pending", None)
    area.base = cid
    area._write_roots()
    for s in dropped:
        area.discard_spool(s)
