"""The staging area of a writable mount: what a branch will hold at its next commit.

``REPO/staging/branches/<branch>/`` holds

- ``stage.db``: the manifest, one row per file and directory of the working tree. A file
  row names either a committed File object (``fid``: unchanged, or renamed, and served
  lazily from the repository) or a spool file (``spool``: written since the base commit).
  SQLite in WAL mode with ``synchronous=FULL``: each namespace change (create, rename,
  unlink, mkdir, chmod) is one durable transaction.
- ``spool/NAME``: the bytes written into files, durable once fsync or close returns.
- ``base.roots``: ids gc must keep (the base commit, a commit being recorded).
- ``lock``: held (flock) by the daemon that serves the area, so only one does.
- ``reserve``: 1 MiB set aside; released when the disk is nearly full so that deleting
  files (and recording it) still works after a writer got ENOSPC.

A file is copied into the spool only when it is written (copy-on-write). Committing
ingests the spool files (deltas against the same path in the base commit), moves the
branch by compare-and-swap, then turns the committed rows into ``fid`` rows. The commit id
is recorded as ``pending`` before the branch moves, so a daemon killed in between is
finished on the next open: the branch always points at a complete commit and no write is
ingested twice or lost.

Stashes live under ``staging/stash/<branch>/<n>/`` (their changed rows, spool files and
roots). Nothing here imports pyfuse3; errors are OSError with an errno, or StagingError.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import posixpath
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

from ..ingest import DiskFile, ingest_files, tree_mode
from ..objects.durable import create_file, fsync_dir, make_dirs, write_durable
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, from_hex, to_hex
from ..objects.objects import MODE_EXEC, Tree, TreeEntry, validate_path
from ..objects.refs import HEADS, check_ref_name
from ..objects.repository import in_write_session
from ..objects.writer import IngestStats

RESERVED = ".coral"
COPY_BLOCK = 4 << 20
# Space held back on the spool's file system so the manifest can still record an unlink
# (which frees space) when writers have filled the disk.
RESERVE = 1 << 20


class StagingError(CoralError):
    exit_code = 7


@dataclass
class Entry:
    kind: str                 # "f" or "d"
    mode: int                 # permission bits
    mtime_ns: int
    fid: ObjectId | None = None   # committed content
    spool: str | None = None      # written content (spool/NAME)


@dataclass
class Change:
    status: str   # added, modified, deleted
    path: str
    size: int = 0


def _q(branch: str) -> str:
    return quote(branch, safe="")


def staging_root(repo) -> str:
    return os.path.join(repo.path, "staging")


def stage_dir(repo, branch: str) -> str:
    return os.path.join(staging_root(repo), "branches", _q(branch))


def staged_branches(repo) -> list[str]:
    d = os.path.join(staging_root(repo), "branches")
    if not os.path.isdir(d):
        return []
    return sorted(unquote(n) for n in os.listdir(d) if os.path.exists(os.path.join(d, n, "stage.db")))


def _perm(mode: int) -> int:
    """Permission bits of a file from its tree mode (and back: ingest.tree_mode)."""
    return 0o755 if mode == MODE_EXEC else 0o644


def _check_path(path: str) -> None:
    if path.split("/", 1)[0] == RESERVED:
        raise OSError(errno.EPERM, f"{RESERVED} is reserved for coralfs")
    try:
        validate_path(path)
    except CoralError:
        raise OSError(errno.EINVAL, f"invalid path {path!r}") from None


class Stage:
    """The manifest and spool of one branch's staging area. Methods that change it are
    called one at a time (the mount serialises them); reads may run alongside."""

    def __init__(self, repo, branch: str, *, lock: bool = True, readonly: bool = False) -> None:
        check_ref_name(branch)
        self.repo = repo
        self.branch = branch
        self.dir = stage_dir(repo, branch)
        self.spool_dir = os.path.join(self.dir, "spool")
        fresh = not os.path.exists(os.path.join(self.dir, "stage.db"))
        make_dirs(self.spool_dir)
        self._lock_fd = None
        if lock and not readonly:
            self._lock_fd = os.open(os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                raise StagingError(f"the staging area of branch {branch!r} is in use by a writable mount; "
                                   "use `--mount MNT`, or `coralfs umount` it first") from None
        create_file(os.path.join(self.dir, "stage.db"))  # sqlite would make it 0644
        self.db = sqlite3.connect(os.path.join(self.dir, "stage.db"), check_same_thread=False,
                                  isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, kind TEXT, mode INT, mtime INT,"
            " fid BLOB, spool TEXT);"
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
            "CREATE TABLE IF NOT EXISTS xattrs (path TEXT, name BLOB, value BLOB, PRIMARY KEY (path, name));")
        if fresh:
            fsync_dir(self.dir)
        self.entries: dict[str, Entry] = {}
        self.dirs: dict[str, set[str]] = {}
        self.readonly = readonly
        self._base_tree: tuple[ObjectId | None, dict] = (None, {})
        self._sizes: dict[ObjectId, int] = {}
        base = self._meta("base")
        if readonly:  # a look at the staged changes (a daemon may own the area)
            self.base = from_hex(base) if base else None
            self._load()
            return
        if base is None and self._meta("branch") is None:
            self._reset(self.repo.refs.read(HEADS + branch))
        else:
            self.base = from_hex(base) if base else None
            self._load()
            self._recover()
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
        self._make_room()
        self.db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                        (path, e.kind, e.mode, e.mtime_ns, e.fid, e.spool))

    def _load(self) -> None:
        self.entries.clear()
        self.dirs = {"": set()}
        for path, kind, mode, mtime, fid, spool in self.db.execute("SELECT * FROM entries"):
            self.entries[path] = Entry(kind, mode, mtime, fid, spool)
        for path, e in self.entries.items():
            if e.kind == "d":
                self.dirs.setdefault(path, set())
        for path in self.entries:
            parent, name = posixpath.split(path)
            self.dirs.setdefault(parent, set()).add(name)

    def _write_roots(self) -> None:
        """What gc must keep: the base commit, a commit being recorded, and committed files
        the working tree holds that the base does not (brought back by `stash pop`)."""
        pending = self._meta("pending")
        ids = [x for x in (self.base, from_hex(pending) if pending else None) if x]
        in_base = {e.file for e in self.base_entries().values()}
        ids += sorted({e.fid for e in self.entries.values() if e.fid and e.fid not in in_base})
        write_durable(os.path.join(self.dir, "base.roots"), "".join(to_hex(i) + "\n" for i in ids).encode())

    def head(self) -> ObjectId | None:
        return self.repo.refs.read(HEADS + self.branch)

    def base_entries(self) -> dict:
        """The tree of the base commit (path -> TreeEntry), read once per base."""
        if self._base_tree[0] != self.base:
            self._base_tree = (self.base, self.repo.tree_of(self.base).entries if self.base else {})
        return self._base_tree[1]

    def _reset(self, base: ObjectId | None) -> None:
        """Make the working tree the tree of ``base`` (dropping every row and spool)."""
        tree = self.repo.tree_of(base) if base else Tree({})
        mtime = self.repo.read_commit(base).time * 1_000_000_000 if base else time.time_ns()
        old_spools = [e.spool for e in self.entries.values() if e.spool]
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM entries")
            self.db.execute("DELETE FROM xattrs")
            self.entries, self.dirs = {}, {"": set()}
            for path, te in tree.entries.items():
                self._add_parents(path, mtime)
                self._put(path, Entry("f", _perm(te.mode), mtime, te.file))
            self._set_meta("base", to_hex(base) if base else "")
            self._set_meta("branch", self.branch)
            self._set_meta("pending", None)
        self.base = base
        self._write_roots()
        for s in old_spools:
            self._unlink_spool(s)

    def _recover(self) -> None:
        """Finish a commit the previous daemon recorded but did not see through."""
        pending = self._meta("pending")
        if not pending:
            return
        cid = from_hex(pending)
        if self.head() == cid:
            self._finalize(cid, set())
        else:  # the branch never moved: the staged changes are still to commit
            with self.db:
                self._set_meta("pending", None)
            self._write_roots()

    def _drop_orphan_spools(self) -> None:
        used = {e.spool for e in self.entries.values() if e.spool}
        for name in os.listdir(self.spool_dir):
            if name not in used:
                self._unlink_spool(name)

    def _unlink_spool(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.spool_dir, name))
        except FileNotFoundError:
            pass
        if not self.readonly:
            self._ensure_reserve()

    def close(self) -> None:
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading -------------------------------------------------------------------------
    def spool_path(self, name: str) -> str:
        return os.path.join(self.spool_dir, name)

    def get(self, path: str) -> Entry | None:
        if path == "":
            return Entry("d", 0o755, 0)
        return self.entries.get(path)

    def children(self, path: str) -> list[str]:
        return sorted(self.dirs.get(path, ()))

    def size_of(self, e: Entry) -> int:
        if e.spool:
            return os.stat(self.spool_path(e.spool)).st_size
        size = self._sizes.get(e.fid)
        if size is None:
            size = self._sizes[e.fid] = self.repo.read_file(e.fid).size
        return size

    def changes(self, sizes: bool = False) -> list[Change]:
        """Files added, modified and deleted since the base commit, by path (with their
        sizes when asked: a stat or an object read per change)."""
        base = self.base_entries()
        out = []
        for path, e in self.entries.items():
            if e.kind != "f":
                continue
            was = base.get(path)
            if was is None:
                out.append(Change("added", path, self.size_of(e) if sizes else 0))
            elif e.spool or was.file != e.fid or was.mode != tree_mode(e.mode):
                out.append(Change("modified", path, self.size_of(e) if sizes else 0))
        for path in base:
            e = self.entries.get(path)
            if e is None or e.kind != "f":
                out.append(Change("deleted", path))
        return sorted(out, key=lambda c: c.path)

    # -- changing the namespace ----------------------------------------------------------
    def _new_spool(self) -> str:
        name = secrets.token_hex(8)
        fd = os.open(self.spool_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.close(fd)
        fsync_dir(self.spool_dir)
        return name

    def _need_dir(self, path: str) -> None:
        parent = posixpath.dirname(path)
        e = self.get(parent)
        if e is None:
            raise OSError(errno.ENOENT, parent)
        if e.kind != "d":
            raise OSError(errno.ENOTDIR, parent)

    def _put(self, path: str, e: Entry) -> None:
        self._row(path, e)
        self.entries[path] = e
        parent, name = posixpath.split(path)
        self.dirs.setdefault(parent, set()).add(name)
        if e.kind == "d":
            self.dirs.setdefault(path, set())

    def _drop(self, path: str) -> Entry:
        self._make_room()
        e = self.entries.pop(path)
        self.db.execute("DELETE FROM entries WHERE path=?", (path,))
        self.db.execute("DELETE FROM xattrs WHERE path=?", (path,))
        parent, name = posixpath.split(path)
        self.dirs.get(parent, set()).discard(name)
        if e.kind == "d":
            self.dirs.pop(path, None)
        return e

    def create(self, path: str, mode: int) -> Entry:
        """A new empty file at ``path`` (replacing a file there: O_CREAT|O_TRUNC)."""
        _check_path(path)
        self._need_dir(path)
        old = self.get(path)
        if old is not None and old.kind == "d":
            raise OSError(errno.EISDIR, path)
        spool = self._new_spool()
        e = Entry("f", mode & 0o7777 or 0o644, time.time_ns(), None, spool)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put(path, e)
        return e

    def write_into_spool(self, path: str, read, truncate: bool) -> Entry:
        """Give a committed file a spool copy before its first write (copy-on-write).
        ``read(off, n)`` returns its committed bytes; with ``truncate`` nothing is copied."""
        e = self.entries[path]
        if e.spool:
            return e
        size = 0 if truncate else self.repo.read_file(e.fid).size
        name = secrets.token_hex(8)
        tmp = self.spool_path(name)
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            off = 0
            while off < size:
                data = read(off, min(COPY_BLOCK, size - off))
                if not data:
                    raise OSError(errno.EIO, f"{path}: short read at {off}")
                os.pwrite(fd, data, off)
                off += len(data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._unlink_spool(name)
            raise
        os.close(fd)
        fsync_dir(self.spool_dir)
        ne = Entry("f", e.mode, time.time_ns(), None, name)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put(path, ne)
        return ne

    def mkdir(self, path: str, mode: int) -> Entry:
        _check_path(path)
        self._need_dir(path)
        if self.get(path) is not None:
            raise OSError(errno.EEXIST, path)
        e = Entry("d", mode & 0o7777 or 0o755, time.time_ns())
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._put(path, e)
        return e

    def unlink(self, path: str) -> Entry:
        e = self.get(path)
        if e is None or path == "":
            raise OSError(errno.ENOENT, path)
        if e.kind == "d":
            raise OSError(errno.EISDIR, path)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._drop(path)
        return e  # the caller removes e.spool once no handle uses it

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

    def rename(self, old: str, new: str, noreplace: bool = False, exchange: bool = False) -> list[Entry]:
        """Move ``old`` (a file or a whole directory) to ``new``; returns what the move
        replaced (the caller removes their spools once no handle uses them)."""
        _check_path(new)
        src = self.get(old)
        if src is None or old == "":
            raise OSError(errno.ENOENT, old)
        self._need_dir(new)
        dst = self.get(new)
        if old == new:
            return []
        if src.kind == "d" and (new + "/").startswith(old + "/"):
            raise OSError(errno.EINVAL, f"cannot move {old} into itself")
        if exchange:
            if dst is None:
                raise OSError(errno.ENOENT, new)
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                a, b = self._take(old), self._take(new)
                self._place(new, a)
                self._place(old, b)
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
            self._place(new, self._take(old))
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

    def chmod(self, path: str, mode: int) -> None:
        e = self.get(path)
        if e is None or path == "":
            raise OSError(errno.ENOENT, path)
        e.mode = mode & 0o7777
        with self.db:
            self._row(path, e)

    def set_mtime(self, path: str, mtime_ns: int) -> None:
        e = self.get(path)
        if e is None or path == "":
            return
        e.mtime_ns = mtime_ns
        if e.spool:
            os.utime(self.spool_path(e.spool), ns=(mtime_ns, mtime_ns))
        with self.db:
            self._row(path, e)

    # -- xattrs (kept in the staging area; commits do not record them) -------------------
    def getxattr(self, path: str, name: bytes) -> bytes:
        row = self.db.execute("SELECT value FROM xattrs WHERE path=? AND name=?", (path, name)).fetchone()
        if row is None:
            raise OSError(errno.ENODATA, path)
        return row[0]

    def setxattr(self, path: str, name: bytes, value: bytes) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO xattrs VALUES (?, ?, ?)", (path, name, value))

    def listxattr(self, path: str) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT name FROM xattrs WHERE path=? ORDER BY name", (path,))]

    def removexattr(self, path: str, name: bytes) -> None:
        with self.db:
            if self.db.execute("DELETE FROM xattrs WHERE path=? AND name=?", (path, name)).rowcount == 0:
                raise OSError(errno.ENODATA, path)

    # -- committing ----------------------------------------------------------------------
    @in_write_session
    def commit(self, message: str, *, author: str | None = None, metadata: dict | None = None,
               busy: set[str] = frozenset(), progress=None) -> tuple[ObjectId | None, IngestStats]:
        """Record the working tree as a commit on the branch. Returns (None, stats) when
        nothing changed. ``busy`` names spool files still open for writing: they are
        committed as they are now and stay in the spool."""
        self.rebase()
        if not self.changes():
            return None, IngestStats()
        files = sorted((p, e) for p, e in self.entries.items() if e.kind == "f")
        tree = {p: TreeEntry(e.fid, tree_mode(e.mode)) for p, e in files if e.fid is not None}
        written, stats = ingest_files(self.repo, [DiskFile(p, self.spool_path(e.spool), e.mode, label=p)
                                                  for p, e in files if e.fid is None],
                                      self.base_entries(), progress)
        new_tree = Tree(tree | written)
        if self.base and self.repo.put(new_tree) == self.repo.read_commit(self.base).tree:
            # Written, but back to what the base holds (a file opened for writing and left
            # as it was): the spool copies go, the tree stays as it is.
            self._finalize(self.base, busy)
            return None, stats

        def record(cid: ObjectId) -> None:
            with self.db:
                self._set_meta("pending", to_hex(cid))
            self._write_roots()

        cid = self.repo.commit(new_tree, message, branch=self.branch, author=author, metadata=metadata,
                               expected_head=self.base, before_move=record)
        self._finalize(cid, busy)
        return cid, stats

    def rebase(self) -> None:
        """The branch moved (another commit landed on it): put the staged changes on its
        new head. Files the branch changed and the staging area did not are taken from
        the head; a file both changed is a conflict, and nothing changes."""
        head = self.head()
        if head == self.base:
            return
        old = self.base_entries()
        new = self.repo.tree_of(head).entries if head else {}
        theirs = {p for p in set(old) | set(new) if old.get(p) != new.get(p)}
        ours = {c.path for c in self.changes()}
        both = sorted(ours & theirs)
        if both:
            def s(x):
                return to_hex(x)[:12] if x else "nothing"
            raise StagingError(
                f"branch {self.branch!r} moved to {s(head)} after this staging area was based on {s(self.base)}, "
                f"and both changed {', '.join(both[:3])}{' ...' if len(both) > 3 else ''}: `coralfs stash` the "
                "changes, then `coralfs stash pop` them onto the new head")
        now = time.time_ns()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for path in sorted(theirs):
                cur = self.entries.get(path)
                if path in new:
                    te = new[path]
                    if cur is not None and cur.kind == "d":
                        raise StagingError(f"cannot rebase onto the branch head: {path} is a directory here")
                    self._add_parents(path, now)
                    self._put(path, Entry("f", _perm(te.mode), now, te.file))
                elif cur is not None and cur.kind == "f":
                    self._drop(path)
            self._set_meta("base", to_hex(head) if head else "")
        self.base = head
        self._write_roots()

    def _finalize(self, cid: ObjectId, busy: set[str]) -> None:
        """The branch is at ``cid``: committed spool rows become File rows."""
        tree = self.repo.tree_of(cid).entries
        dropped = []
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for path, e in self.entries.items():
                if e.kind == "f" and e.spool and e.spool not in busy and path in tree:
                    dropped.append(e.spool)
                    e.fid, e.spool = tree[path].file, None
                    self._row(path, e)
            self._set_meta("base", to_hex(cid))
            self._set_meta("pending", None)
        self.base = cid
        self._write_roots()
        for s in dropped:
            self._unlink_spool(s)

    # -- stashes -------------------------------------------------------------------------
    def stash_dir(self) -> str:
        return os.path.join(staging_root(self.repo), "stash", _q(self.branch))

    @in_write_session
    def stash(self, message: str = "") -> int:
        """Move the changes into a new stash and reset to the branch head."""
        changes = self.changes()
        if not changes:
            raise StagingError("no staged changes to stash")
        n = max([int(x) for x in os.listdir(self.stash_dir()) if x.isdigit()], default=-1) + 1 \
            if os.path.isdir(self.stash_dir()) else 0
        d = os.path.join(self.stash_dir(), str(n))
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        make_dirs(tmp)
        rows, roots = [], [self.base] if self.base else []
        for c in changes:
            e = self.entries.get(c.path)
            row = {"status": c.status, "path": c.path}
            if e is not None:
                row["mode"] = e.mode
                if e.spool:
                    row["spool"] = e.spool
                    # A second name for the same bytes (instant; the spool's data is durable
                    # already): the stage's name goes with the reset below.
                    os.link(self.spool_path(e.spool), os.path.join(tmp, e.spool))
                else:
                    row["fid"] = to_hex(e.fid)
                    roots.append(e.fid)
            rows.append(row)
        info = {"message": message or f"staged changes on {self.branch}", "time": int(time.time()),
                "base": to_hex(self.base) if self.base else None, "changes": rows}
        write_durable(os.path.join(tmp, "stash.json"), json.dumps(info, indent=1).encode())
        write_durable(os.path.join(tmp, "stash.roots"), "".join(to_hex(r) + "\n" for r in roots).encode())
        fsync_dir(tmp)
        os.rename(tmp, d)
        fsync_dir(self.stash_dir())
        self._reset(self.head())
        return n

    @in_write_session
    def stash_pop(self, index: int | None = None) -> dict:
        """Apply a stash (the newest by default) onto the working tree, then drop it."""
        items = list_stashes(self.repo, self.branch)
        if not items:
            raise StagingError(f"no stashes for branch {self.branch!r}")
        pick = items[0] if index is None else next((s for s in items if s["index"] == index), None)
        if pick is None:
            raise StagingError(f"no stash {index} for branch {self.branch!r} (see `coralfs stash list`)")
        if self.changes():
            raise StagingError("the staging area has changes: commit or stash them before `stash pop`")
        d = os.path.join(self.stash_dir(), str(pick["index"]))
        now = time.time_ns()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for row in pick["changes"]:
                path = row["path"]
                if row["status"] == "deleted":
                    if path in self.entries and self.entries[path].kind == "f":
                        self._drop(path)
                    continue
                if row.get("spool"):
                    name = secrets.token_hex(8)
                    os.link(os.path.join(d, row["spool"]), self.spool_path(name))
                    e = Entry("f", row["mode"], now, None, name)
                else:
                    e = Entry("f", row["mode"], now, from_hex(row["fid"]))
                old = self.entries.get(path)
                if old is not None and old.kind == "d":
                    raise StagingError(f"cannot pop the stash: {path} is a directory now")
                self._add_parents(path, now)
                self._put(path, e)
        fsync_dir(self.spool_dir)
        self._write_roots()  # before the stash (and its roots) goes
        shutil.rmtree(d)
        fsync_dir(self.stash_dir())
        return pick

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


def staged_changes(repo, branch: str) -> list[Change]:
    """The staged changes of a branch, read without disturbing a daemon that serves them."""
    st = Stage(repo, branch, readonly=True)
    try:
        return st.changes(sizes=True)
    finally:
        st.close()


def list_stashes(repo, branch: str) -> list[dict]:
    """The stashes of a branch, newest first (each with its index)."""
    d = os.path.join(staging_root(repo), "stash", _q(branch))
    out = []
    if os.path.isdir(d):
        for name in os.listdir(d):
            if not name.isdigit():
                continue
            try:
                with open(os.path.join(d, name, "stash.json")) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            info["index"] = int(name)
            out.append(info)
    return sorted(out, key=lambda s: -s["index"])


__all__ = ["Stage", "StagingError", "Entry", "Change", "staged_branches", "staged_changes", "list_stashes",
           "stage_dir"]
