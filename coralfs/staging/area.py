"""The staging area of one branch: its manifest (``stage.db``), spool, disk reserve
and lock, the namespace changes a writable mount makes, and recovery when it is opened
(:meth:`StagingArea.open`). Committing is in commit.py, stashes in stash.py."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import posixpath
import secrets
import sqlite3
import stat
import time

from ..ingest import tree_mode
from ..objects.durable import fsync_dir, make_dirs
from ..objects.ids import ObjectId, from_hex, to_hex
from ..objects.kinds import MODE_DIR, MODE_SYMLINK, Tree, TreeEntry
from ..objects.refs import HEADS, check_ref_name
from ..objects.writer import IngestStats
from . import commit as committing
from . import stash as stashing
from .entries import (
    PATH_MAX,
    RESERVE,
    Change,
    Entry,
    StagingError,
    check_path,
    entry_of_tree,
)
from .layout import base_pin, pin_legacy_roots, stage_dir
from .manifest import open_manifest, read_rows, root_entry, root_meta, write_rows
from .overlay import MAP_SUFFIX, Overlay, committed_under
from .xattrs import XattrRows


class StagingArea(XattrRows):
    """The manifest and spool of one branch's staging area. Methods that change it are
    called one at a time (the mount serialises them); reads may run alongside.

    Get one with :meth:`open` (to change it: locks, recovers, follows the branch) or
    :meth:`look` (to read it while a daemon may hold it); the constructor only takes
    what those opened and touches nothing."""

    def __init__(self, repo, branch: str, db: sqlite3.Connection, *, lock_fd: int | None = None,
                 readonly: bool = False) -> None:
        self.repo = repo
        self.branch = branch
        self.dir = stage_dir(repo, branch)
        self.spool_dir = os.path.join(self.dir, "spool")
        self.db = db
        self.readonly = readonly
        self._lock_fd = lock_fd
        self.entries: dict[str, Entry] = {}
        self.dirs: dict[str, set[str]] = {}
        self.subdirs: dict[str, int] = {}          # directory -> how many directories it holds
        self.links: dict[str, set[str]] = {}       # hard-link group -> its names
        # The root directory's owner, mode and times (meta "root": no row, no path).
        self.root = Entry("d", 0o755, time.time_ns())
        self.base: ObjectId | None = None
        self._base_tree: tuple[ObjectId | None, dict] = (None, {})
        self._sizes: dict[ObjectId, int] = {}
        self._base_dirs: set[str] | None = None
        self.overlays: dict[str, Overlay | None] = {}  # spool name -> its overlay (None: none)

    @classmethod
    def open(cls, repo, branch: str) -> StagingArea:
        """Open the staging area of ``branch`` to change it, creating it if it is new.

        Opening takes the area's lock (one daemon per area), turns ``*.roots`` files of
        older versions into pins, then recovers: a commit recorded as pending is finished (or forgotten if the
        branch never moved), an area with nothing staged follows the branch head, one with
        changes is rebased onto it (a conflict is left for commit to report), spool files
        no row names are removed and the disk reserve is set aside."""
        check_ref_name(branch)
        pin_legacy_roots(repo)
        area = cls._connect(repo, branch, readonly=False)
        try:
            area._recover()
        except BaseException:
            area.close()
            raise
        return area

    @classmethod
    def look(cls, repo, branch: str) -> StagingArea:
        """The staging area of ``branch`` as it is on disk, to read: no lock (a daemon may
        hold it), no recovery, nothing changed."""
        check_ref_name(branch)
        area = cls._connect(repo, branch, readonly=True)
        base = area._meta("base")
        area.base = from_hex(base) if base else None
        area._load()
        return area

    @classmethod
    def _connect(cls, repo, branch: str, *, readonly: bool) -> StagingArea:
        """The area's directory, manifest (created with its tables if absent) and, to
        change it, its lock."""
        d = stage_dir(repo, branch)
        fresh = not os.path.exists(os.path.join(d, "stage.db"))
        make_dirs(os.path.join(d, "spool"))
        lock_fd = None
        if not readonly:
            lock_fd = os.open(os.path.join(d, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise StagingError(f"the staging area of branch {branch!r} is in use by a writable mount; "
                                   "use `--mount MNT`, or `coralfs umount` it first") from None
        try:
            db = open_manifest(os.path.join(d, "stage.db"))
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if fresh:
            fsync_dir(d)
        return cls(repo, branch, db, lock_fd=lock_fd, readonly=readonly)

    def _recover(self) -> None:
        """Bring a just-opened area to a state its methods can rely on (see :meth:`open`)."""
        base = self._meta("base")
        if base is None and self._meta("branch") is None:
            self._reset(self.repo.refs.read(HEADS + self.branch))
        else:
            self.base = from_hex(base) if base else None
            self._load()
            self._finish_pending()
            if self.base != self.head():
                if not self.changes():
                    self._reset(self.head())  # nothing staged: follow the branch
                else:
                    with contextlib.suppress(StagingError):  # a conflict is reported by commit
                        self.rebase()
        self._drop_orphan_spools()
        self._ensure_reserve()

    # -- persistence ---------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _make_room(self) -> None:
        v = os.statvfs(self.dir)
        if v.f_bavail * v.f_frsize < 2 * RESERVE:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.dir, "reserve"))

    def _ensure_reserve(self) -> None:
        path = os.path.join(self.dir, "reserve")
        if os.path.exists(path):
            return
        v = os.statvfs(self.dir)
        if v.f_bavail * v.f_frsize < 8 * RESERVE:
            return
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE)
        except OSError:
            os.unlink(path)
        finally:
            os.close(fd)

    def _row(self, path: str, e: Entry) -> None:
        """Write the row of ``path`` (and of every other name of its hard-link group)."""
        self._make_room()
        if path == "":
            self._set_meta("root", root_meta(e))
            return
        write_rows(self.db, {path} | self.links.get(e.link, set()) if e.link else (path,), e)

    def _load(self) -> None:
        root = self._meta("root")
        if root:
            self.root = root_entry(root)
        self.entries, self.links = read_rows(self.db)
        self.dirs, self.subdirs = {"": set()}, {}
        for path, e in self.entries.items():
            if e.kind == "d":
                self.dirs.setdefault(path, set())
        for path, e in self.entries.items():
            parent, name = posixpath.split(path)
            self.dirs.setdefault(parent, set()).add(name)
            if e.kind == "d":
                self.subdirs[parent] = self.subdirs.get(parent, 0) + 1

    def _write_roots(self) -> None:
        """What gc must keep: the base commit, a commit being recorded, and committed files
        the working tree holds that the base does not (brought back by `stash pop`)."""
        pending = self._meta("pending")
        ids = [x for x in (self.base, from_hex(pending) if pending else None) if x]
        in_base = {e.file for e in self.base_entries().values()}
        ids += sorted({e.fid for e in self.entries.values() if e.fid and e.fid not in in_base}
                      | (committed_under(self, {e.spool for e in self.entries.values() if e.spool}) - in_base))
        self.repo.pins.set(base_pin(self.branch), ids)

    def head(self) -> ObjectId | None:
        return self.repo.refs.read(HEADS + self.branch)

    def base_entries(self) -> dict:
        """The tree of the base commit (path -> TreeEntry), read once per base."""
        if self._base_tree[0] != self.base:
            self._base_tree = (self.base, self.repo.tree_of(self.base).entries if self.base else {})
            self._base_dirs = None
        return self._base_tree[1]

    def _base_dir_set(self) -> set[str]:
        """Every directory of the base tree: implied by a path, or an empty-directory entry."""
        entries = self.base_entries()
        if self._base_dirs is None:
            dirs = {p for p, te in entries.items() if te.mode == MODE_DIR}
            for p in entries:
                d = posixpath.dirname(p)
                while d and d not in dirs:
                    dirs.add(d)
                    d = posixpath.dirname(d)
            self._base_dirs = dirs
        return self._base_dirs

    def read_target(self, fid: ObjectId) -> str:
        """The target text of a committed symbolic link (its File holds the bytes)."""
        view = self.repo.open_file(fid)
        return os.fsdecode(view.read(0, view.size))

    def _same_target(self, e: Entry, fid: ObjectId) -> bool:
        """Link ``e`` holds the target the committed File ``fid`` holds. Once seen equal,
        ``e`` remembers ``fid`` (in memory), so status polls read each link once."""
        if self.read_target(fid) != e.target:
            return False
        e.fid = fid
        return True

    def entry_of(self, te: TreeEntry, mtime_ns: int) -> Entry:
        """The row of a committed tree entry (file, empty directory or symbolic link)."""
        return entry_of_tree(te, mtime_ns, lambda: self.read_target(te.file))

    def _reset(self, base: ObjectId | None) -> None:
        """Make the working tree the tree of ``base`` (dropping every row and spool)."""
        tree = self.repo.tree_of(base) if base else Tree({})
        mtime = self.repo.read_commit(base).time * 1_000_000_000 if base else time.time_ns()
        old_spools = [e.spool for e in self.entries.values() if e.spool]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM entries")
            self.db.execute("DELETE FROM xattrs")
            self.entries, self.dirs, self.subdirs, self.links = {}, {"": set()}, {}, {}
            if self._meta("root") is None:
                self._row("", self.root)
            for path, te in tree.entries.items():
                self._add_parents(path, mtime)
                self._put(path, self.entry_of(te, mtime))
            self._set_meta("base", to_hex(base) if base else "")
            self._set_meta("branch", self.branch)
            self._set_meta("pending", None)
        self.base = base
        self._write_roots()
        for s in old_spools:
            self.discard_spool(s)

    def _finish_pending(self) -> None:
        """Finish a commit the previous daemon recorded but did not see through."""
        pending = self._meta("pending")
        if not pending:
            return
        cid = from_hex(pending)
        if self.head() == cid:
            committing.finalize(self, cid, set())
        else:  # the branch never moved: the staged changes are still to commit
            with self.db:
                self._set_meta("pending", None)
            self._write_roots()

    def _drop_orphan_spools(self) -> None:
        """Spool files (and overlay maps, and what a commit or a crash left) no row names."""
        spools = {e.spool for e in self.entries.values() if e.spool}
        used = spools | {s + MAP_SUFFIX for s in spools}
        for name in os.listdir(self.spool_dir):
            if name not in used:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.spool_path(name))
        committed_under(self, spools)  # loads every overlay now

    def overlay(self, name: str) -> Overlay | None:
        """The overlay of spool file ``name`` (None: every byte of it is the file's)."""
        if name not in self.overlays:
            self.overlays[name] = Overlay.load(self.spool_path(name), writable=not self.readonly)
        return self.overlays[name]

    def discard_spool(self, name: str) -> None:
        """Remove spool file ``name`` and its overlay map (no row names it any more and no
        handle has it open)."""
        ov = self.overlays.pop(name, None)
        if ov is not None:
            ov.close()
        for n in (name, name + MAP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.spool_dir, n))
        if not self.readonly:
            self._ensure_reserve()

    def close(self) -> None:
        for ov in self.overlays.values():
            if ov is not None:
                ov.close()
        self.overlays.clear()
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading -------------------------------------------------------------------------
    def spool_path(self, name: str) -> str:
        return os.path.join(self.spool_dir, name)

    def get(self, path: str) -> Entry | None:
        if path == "":
            return self.root
        return self.entries.get(path)

    def nlink(self, path: str, e: Entry) -> int:
        """st_nlink: a directory's 2 plus its subdirectories, a file's number of names."""
        if e.kind == "d":
            return 2 + self.subdirs.get(path, 0)
        return len(self.links.get(e.link, ())) or 1 if e.link else 1

    def has_names(self, e: Entry) -> bool:
        """Another name still holds ``e`` (a hard link): its spool must stay."""
        return bool(e.link and self.links.get(e.link))

    def children(self, path: str) -> list[str]:
        return sorted(self.dirs.get(path, ()))

    def size_of(self, e: Entry) -> int:
        if e.kind != "f":
            return len(os.fsencode(e.target)) if e.kind == "l" and e.target else 0
        if e.spool:
            return os.stat(self.spool_path(e.spool)).st_size
        size = self._sizes.get(e.fid)
        if size is None:
            size = self._sizes[e.fid] = self.repo.read_file(e.fid).size
        return size

    def changes(self, sizes: bool = False) -> list[Change]:
        """Files, symbolic links and empty directories added, modified and deleted since
        the base commit, by path (with their sizes when asked: a stat or an object read per
        change). A file is modified when its bytes or its executable bit changed; a link
        when its target did."""
        base = self.base_entries()
        base_dirs = self._base_dir_set()
        out = []
        for path, e in self.entries.items():
            was = base.get(path)
            if e.kind == "f":
                if was is None:
                    out.append(Change("added", path, self.size_of(e) if sizes else 0))
                elif was.mode in (MODE_DIR, MODE_SYMLINK) or e.spool or was.file != e.fid \
                        or was.mode != tree_mode(e.mode):
                    out.append(Change("modified", path, self.size_of(e) if sizes else 0))
            elif e.kind == "l":
                size = len(os.fsencode(e.target or ""))
                if was is None:
                    out.append(Change("added", path, size, "l", e.target))
                elif was.mode != MODE_SYMLINK or (was.file != e.fid and not self._same_target(e, was.file)):
                    out.append(Change("modified", path, size, "l", e.target))
            elif not self.dirs.get(path) and path not in base_dirs:
                out.append(Change("added", path, 0, "d"))
        for path, was in base.items():
            e = self.entries.get(path)
            kind = "d" if was.mode == MODE_DIR else "l" if was.mode == MODE_SYMLINK else "f"
            if e is None or e.kind != kind:
                out.append(Change("deleted", path, 0, kind))
        return sorted(out, key=lambda c: c.path)

    # -- changing the namespace ----------------------------------------------------------
    def _new_spool(self) -> str:
        name = secrets.token_hex(8)
        fd = os.open(self.spool_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.close(fd)
        fsync_dir(self.spool_dir)
        return name

    def _need_dir(self, path: str) -> Entry:
        parent = posixpath.dirname(path)
        e = self.get(parent)
        if e is None:
            raise OSError(errno.ENOENT, parent)
        if e.kind != "d":
            raise OSError(errno.ENOTDIR, parent)
        return e

    def _put(self, path: str, e: Entry) -> None:
        old = self.entries.get(path)
        if e.link:
            self.links.setdefault(e.link, set()).add(path)
        try:
            self._row(path, e)
        except BaseException:
            if e.link and old is not e:
                self.links[e.link].discard(path)
            raise
        if old is not None and old is not e:
            self._forget_name(path, old)
        self.entries[path] = e
        parent, name = posixpath.split(path)
        self.dirs.setdefault(parent, set()).add(name)
        if e.kind == "d":
            self.dirs.setdefault(path, set())
            if old is None or old.kind != "d":
                self.subdirs[parent] = self.subdirs.get(parent, 0) + 1

    def _forget_name(self, path: str, e: Entry) -> None:
        """``path`` no longer names ``e``: its hard-link group and directory counts."""
        if e.link:
            names = self.links.get(e.link)
            if names is not None:
                names.discard(path)
                if not names:
                    del self.links[e.link]
        if e.kind == "d":
            parent = posixpath.dirname(path)
            left = self.subdirs.get(parent, 0) - 1
            if left > 0:
                self.subdirs[parent] = left
            else:
                self.subdirs.pop(parent, None)

    def _drop(self, path: str) -> Entry:
        self._make_room()
        e = self.entries.pop(path)
        self.db.execute("DELETE FROM entries WHERE path=?", (path,))
        self.db.execute("DELETE FROM xattrs WHERE path=?", (path,))
        self._forget_name(path, e)
        parent, name = posixpath.split(path)
        self.dirs.get(parent, set()).discard(name)
        if e.kind == "d":
            self.dirs.pop(path, None)
        return e

    def _dir_changed(self, path: str, now: int) -> None:
        """An entry was added to, removed from or renamed in directory ``path``."""
        d = self.get(path)
        if d is not None and d.kind == "d":
            d.mtime_ns = d.ctime_ns = now
            self._row(path, d)

    def _changed(self, path: str, e: Entry, now: int) -> None:
        """``e``'s inode changed (ctime), seen through ``path`` or another of its names."""
        e.ctime_ns = now
        if path in self.entries or path == "":
            self._row(path, e)
        elif self.has_names(e):
            self._row(next(iter(self.links[e.link])), e)

    def _add_parents(self, path: str, mtime: int) -> None:
        """Directory rows for every parent of ``path`` that has none."""
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            e = self.entries.get(d)
            if e is None:
                self._put(d, Entry("d", 0o755, mtime))
            elif e.kind != "d":
                raise StagingError(f"{path} cannot be placed: {d} is a file in the staging area")

    @staticmethod
    def _owner(parent: Entry, uid: int | None, gid: int | None) -> tuple[int | None, int | None]:
        """Who owns a new entry: the creator, in the group of a set-group-ID directory."""
        return uid, parent.gid if parent.mode & stat.S_ISGID else gid

    def create(self, path: str, mode: int, uid: int | None = None, gid: int | None = None) -> Entry:
        """A new empty file at ``path`` (replacing a file there: O_CREAT|O_TRUNC), with the
        permission bits ``mode`` as given (the caller applied the umask; 0 stays 0) and
        owned by ``uid``/``gid`` (None: the mount owner)."""
        check_path(path)
        parent = self._need_dir(path)
        old = self.get(path)
        if old is not None and old.kind == "d":
            raise OSError(errno.EISDIR, path)
        spool = self._new_spool()
        now = time.time_ns()
        uid, gid = self._owner(parent, uid, gid)
        e = Entry("f", mode & 0o7777, now, None, spool, uid, gid)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put(path, e)
            self._dir_changed(posixpath.dirname(path), now)
        return e

    def write_into_spool(self, path: str, truncate: bool) -> Entry:
        """Give a committed file a spool before its first write: with ``truncate`` an
        empty one, otherwise a sparse one of the committed size under an overlay map
        (range copy-on-write, overlay.py: only the ranges written are ever copied).
        Every name of the file (hard links) moves to it."""
        e = self.entries[path]
        if e.spool:
            return e
        size = 0 if truncate else self.size_of(e)
        name = secrets.token_hex(8)
        spool = self.spool_path(name)
        fd = os.open(spool, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            try:
                os.ftruncate(fd, size)  # a hole: the committed bytes stay in the repository
                os.fsync(fd)
            finally:
                os.close(fd)
            if truncate:
                fsync_dir(self.spool_dir)
            else:  # the map names the committed File; durable (with the spool's name) first
                self.overlays[name] = Overlay.create(spool, e.fid, size)
        except BaseException:
            self.discard_spool(name)
            raise
        was = (e.fid, e.spool, e.mtime_ns)
        e.fid, e.spool, e.mtime_ns = None, name, time.time_ns()
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self._row(path, e)
        except BaseException:
            e.fid, e.spool, e.mtime_ns = was
            self.discard_spool(name)
            raise
        return e  # its committed File is pinned already (by the base, or as a staged fid)

    def mkdir(self, path: str, mode: int, uid: int | None = None, gid: int | None = None) -> Entry:
        check_path(path)
        parent = self._need_dir(path)
        if self.get(path) is not None:
            raise OSError(errno.EEXIST, path)
        now = time.time_ns()
        uid, gid = self._owner(parent, uid, gid)
        mode &= 0o7777
        if parent.mode & stat.S_ISGID:  # subdirectories of a set-group-ID directory inherit it
            mode |= stat.S_ISGID
        e = Entry("d", mode, now, uid=uid, gid=gid)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put(path, e)
            self._dir_changed(posixpath.dirname(path), now)
        return e

    def symlink(self, path: str, target: str, uid: int | None = None, gid: int | None = None) -> Entry:
        """A symbolic link at ``path`` holding ``target`` (text, never followed here)."""
        check_path(path)
        if not target:
            raise OSError(errno.ENOENT, "an empty symbolic link target")
        if len(os.fsencode(target)) > PATH_MAX:
            raise OSError(errno.ENAMETOOLONG, f"a link target is at most {PATH_MAX} bytes")
        parent = self._need_dir(path)
        if self.get(path) is not None:
            raise OSError(errno.EEXIST, path)
        now = time.time_ns()
        uid, gid = self._owner(parent, uid, gid)
        e = Entry("l", 0o777, now, uid=uid, gid=gid, target=target)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put(path, e)
            self._dir_changed(posixpath.dirname(path), now)
        return e

    def link(self, old: str, new: str) -> Entry:
        """A second name ``new`` for the file (or link) ``old``: one inode, one content."""
        src = self.get(old)
        if src is None:
            raise OSError(errno.ENOENT, old)
        if src.kind == "d":
            raise OSError(errno.EPERM, f"{old or '/'} is a directory: no hard links to directories")
        check_path(new)
        self._need_dir(new)
        if self.get(new) is not None:
            raise OSError(errno.EEXIST, new)
        now = time.time_ns()
        fresh = src.link is None
        if fresh:
            src.link = secrets.token_hex(8)
            self.links[src.link] = {old}
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                src.ctime_ns = now
                self._put(new, src)
                self._dir_changed(posixpath.dirname(new), now)
        except BaseException:
            if fresh:
                self.links.pop(src.link, None)
                src.link = None
            raise
        return src

    def unlink(self, path: str) -> Entry:
        e = self.get(path)
        if e is None or path == "":
            raise OSError(errno.ENOENT, path)
        if e.kind == "d":
            raise OSError(errno.EISDIR, path)
        now = time.time_ns()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._drop(path)
            if self.has_names(e):  # still linked: one name less is a change of the inode
                self._changed(path, e, now)
            self._dir_changed(posixpath.dirname(path), now)
        return e  # the caller removes e.spool once no handle (and no name: has_names) uses it

    def rmdir(self, path: str) -> None:
        e = self.get(path)
        if e is None or path == "":
            raise OSError(errno.ENOENT if e is None else errno.EBUSY, path)
        if e.kind != "d":
            raise OSError(errno.ENOTDIR, path)
        if self.dirs.get(path):
            raise OSError(errno.ENOTEMPTY, path)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._drop(path)
            self._dir_changed(posixpath.dirname(path), time.time_ns())

    def rename(self, old: str, new: str, noreplace: bool = False, exchange: bool = False) -> list[Entry]:
        """Move ``old`` (a file or a whole directory) to ``new``; returns what the move
        replaced (the caller removes their spools once no handle or name uses them)."""
        check_path(new)
        src = self.get(old)
        if src is None or old == "":
            raise OSError(errno.ENOENT, old)
        self._need_dir(new)
        dst = self.get(new)
        if old == new:
            return []
        if src.kind == "d" and (new + "/").startswith(old + "/"):
            raise OSError(errno.EINVAL, f"cannot move {old} into itself")
        now = time.time_ns()
        parents = {posixpath.dirname(old), posixpath.dirname(new)}
        if exchange:
            if dst is None:
                raise OSError(errno.ENOENT, new)
            if dst.kind == "d" and (old + "/").startswith(new + "/"):
                raise OSError(errno.EINVAL, f"cannot move {new} into itself")
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                a, b = self._take(old), self._take(new)
                self._place(new, a)
                self._place(old, b)
                self._changed(new, src, now)
                self._changed(old, dst, now)
                for p in parents:
                    self._dir_changed(p, now)
            return []
        if dst is src:  # two names of one inode: POSIX says nothing happens
            return []
        replaced: list[Entry] = []
        if dst is not None:
            if noreplace:
                raise OSError(errno.EEXIST, new)
            if dst.kind == "d" and src.kind != "d":
                raise OSError(errno.EISDIR, new)
            if dst.kind != "d" and src.kind == "d":
                raise OSError(errno.ENOTDIR, new)
            if dst.kind == "d" and self.dirs.get(new):
                raise OSError(errno.ENOTEMPTY, new)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if dst is not None:
                replaced.append(self._drop(new))
                if self.has_names(dst):
                    self._changed(new, dst, now)
            self._place(new, self._take(old))
            self._changed(new, src, now)
            for p in parents:
                self._dir_changed(p, now)
        return replaced

    def _take(self, path: str) -> tuple[list[tuple[str, Entry]], list]:
        """Remove ``path`` and everything under it; returns its rows (by path relative to
        ``path``) and xattrs, for :meth:`_place`."""
        out = [("", self.entries[path])]
        if self.entries[path].kind == "d":
            prefix = path + "/"
            out += [(p[len(path):], e) for p, e in self.entries.items() if p.startswith(prefix)]
        xa = [(p[len(path):], n, v) for p, n, v in self.db.execute(
            "SELECT path, name, value FROM xattrs WHERE path=? OR substr(path, 1, ?)=?",
            (path, len(path) + 1, path + "/"))]
        for rel, _e in sorted(out, key=lambda x: -len(x[0])):
            self._drop(path + rel)
        return out, xa

    def _place(self, path: str, taken: tuple[list[tuple[str, Entry]], list]) -> None:
        items, xa = taken
        for rel, e in sorted(items, key=lambda x: len(x[0])):
            self._put(path + rel, e)
        for rel, n, v in xa:
            self.db.execute("INSERT OR REPLACE INTO xattrs VALUES (?, ?, ?)", (path + rel, n, v))

    def _existing(self, path: str) -> Entry:
        e = self.get(path)
        if e is None:
            raise OSError(errno.ENOENT, path)
        return e

    def chmod(self, path: str, mode: int) -> None:
        e = self._existing(path)
        e.mode = mode & 0o7777
        with self.db:
            self._changed(path, e, time.time_ns())

    def chown(self, path: str, uid: int | None, gid: int | None, mode: int | None = None) -> None:
        """Set the owner and/or group (None: unchanged) and, with ``mode``, the permission
        bits in the same transaction (chown clears set-ID bits)."""
        e = self._existing(path)
        if uid is not None:
            e.uid = uid
        if gid is not None:
            e.gid = gid
        if mode is not None:
            e.mode = mode & 0o7777
        with self.db:
            self._changed(path, e, time.time_ns())

    def set_times(self, path: str, atime_ns: int | None, mtime_ns: int | None) -> None:
        """utimensat: atime and/or mtime (None: left as it is); ctime becomes now."""
        e = self._existing(path)
        if atime_ns is not None:
            e.atime_ns = atime_ns
        if mtime_ns is not None:
            e.mtime_ns = mtime_ns
            if e.spool:  # a spool file's mtime is what stat shows for it
                st = os.stat(self.spool_path(e.spool))
                os.utime(self.spool_path(e.spool), ns=(st.st_atime_ns, mtime_ns))
        with self.db:
            self._changed(path, e, time.time_ns())

    def set_mtime(self, path: str, mtime_ns: int) -> None:
        self.set_times(path, None, mtime_ns)

    def touch(self, path: str) -> None:
        """``path``'s inode changed in a way its row does not hold (an xattr): ctime now."""
        e = self.get(path)
        if e is not None:
            with self.db:
                self._changed(path, e, time.time_ns())

    # -- committing and stashes (commit.py, stash.py) ------------------------------------
    def commit(self, message: str, *, author: str | None = None, metadata: dict | None = None, busy: set[str] = frozenset(),
               progress=None, preserve_owner: bool = False) -> tuple[ObjectId | None, IngestStats]:
        """Record the working tree as a commit on the branch (:func:`.commit.commit`)."""
        self.rebase()  # here, so that directories the branch emptied go first
        return committing.commit(self, message, author=author, metadata=metadata, busy=busy, progress=progress,
                                 preserve_owner=preserve_owner)

    def rebase(self) -> None:
        """Put the staged changes on the branch's new head (:func:`.commit.rebase`); directories
        left empty by files the branch removed go too (an empty directory made here stays)."""
        if self.head() == self.base:
            return
        ours = {c.path for c in self.changes()}
        committing.rebase(self)
        self._prune_emptied(ours)

    def _prune_emptied(self, keep: set[str]) -> None:
        base_dirs = self._base_dir_set()
        gone = [p for p, e in self.entries.items()
                if e.kind == "d" and not self.dirs.get(p) and p not in keep and p not in base_dirs]
        if not gone:
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for p in sorted(gone, key=lambda p: -p.count("/")):
                while p and p not in keep and p not in base_dirs and p in self.entries and not self.dirs.get(p):
                    self._drop(p)
                    p = posixpath.dirname(p)

    def stash(self, message: str = "") -> int:
        """Move the changes into a new stash and reset to the branch head (:func:`.stash.stash`)."""
        return stashing.stash(self, message)

    def stash_pop(self, index: int | None = None) -> dict:
        """Apply a stash (the newest by default), then drop it (:func:`.stash.stash_pop`)."""
        return stashing.stash_pop(self, index)


def staged_changes(repo, branch: str) -> list[Change]:
    """The staged changes of a branch, read without disturbing a daemon that serves them."""
    st = StagingArea.look(repo, branch)
    try:
        return st.changes(sizes=True)
    finally:
        st.close()
