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
  ``:member`` suffix the reader added, and always ending in "nothing was committed";
- how a symbolic link and an empty directory are stored (:func:`special_entries`): a link
  is a MODE_SYMLINK entry whose File holds the target text (never followed), an empty
  directory a MODE_DIR entry of the empty File;
- what ``--preserve-owner`` records (:func:`owner_of`): uid, gid and the 12 permission
  bits per path, in the commit's metadata under ``owners``, never in the tree.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import re
import stat as _stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .formats import FormatError, Layout, layout_of
from .formats.detect import Siblings
from .formats.onnx import sibling_layout
from .interrupts import landing
from .objects.errors import CoralError
from .objects.fsck import EMPTY_FILE, MAX_LINK_TARGET, read_link  # what fsck holds entries to
from .objects.ids import ObjectId
from .objects.kinds import MODE_DIR, MODE_EXEC, MODE_FILE, MODE_SYMLINK, Tree, TreeEntry, validate_path
from .objects.repository import Repository, in_write_session
from .objects.writer import IngestStats, Source

# The metadata key of --preserve-owner: {tree path: [uid, gid, permission bits]}.
OWNERS_KEY = "owners"

Progress = Callable[[str, int], None]


@dataclass
class CommitResult:
    commit: ObjectId
    stats: IngestStats
    files: dict[str, ObjectId]   # regular files only
    unchanged: bool = False
    links: int = 0               # symbolic links stored as links
    dirs: int = 0                # empty directories


@dataclass
class Sources:
    """What the sources of a commit hold, found without following any link inside them."""

    files: dict[str, str] = field(default_factory=dict)       # tree path -> file on disk
    links: dict[str, bytes] = field(default_factory=dict)     # tree path -> link target
    dirs: set[str] = field(default_factory=set)               # tree paths of empty directories
    owners: dict[str, list[int]] = field(default_factory=dict)  # path -> [uid, gid, mode] (when asked)
    # tree path -> (st_dev, st_ino) of the file found there, and whether it was reached
    # through a link (a source typed as one): what is read must be that very file.
    inodes: dict[str, tuple[int, int, bool]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.files or self.links or self.dirs)


@dataclass(frozen=True)
class DiskFile:
    """One file to ingest: where it goes in the tree and where its bytes are."""

    path: str          # the path in the tree (its extension picks the format reader)
    source: str        # the file on disk holding the bytes
    perm: int          # permission bits; only the owner's executable bit is recorded
    label: str = ""    # how errors name the file (default: ``source``)
    # (st_dev, st_ino, followed) of the file a walk found at ``source``: each read opens
    # it again (without following a link unless ``followed``) and refuses another file.
    inode: tuple[int, int, bool] | None = None


def tree_mode(perm: int) -> int:
    """The tree mode of a file with permission bits ``perm``."""
    return MODE_EXEC if perm & _stat.S_IXUSR else MODE_FILE


def _layout(f: DiskFile, siblings: Siblings | None = None) -> Layout:
    try:
        return layout_of(f.source, name=f.path, siblings=siblings)
    except FormatError as err:
        if not f.label or f.label == f.source:
            raise
        # Keep what the reader appended to the file's name (an archive member).
        where = f.label + err.path[len(f.source):] if err.path.startswith(f.source) else f.label
        raise FormatError(where, err.problem) from None


@contextlib.contextmanager
def _pinned(f: DiskFile) -> Iterator[DiskFile]:
    """``f`` to read, as the very file the walk found: opened without following a link
    (a file replaced by a link to /etc/shadow after the walk gives ELOOP), checked to be
    the same inode, and read through its descriptor's /proc path."""
    if f.inode is None or not os.path.isdir("/proc/self/fd"):
        yield f
        return
    label = f.label or f.source
    dev, ino, followed = f.inode
    try:
        fd = os.open(f.source, os.O_RDONLY | os.O_CLOEXEC | (0 if followed else os.O_NOFOLLOW))
    except OSError as e:
        raise CoralError(f"{label}: cannot be read ({e.strerror}; replaced by a link while committing?); "
                         "nothing was committed") from None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (dev, ino):
            raise CoralError(f"{label}: replaced by another file while committing; nothing was committed")
        yield DiskFile(f.path, f"/proc/self/fd/{fd}", f.perm, label)
    finally:
        os.close(fd)


class _TreeFiles:
    """The files of the commit being made, for :class:`Siblings`: those being ingested
    (opened pinned, as :func:`_pinned` reads them) and those already stored that the
    new tree keeps (copied out to a temporary file on first use)."""

    def __init__(self, repo: Repository, files: Mapping[str, DiskFile], stored: Mapping[str, TreeEntry],
                 stack: contextlib.ExitStack) -> None:
        self.repo, self.files, self.stack = repo, files, stack
        self.stored = {p: e for p, e in stored.items() if not (e.is_symlink or e.is_dir) and p not in files}
        self.opened: dict[str, str] = {}
        self.tmp: str | None = None

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return frozenset(self.files) | frozenset(self.stored)

    def open(self, path: str) -> str:
        if path not in self.opened:
            if path in self.files:
                self.opened[path] = self.stack.enter_context(_pinned(self.files[path])).source
            else:
                if self.tmp is None:
                    self.tmp = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="coral-sibling-"))
                out = os.path.join(self.tmp, str(len(self.opened)))
                with open(out, "wb") as w:
                    for block in self.repo.open_file(self.stored[path].file).iter_bytes():
                        w.write(block)
                self.opened[path] = out
        return self.opened[path]


def _checked_layout(f: DiskFile, tree: _TreeFiles | None = None) -> Layout:
    with _pinned(f) as g:
        return _layout(g, None if tree is None else Siblings(f.path, tree.names, tree.open))


def _with_siblings(todo: list[tuple[DiskFile, Layout]]) -> list[tuple[DiskFile, Layout]]:
    """Files another file of the same commit describes (an .onnx model's external data,
    :attr:`Layout.siblings`) take their regions from it. Locations resolve against the
    describing file's directory in the tree and never leave the tree (readers refuse
    absolute paths and '..'); a file described but not committed with it is not looked
    for, and a file with a format of its own keeps it."""
    index = {f.path: i for i, (f, _) in enumerate(todo)}
    for f, layout in list(todo):
        for location, regions in layout.siblings.items():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(f.path), location))
            i = index.get(target)
            if i is None or todo[i][1].format != "bytes" or target.split("/")[0] in ("..", ""):
                continue
            g = todo[i][0]
            with _pinned(g) as pinned:
                size = os.stat(pinned.source).st_size
            todo[i] = (g, sibling_layout(f.label or f.source, location, regions, size))
    return todo


@in_write_session
def ingest_files(repo: Repository, files: Iterable[DiskFile], base: Mapping[str, TreeEntry],
                 progress: Progress | None = None,
                 kept: Mapping[str, TreeEntry] | None = None) -> tuple[dict[str, TreeEntry], IngestStats]:
    """Store ``files`` (each a delta against the same path in ``base``, if there) and
    return their tree entries. Every file is validated first: a malformed one raises
    FormatError before anything is stored. ``kept``: the stored files the new tree keeps
    besides ``files``, which a reader may read as siblings (a shard's index)."""
    files = list(files)
    with contextlib.ExitStack() as stack:
        tree = _TreeFiles(repo, {f.path: f for f in files}, kept or {}, stack)
        # Checkpoint directories in step order (checkpoint-2 before checkpoint-10), so each
        # finds the one before it as its sibling base.
        todo = sorted(_with_siblings([(f, _checked_layout(f, tree)) for f in files]), key=lambda t: _natural(t[0].path))
    stats = IngestStats()
    entries: dict[str, TreeEntry] = {}
    # One batch for the files' objects: a few flushes instead of an fsync per object,
    # and re-encoded parents swapped in after the keyframes they name (Repository.write_batch).
    with repo.write_batch():
        for f, layout in todo:
            prev = base.get(f.path)
            if prev is None:
                prev = sibling_base(f.path, entries, base)
            if prev is not None and (prev.is_symlink or prev.is_dir):
                prev = None  # a link's text or the empty file: nothing to delta against
            with _pinned(f) as g:
                fid, st = repo.write_file(g.source, layout.regions, layout.format,
                                          repo.read_file(prev.file) if prev else None)
            stats.add(st)
            entries[f.path] = TreeEntry(fid, tree_mode(f.perm))
            if progress:
                progress(f.path, st.logical)
    return entries, stats


_NUM = re.compile(r"\d+")


def _natural(path: str) -> tuple:
    """Sort key: numbers compare as numbers (step-9 before step-10)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path))


def sibling_base(path: str, written: Mapping[str, TreeEntry], parent: Mapping[str, TreeEntry]) -> TreeEntry | None:
    """The base of a file with no same-path parent whose path differs from another only in
    its numbers: ``run/checkpoint-400/optimizer.pt`` takes ``run/checkpoint-300/optimizer.pt``
    (written earlier in this commit, or in the parent), the nearest lower step, else the
    nearest higher. Its tensors then delta by name, as against a parent: a Trainer's
    optimizer state (Adam moments, all positive, so the sign sketch of the similarity index
    cannot tell them apart) against the previous checkpoint's state at the same key."""
    shape = _NUM.sub("#", path)
    if shape == path:
        return None
    mine = [int(n) for n in _NUM.findall(path)]
    best: tuple | None = None
    for table in (written, parent):
        for p, e in table.items():
            if p == path or _NUM.sub("#", p) != shape or e.is_symlink or e.is_dir:
                continue
            nums = [int(n) for n in _NUM.findall(p)]
            # lexicographic distance on the number tuple: lower steps first, nearest first
            lower = nums < mine
            rank = (0 if lower else 1, [abs(a - b) for a, b in zip(mine, nums)])
            if best is None or rank < best[0]:
                best = (rank, e)
    return best[1] if best is not None else None


class _BytesSource(Source):
    """A Source over bytes in memory (a link's target): what Writer.write_file reads."""

    def __init__(self, data: bytes, name: str) -> None:  # no file: nothing to open
        self.path, self.data, self.size, self.fd = name, data, len(data), -1

    def read_at(self, offset: int, n: int) -> bytes:
        return self.data[offset:offset + n]

    def data_spans(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        return [(offset, length, False)]

    def close(self) -> None:
        pass


def check_link_target(where: str, target: bytes) -> bytes:
    """A link target a tree can hold: 1..MAX_LINK_TARGET bytes, no NUL (what a kernel
    stores; fsck checks the same of stored entries)."""
    if not target or b"\0" in target or len(target) > MAX_LINK_TARGET:
        raise CoralError(f"{where}: a symbolic link's target must be 1 to {MAX_LINK_TARGET} bytes without NUL "
                         f"(got {len(target)} bytes); nothing was committed")
    return target


@in_write_session
def special_entries(repo: Repository, links: Mapping[str, bytes], dirs: Iterable[str],
                    stats: IngestStats | None = None) -> dict[str, TreeEntry]:
    """Tree entries of symbolic links (a File of the target text, stored as any small
    file's bytes, so equal targets share one object) and of empty directories (the empty
    File). Nothing is read through a link: only its target text is stored."""
    out: dict[str, TreeEntry] = {}
    for path, target in links.items():
        fid, st = repo.write_file(_BytesSource(check_link_target(path, target), path), [], "bytes")
        if stats is not None:
            stats.add(st)
        out[path] = TreeEntry(fid, MODE_SYMLINK)
    dirs = list(dirs)
    if dirs:
        empty = repo.put(EMPTY_FILE)
        out |= {d: TreeEntry(empty, MODE_DIR) for d in dirs}
    return out


def owner_of(st: os.stat_result) -> list[int]:
    """What --preserve-owner records of one path: [uid, gid, the 12 permission bits]."""
    return [st.st_uid, st.st_gid, _stat.S_IMODE(st.st_mode)]


def scan_sources(sources: list[str], *, follow_top_links: bool = True, owners: bool = False) -> Sources:
    """What ``sources`` hold: a directory contributes its contents at the tree root, a
    file itself by its name.

    A symbolic link inside a source is never followed (it could point anywhere, say
    ``/etc/shadow``, or be a link to a directory): it is recorded as a link, its target
    read with readlink and nothing read through it. A directory holding nothing that is
    committed is an empty directory entry. A source given as a link itself is followed,
    as git and rsync follow the path a user typed, unless ``follow_top_links`` is false
    (watch: the entries were not typed by the user; such an entry is refused).
    ``owners``: also record :func:`owner_of` of every path (``--preserve-owner``).
    """
    out = Sources()
    for src in sources:
        if not follow_top_links and os.path.islink(src):
            raise _link_error(src)
        if not os.path.exists(src):
            raise CoralError(f"{src}: no such file or directory")
        if os.path.isdir(src):
            _scan_dir(src, out, owners)
        elif os.path.isfile(src):
            rel = os.path.basename(src)
            _claim(out, rel, src)
            out.files[rel] = src
            st = os.stat(src)
            out.inodes[rel] = (st.st_dev, st.st_ino, True)  # a typed source: followed
            if owners:
                out.owners[rel] = owner_of(st)
        else:
            raise CoralError(f"{src}: not a regular file or directory")
    _keep_empty_dirs(out)
    if not out:
        raise CoralError("nothing to commit: the sources hold no files")
    return out


def collect_sources(sources: list[str], *, follow_top_links: bool = True) -> dict[str, str]:
    """Map tree path -> file on disk of the regular files of ``sources`` (see
    :func:`scan_sources`, which also gives their links and empty directories)."""
    return scan_sources(sources, follow_top_links=follow_top_links).files


def _scan_dir(src: str, out: Sources, owners: bool) -> None:
    def unreadable(e: OSError) -> None:
        raise CoralError(f"{e.filename}: cannot be read ({e.strerror}); nothing was committed")

    def rel_of(full: str) -> str:
        return os.path.relpath(full, src).replace(os.sep, "/")

    for dirpath, dirnames, files in os.walk(src, onerror=unreadable, followlinks=False):
        names = [d for d in dirnames if d != ".coral"] + files
        dirnames[:] = []
        for name in sorted(names):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = rel_of(full)
            if _stat.S_ISDIR(st.st_mode):
                dirnames.append(name)  # walked next (os.walk never descends into a link)
                _claim(out, rel, full, directory=True)
                out.dirs.add(rel)  # kept only if nothing lands under it (scan_sources)
            elif _stat.S_ISLNK(st.st_mode):
                _claim(out, rel, full)
                out.links[rel] = check_link_target(full, os.readlink(os.fsencode(full)))
            elif _stat.S_ISREG(st.st_mode):
                _claim(out, rel, full)
                out.files[rel] = full
                out.inodes[rel] = (st.st_dev, st.st_ino, False)
            else:
                continue  # sockets, fifos, devices: a checkpoint never holds them
            if owners:
                out.owners[rel] = owner_of(st)


def _keep_empty_dirs(out: Sources) -> None:
    """Of the directories seen, keep those nothing committed lies under (two sources may
    give the same directory, one of them empty)."""
    full: set[str] = set()
    for p in list(out.files) + list(out.links) + list(out.dirs):
        d = p.rpartition("/")[0]
        while d and d not in full:
            full.add(d)
            d = d.rpartition("/")[0]
    out.dirs -= full


def _link_error(link: str) -> CoralError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return CoralError(f"{link}: is a symbolic link (to {target!r}) naming a watched entry; coralfs commits the "
                      f"links inside an entry, not an entry that is a link: move the checkpoint itself into the "
                      f"watched directory; nothing was committed")


def _claim(out: Sources, rel: str, full: str, directory: bool = False) -> None:
    """``rel`` is a valid tree path given by one source only."""
    try:
        validate_path(rel)
    except CoralError as e:
        raise CoralError(f"{full}: {e}") from None
    prev = out.files.get(rel) or ("a link" if rel in out.links else None)
    if prev is None and not directory and rel in out.dirs:
        prev = "a directory"
    if prev is not None:
        raise CoralError(f"two sources give the path {rel!r} ({prev} and {full})")


def with_owners(metadata: dict | None, owners: dict[str, list[int]]) -> dict:
    """``metadata`` with the --preserve-owner record added (refused if the user's
    metadata already uses its key)."""
    metadata = dict(metadata or {})
    if OWNERS_KEY in metadata:
        raise CoralError(f"--preserve-owner records {OWNERS_KEY!r} in the commit's metadata: "
                         f"drop --meta {OWNERS_KEY}=...")
    metadata[OWNERS_KEY] = dict(sorted(owners.items()))
    return metadata


@in_write_session
def commit_paths(repo: Repository, sources: list[str], message: str, *, branch: str | None = None,
                 author: str | None = None, metadata: dict | None = None,
                 progress: Progress | None = None, allow_empty: bool = True,
                 follow_top_links: bool = True, preserve_owner: bool = False,
                 annotate: Callable[[Tree, Tree | None], dict] | None = None) -> CommitResult:
    """Commit checkpoint directories or files as the new snapshot of ``branch``.

    Every file is validated and split by its format first: a malformed file raises
    FormatError before any ref moves, so nothing is committed. Symbolic links inside
    the sources are stored as links and empty directories as directory entries (see
    :func:`scan_sources`). ``preserve_owner``: uid, gid and mode of every path go into
    the commit's metadata (the tree and its ids stay what they are without it).
    ``annotate``: called with the new tree and the parent's (None for a first commit)
    before the commit is made; what it returns is added to the metadata (the relations
    the api infers: ``derived_from``).
    """
    found = scan_sources(sources, follow_top_links=follow_top_links, owners=preserve_owner)
    if preserve_owner:
        metadata = with_owners(metadata, found.owners)
    files = [DiskFile(rel, path, os.stat(path).st_mode, inode=found.inodes[rel]) for rel, path in found.files.items()]
    with repo.write_batch():   # the files, tree and commit flushed together before the ref moves
        return _commit_found(repo, found, files, message, branch=branch, author=author, metadata=metadata,
                             progress=progress, allow_empty=allow_empty, annotate=annotate)


def _commit_found(repo: Repository, found: Sources, files: list[DiskFile], message: str, *,
                  branch: str | None, author: str | None, metadata: dict | None, progress: Progress | None,
                  allow_empty: bool, annotate: Callable[[Tree, Tree | None], dict] | None) -> CommitResult:
    target = branch or repo.head_branch()
    head = repo.refs.read(f"refs/heads/{target}") if target else repo.head()
    parent_tree = repo.tree_of(head) if head else Tree({})
    entries, stats = ingest_files(repo, files, parent_tree.entries, progress)
    ids = {k: e.file for k, e in entries.items()}
    entries |= special_entries(repo, found.links, found.dirs, stats)
    tree = Tree(entries)
    unchanged = head is not None and repo.put(tree) == parent_tree.id
    res = CommitResult(head, stats, ids, unchanged, len(found.links), len(found.dirs))
    if unchanged and not allow_empty:
        return res
    if annotate is not None and not unchanged:
        extra = annotate(tree, parent_tree if head else None)
        if extra:
            given = dict(metadata or {})
            both = list(extra.get("derived_from", [])) + list(given.get("derived_from", []))
            metadata = {**extra, **given}
            if both:
                metadata["derived_from"] = both
    with landing():  # from here a signal no longer stops the commit (coralfs/interrupts.py)
        res.commit = repo.commit(tree, message, branch=branch, author=author, metadata=metadata,
                                 expected_head=head)
    return res


__all__ = ["MAX_LINK_TARGET", "OWNERS_KEY", "CommitResult", "DiskFile", "Sources", "check_link_target",
           "collect_sources", "commit_paths", "ingest_files", "owner_of", "read_link", "scan_sources", "sibling_base", "special_entries",
           "tree_mode", "with_owners"]
