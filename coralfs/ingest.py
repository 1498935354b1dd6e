"""Files on disk -> a Tree, each file split by its format: the one ingest path.

``coralfs commit`` and ``import`` (:func:`commit_paths`), ``coralfs watch`` (through
``commit_paths``) and the commit of a writable mount's staging area (``coralfs.staging.commit``, on
its spool files) all store files through :func:`ingest_files`, so they agree on:

- when files are validated: every file's layout is read (and a malformed file refused)
  before the first object is stored;
- how a tree mode is derived: from the permission bits the caller gives
  (:func:`tree_mode`: executable for the owner or not);
- how a format error is named: by the file's ``label`` (the path the user gave, or the
  path in the tree for a spool file whose own name means nothing to them), keeping any
  ``:member`` suffix the reader added, and always ending in "nothing was committed".
"""

from __future__ import annotations

import os
import stat as _stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .formats import FormatError, Layout, layout_of
from .interrupts import landing
from .objects.errors import CoralError
from .objects.ids import ObjectId
from .objects.kinds import MODE_EXEC, MODE_FILE, Tree, TreeEntry, validate_path
from .objects.repository import Repository, in_write_session
from .objects.writer import IngestStats

Progress = Callable[[str, int], None]


@dataclass
class CommitResult:
    commit: ObjectId
    stats: IngestStats
    files: dict[str, ObjectId]
    unchanged: bool = False


@dataclass(frozen=True)
class DiskFile:
    """One file to ingest: where it goes in the tree and where its bytes are."""

    path: str          # the path in the tree (its extension picks the format reader)
    source: str        # the file on disk holding the bytes
    perm: int          # permission bits; only the owner's executable bit is recorded
    label: str = ""    # how errors name the file (default: ``source``)


def tree_mode(perm: int) -> int:
    """The tree mode of a file with permission bits ``perm``."""
    return MODE_EXEC if perm & _stat.S_IXUSR else MODE_FILE


def _layout(f: DiskFile) -> Layout:
    try:
        return layout_of(f.source, name=f.path)
    except FormatError as err:
        if not f.label or f.label == f.source:
            raise
        # Keep what the reader appended to the file's name (an archive member).
        where = f.label + err.path[len(f.source):] if err.path.startswith(f.source) else f.label
        raise FormatError(where, err.problem) from None


@in_write_session
def ingest_files(repo: Repository, files: Iterable[DiskFile], base: Mapping[str, TreeEntry],
                 progress: Progress | None = None) -> tuple[dict[str, TreeEntry], IngestStats]:
    """Store ``files`` (each a delta against the same path in ``base``, if there) and
    return their tree entries. Every file is validated first: a malformed one raises
    FormatError before anything is stored."""
    todo = [(f, _layout(f)) for f in files]
    stats = IngestStats()
    entries: dict[str, TreeEntry] = {}
    for f, layout in todo:
        prev = base.get(f.path)
        fid, st = repo.write_file(f.source, layout.regions, layout.format,
                                  repo.read_file(prev.file) if prev else None)
        stats.add(st)
        entries[f.path] = TreeEntry(fid, tree_mode(f.perm))
        if progress:
            progress(f.path, st.logical)
    return entries, stats


def collect_sources(sources: list[str], *, follow_top_links: bool = True) -> dict[str, str]:
    """Map tree path -> file on disk. A directory contributes its contents at the tree
    root; a file contributes itself by its name.

    A symbolic link inside a source is never followed (it could point anywhere, say
    ``/etc/shadow``): it is refused, naming the link, before anything is read. A source
    given as a link itself is followed, as git and rsync follow the path a user typed,
    unless ``follow_top_links`` is false (watch: the entries were not typed by the user).
    """
    out: dict[str, str] = {}
    for src in sources:
        if not follow_top_links and os.path.islink(src):
            raise _link_error(src)
        if not os.path.exists(src):
            raise CoralError(f"{src}: no such file or directory")
        if os.path.isdir(src):
            _collect_dir(src, out)
        elif os.path.isfile(src):
            _add(out, os.path.basename(src), src)
        else:
            raise CoralError(f"{src}: not a regular file or directory")
    if not out:
        raise CoralError("nothing to commit: the sources hold no files")
    return out


def _collect_dir(src: str, out: dict[str, str]) -> None:
    def unreadable(e: OSError) -> None:
        raise CoralError(f"{e.filename}: cannot be read ({e.strerror}); nothing was committed")

    for dirpath, dirnames, files in os.walk(src, onerror=unreadable, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != ".coral")
        for name in dirnames + files:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                raise _link_error(full)
        for f in sorted(files):
            full = os.path.join(dirpath, f)
            if not _stat.S_ISREG(os.lstat(full).st_mode):
                continue  # sockets, fifos, devices
            rel = os.path.relpath(full, src).replace(os.sep, "/")
            _add(out, rel, full)


def _link_error(link: str) -> CoralError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return CoralError(f"{link}: is a symbolic link (to {target!r}), and coralfs does not follow links "
                      f"inside a source; replace it by the file it points to (cp -L) or remove it; "
                      f"nothing was committed")


def _add(out: dict[str, str], rel: str, full: str) -> None:
    try:
        validate_path(rel)
    except CoralError as e:
        raise CoralError(f"{full}: {e}") from None
    if rel in out:
        raise CoralError(f"two sources give the path {rel!r} ({out[rel]} and {full})")
    out[rel] = full


@in_write_session
def commit_paths(repo: Repository, sources: list[str], message: str, *, branch: str | None = None,
                 author: str | None = None, metadata: dict | None = None,
                 progress: Progress | None = None, allow_empty: bool = True,
                 follow_top_links: bool = True) -> CommitResult:
    """Commit checkpoint directories or files as the new snapshot of ``branch``.

    Every file is validated and split by its format first: a malformed file raises
    FormatError before any ref moves, so nothing is committed. Symbolic links inside
    the sources are refused (see :func:`collect_sources`).
    """
    files = [DiskFile(rel, path, os.stat(path).st_mode)
             for rel, path in collect_sources(sources, follow_top_links=follow_top_links).items()]
    target = branch or repo.head_branch()
    head = repo.refs.read(f"refs/heads/{target}") if target else repo.head()
    parent_tree = repo.tree_of(head) if head else Tree({})
    entries, stats = ingest_files(repo, files, parent_tree.entries, progress)
    tree = Tree(entries)
    ids = {k: e.file for k, e in entries.items()}
    unchanged = head is not None and repo.put(tree) == parent_tree.id
    if unchanged and not allow_empty:
        return CommitResult(head, stats, ids, True)
    with landing():  # from here a signal no longer stops the commit (coralfs/interrupts.py)
        cid = repo.commit(tree, message, branch=branch, author=author, metadata=metadata,
                          expected_head=head)
    return CommitResult(cid, stats, ids, unchanged)


__all__ = ["CommitResult", "DiskFile", "collect_sources", "commit_paths", "ingest_files", "tree_mode"]
