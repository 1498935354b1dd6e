"""What a writable (staging) mount shows: inodes, open files and control files over a StagingArea.

Inode numbers are handed out per path as the kernel looks names up and follow their file
through renames; a file unlinked while open keeps its inode (and spool) until the last
handle closes. Unchanged files are read lazily from the repository; a file is copied into
the spool at its first write (or created there), and its bytes are then read and written
with pread/pwrite on one shared descriptor per spool file.

``.coral/`` at the root holds ``commit.json`` (the base commit), ``status.json`` (the staged
changes) and ``control``: write one JSON request line, then read the JSON answer from the
same open file (control.py: the protocol, the client's :func:`control.request`). Nothing
here imports pyfuse3 or trio: errors are OSError with the errno the kernel should see;
ops.py translates. Writes are accounted here (what is in flight to which spool, how far
it reaches, a failure to tell at the next call); writeback.py applies them.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import posixpath
import stat
import time
from dataclasses import dataclass, field

from ...objects import records
from ...objects.ids import from_hex, to_hex
from ...objects.reader import FileView
from ...staging import Entry, StagingArea, StagingError
from ...staging.entries import NAME_MAX, check_name
from ..model import FileHandleT, InodeT
from .control import ControlBuffer, take_bytes
from .inodes import ROOT_INO, InodeNames
from .posix import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    Caller,
    chmod_mode,
    chown_change,
    creation_mode,
    fallocate,
    new_owner,
    write_clears,
)
from .spools import SpoolFiles

log = logging.getLogger(__name__)

CORAL_INO, CONTROL_INO, STATUS_INO, COMMIT_INO = InodeT(2), InodeT(3), InodeT(4), InodeT(5)
VIRTUAL = {CORAL_INO: ".coral", CONTROL_INO: ".coral/control", STATUS_INO: ".coral/status.json",
           COMMIT_INO: ".coral/commit.json"}
BY_PATH = {v: k for k, v in VIRTUAL.items()}
AUTO_RETRY_CAP = 300.0  # seconds: the longest wait between attempts of a failing auto-commit


@dataclass
class Attr:
    ino: InodeT
    mode: int
    size: int
    mtime_ns: int
    nlink: int = 1
    uid: int | None = None       # None: the mount owner
    gid: int | None = None
    atime_ns: int | None = None  # None: mtime_ns
    ctime_ns: int | None = None


@dataclass
class Handle(ControlBuffer):
    ino: InodeT
    writable: bool
    spool: str | None = None     # set once the file's bytes live in the spool
    view: FileView | None = None  # committed bytes, read lazily
    dirty: bool = False
    body: bytes = b""             # .coral/status.json, .coral/commit.json at open
    uid: int | None = None        # who opened it (None: no kernel request): writes by non-root clear set-ID bits
    entry: Entry | None = None    # what it opened (stat of a file unlinked while open)


@dataclass
class AutoCommit:
    """When to commit by itself: ``debounce`` seconds after the last file matching
    ``paths`` was closed, no such file open for writing, at most once per ``min_interval``;
    with ``keep_last`` > 0 each auto-commit is tagged ``auto/BRANCH/N`` and only the newest
    N of those tags are kept."""
    debounce: float
    paths: list[str] = field(default_factory=list)
    min_interval: float = 0.0
    keep_last: int = 0

    def counts(self, path: str) -> bool:
        return not self.paths or any(fnmatch.fnmatchcase(path, p) for p in self.paths)


class StageFS(InodeNames, SpoolFiles):
    def __init__(self, repo, stage: StagingArea, auto: AutoCommit | None = None, owner: int | None = None) -> None:
        self.repo = repo
        self.stage = stage
        self.auto = auto
        # Who may send control requests: the uid that mounted (the daemon's).
        self.owner = os.getuid() if owner is None else owner
        InodeNames.__init__(self, stage)
        self.handles: dict[FileHandleT, Handle] = {}
        self._next_fh = 1
        SpoolFiles.__init__(self)  # self.fds: spool name -> [fd, handles]
        self.dead: set[str] = set()             # spools unlinked from the tree, still open
        # Write-behind (see writeback.py): writes accepted but not yet in their spool file.
        self.pending: dict[str, int] = {}       # spool -> writes in flight
        self.pending_end: dict[str, int] = {}   # spool -> furthest byte they reach
        self.errors: dict[str, OSError] = {}    # spool -> a failed write, told at the next call
        self.last_write = 0.0                    # when a counted file was last written or closed
        self.last_commit = 0.0
        self.auto_failures = 0       # auto-commits failed in a row since the last write
        self.auto_retry_at = 0.0     # no auto-commit attempt before this (monotonic)
        self.auto_error: dict | None = None  # the last failed auto-commit, until a commit succeeds
        self.counters = {"commits": 0, "auto_commits": 0, "bytes_written": 0, "copy_ups": 0}
        self.mounted_ns = time.time_ns()  # the time shown for .coral and the root

    # -- inodes (inodes.py) -------------------------------------------------------------
    def _entry(self, ino: InodeT) -> tuple[str, Entry]:
        p = self.path(ino)
        e = self.stage.get(p)
        if e is None:
            raise OSError(errno.ENOENT, p)
        return p, e

    # -- attributes ----------------------------------------------------------------------
    def attr(self, ino: InodeT) -> Attr:
        if ino in VIRTUAL:
            if ino == CORAL_INO:
                return Attr(ino, stat.S_IFDIR | 0o555, 0, self.mounted_ns, 2)
            mode = 0o600 if ino == CONTROL_INO else 0o444
            return Attr(ino, stat.S_IFREG | mode, 0 if ino == CONTROL_INO else 1 << 20, time.time_ns())
        path = self.paths.get(ino)
        if path is None:  # unlinked while open
            for h in self.handles.values():
                if h.ino == ino and h.spool:
                    st = os.fstat(self.fds[h.spool][0])
                    e = h.entry or Entry("f", 0o644, st.st_mtime_ns)
                    return Attr(ino, stat.S_IFREG | e.mode, self._spool_size(h.spool, st.st_size), st.st_mtime_ns,
                                0, e.uid, e.gid, e.atime_ns, max(e.ctime_ns, st.st_ctime_ns))
            raise OSError(errno.ENOENT, f"inode {ino}")
        e = self.stage.get(path)
        if e is None:
            raise OSError(errno.ENOENT, path)
        nlink = self.stage.nlink(path, e)
        if e.kind == "d":
            if ino == ROOT_INO:
                nlink += 1  # .coral
            return Attr(ino, stat.S_IFDIR | e.mode, 0, e.mtime_ns, nlink, e.uid, e.gid, e.atime_ns, e.ctime_ns)
        if e.kind == "l":
            return Attr(ino, stat.S_IFLNK | 0o777, self.stage.size_of(e), e.mtime_ns, nlink, e.uid, e.gid,
                        e.atime_ns, e.ctime_ns)
        if e.spool:
            # Writes move the spool file's mtime and ctime, not the row (no transaction per write).
            st = os.stat(self.stage.spool_path(e.spool))
            return Attr(ino, stat.S_IFREG | e.mode, self._spool_size(e.spool, st.st_size), st.st_mtime_ns, nlink,
                        e.uid, e.gid, e.atime_ns, max(e.ctime_ns, st.st_ctime_ns))
        return Attr(ino, stat.S_IFREG | e.mode, self.stage.size_of(e), e.mtime_ns, nlink, e.uid, e.gid,
                    e.atime_ns, e.ctime_ns)

    def _spool_size(self, spool: str, on_disk: int) -> int:
        return max(on_disk, self.pending_end.get(spool, 0)) if self.pending.get(spool) else on_disk

    # -- names ---------------------------------------------------------------------------
    def _child(self, parent: InodeT, name: str) -> str:
        if len(os.fsencode(name)) > NAME_MAX:
            # Longer names would commit, but no file system could export them.
            raise OSError(errno.ENAMETOOLONG, f"a name is at most {NAME_MAX} bytes")
        if parent == CORAL_INO:
            return ".coral/" + name
        p = self.path(parent)
        if "/" in name or name in ("", ".", ".."):
            raise OSError(errno.EINVAL, name)
        path = posixpath.join(p, name) if p else name
        check_name(path)  # a whole path over PATH_MAX
        return path

    def lookup(self, parent: InodeT, name: str) -> Attr:
        path = self._child(parent, name)
        virtual = BY_PATH.get(path)
        if virtual is not None:
            ino = virtual
        else:
            e = self.stage.get(path)
            if e is None:
                raise OSError(errno.ENOENT, path)
            ino = self._ino(path)
        self.remember(ino)
        return self.attr(ino)

    def readdir(self, ino: InodeT) -> list[tuple[str, Attr]]:
        if ino == CORAL_INO:
            return [(VIRTUAL[i].split("/")[1], self.attr(i)) for i in (COMMIT_INO, CONTROL_INO, STATUS_INO)]
        path, e = self._entry(ino)
        if e.kind != "d":
            raise OSError(errno.ENOTDIR, path)
        out = [(".coral", self.attr(CORAL_INO))] if ino == ROOT_INO else []
        for name in self.stage.children(path):
            child = posixpath.join(path, name) if path else name
            out.append((name, self.attr(self._ino(child))))
        return out

    def _parent_writable(self, parent: InodeT) -> None:
        if parent in VIRTUAL:
            raise OSError(errno.EPERM, ".coral is read-only")

    def mkdir(self, parent: InodeT, name: str, mode: int, caller: Caller | None = None) -> Attr:
        self._parent_writable(parent)
        path = self._child(parent, name)
        self.stage.mkdir(path, creation_mode(mode, caller), *new_owner(caller))
        ino = self._ino(path)
        self.remember(ino)
        return self.attr(ino)

    def symlink(self, parent: InodeT, name: str, target: str, caller: Caller | None = None) -> Attr:
        self._parent_writable(parent)
        path = self._child(parent, name)
        self.stage.symlink(path, target, *new_owner(caller))
        ino = self._ino(path)
        self.remember(ino)
        return self.attr(ino)

    def mknod(self, parent: InodeT, name: str) -> None:
        """FIFOs, sockets and devices: EPERM (a checkpoint never holds them and a commit
        could not record them; README: the writable mount), after the name's own checks."""
        self._parent_writable(parent)
        path = self._child(parent, name)
        raise OSError(errno.EEXIST if self.stage.get(path) is not None else errno.EPERM, path)

    def readlink(self, ino: InodeT) -> str:
        path, e = self._entry(ino)
        if e.kind != "l":
            raise OSError(errno.EINVAL, f"{path} is not a symbolic link")
        return e.target or ""

    def link(self, ino: InodeT, parent: InodeT, name: str) -> Attr:
        """A hard link ``name`` in ``parent`` to the file ``ino`` (one inode, one content)."""
        if ino in VIRTUAL:
            raise OSError(errno.EPERM, "no links to .coral files")
        self._parent_writable(parent)
        old, e = self._entry(ino)
        new = self._child(parent, name)
        self.stage.link(old, new)
        self._grouped(ino, e.link)
        self.inos[new] = ino
        self.remember(ino)
        return self.attr(ino)

    def _release_spool(self, e: Entry) -> None:
        if e.spool is None or self.stage.has_names(e):
            return
        if e.spool in self.fds:
            self.dead.add(e.spool)
        else:
            self.stage.discard_spool(e.spool)

    def unlink(self, parent: InodeT, name: str) -> None:
        self._parent_writable(parent)
        path = self._child(parent, name)
        e = self.stage.unlink(path)
        self._detach(path)
        self._release_spool(e)
        self._retry_soon(path)

    def rmdir(self, parent: InodeT, name: str) -> None:
        self._parent_writable(parent)
        path = self._child(parent, name)
        self.stage.rmdir(path)
        self._detach(path)

    def rename(self, p_old: InodeT, n_old: str, p_new: InodeT, n_new: str, flags: int = 0) -> None:
        self._parent_writable(p_old)
        self._parent_writable(p_new)
        old, new = self._child(p_old, n_old), self._child(p_new, n_new)
        noreplace, exchange = bool(flags & 1), bool(flags & 2)
        replaced = self.stage.rename(old, new, noreplace=noreplace, exchange=exchange)
        self._retry_soon(new)
        if exchange:
            tmp = "\0swap"
            self._move(old, tmp)
            self._move(new, old)
            self._move(tmp, new)
            return
        if replaced:
            self._detach(new)
            for e in replaced:
                self._release_spool(e)
        self._move(old, new)

    # -- open files ----------------------------------------------------------------------
    def _fh(self, h: Handle) -> FileHandleT:
        fh = FileHandleT(self._next_fh)
        self._next_fh += 1
        self.handles[fh] = h
        return fh

    def _attach(self, h: Handle, spool: str) -> None:
        h.spool = spool
        self._open_spool(spool)

    def create(self, parent: InodeT, name: str, mode: int, caller: Caller | None = None) -> tuple[FileHandleT, Attr]:
        self._parent_writable(parent)
        path = self._child(parent, name)
        old = self.stage.get(path)
        mode = creation_mode(mode, caller)
        uid, gid = new_owner(caller)
        parent_e = self.stage.get(posixpath.dirname(path))
        if (caller is not None and not caller.root and mode & stat.S_ISGID and parent_e is not None
                and not caller.in_group(parent_e.gid if parent_e.mode & stat.S_ISGID else caller.gid)):
            mode &= ~stat.S_ISGID  # as Linux: no set-group-ID file for a group the creator is not in
        e = self.stage.create(path, mode, uid, gid)
        if old is not None:
            self._detach(path)
            self._release_spool(old)
        ino = self._ino(path)
        self.remember(ino)
        h = Handle(ino, True, uid=uid, entry=e)
        self._attach(h, e.spool)
        self._touch(path)
        return self._fh(h), self.attr(ino)

    def needs_copy(self, ino: InodeT, flags: int) -> bool:
        """Opening with O_TRUNC a file whose bytes are still only in the repository: the
        caller runs :meth:`copy_up` (an empty spool file) first. Other opens for writing
        copy at their first write (:meth:`needs_copy_for_write`), so a file opened
        read-write and only read (h5py "a", numpy "r+") is never copied."""
        if ino in VIRTUAL or not (flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY):
            return False
        _p, e = self._entry(ino)
        return e.kind == "f" and e.spool is None

    def needs_copy_for_write(self, fh: FileHandleT) -> bool:
        """The first write through ``fh`` must copy the file into the spool first (no
        handle of the file wrote to it yet). Asks only: :meth:`begin_write` attaches."""
        h = self.handle(fh)
        if not h.writable or h.ino in VIRTUAL or h.spool is not None:
            return False
        p = self.paths.get(h.ino)
        e = self.stage.get(p) if p is not None else None
        return e is not None and e.kind == "f" and e.spool is None

    def copy_up_for_write(self, fh: FileHandleT) -> None:
        """Copy the file open as ``fh`` into the spool (call from a worker thread)."""
        self.copy_up(self.handle(fh).ino, False)

    def copy_up(self, ino: InodeT, truncate: bool) -> None:
        path, e = self._entry(ino)
        if e.spool is None:  # range copy-on-write: an overlay, nothing copied yet (staging/overlay.py)
            self.stage.write_into_spool(path, truncate)
            self.counters["copy_ups"] += 1

    def open(self, ino: InodeT, flags: int, uid: int | None = None) -> FileHandleT:
        """Open ``ino``; ``uid`` is the caller's (None: no kernel, the owner): the control
        file is the owner's, and writes by a non-root uid clear set-ID bits."""
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if ino in VIRTUAL:
            if ino == CORAL_INO:
                raise OSError(errno.EISDIR, ".coral")
            if ino == CONTROL_INO and uid is not None and uid != self.owner:
                # Also with --allow-other: commits, stashes and pops are the owner's.
                raise OSError(errno.EACCES, f"only the mount's owner (uid {self.owner}) sends control requests")
            if writable and ino != CONTROL_INO:
                raise OSError(errno.EACCES, VIRTUAL[ino])
            h = Handle(ino, writable)
            if ino == STATUS_INO:
                h.body = (json.dumps(self.status(), indent=1) + "\n").encode()
            elif ino == COMMIT_INO:
                h.body = (json.dumps(self.commit_info(), indent=1) + "\n").encode()
            return self._fh(h)
        path, e = self._entry(ino)
        if e.kind == "d":
            raise OSError(errno.EISDIR, path)
        if e.kind == "l":  # the kernel follows links before it opens: only O_NOFOLLOW lands here
            raise OSError(errno.ELOOP, path)
        h = Handle(ino, writable, uid=uid, entry=e)
        if e.spool:
            self._attach(h, e.spool)
            if flags & os.O_TRUNC and writable:
                self._truncate_spool(e.spool, 0)
        else:
            h.view = self.repo.open_file(e.fid)
        if writable:
            self._touch(path)
        return self._fh(h)

    def handle(self, fh: FileHandleT) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise OSError(errno.EBADF, f"handle {fh}")
        return h

    def _spool_of(self, h: Handle) -> str | None:
        """The spool a handle reads: its own, or one the file got after it was opened
        (another handle wrote to it)."""
        if h.spool is None and h.view is not None:
            p = self.paths.get(h.ino)
            e = self.stage.get(p) if p is not None else None
            if e is not None and e.spool:
                self._attach(h, e.spool)
                h.view = None
        return h.spool

    def read_view(self, fh: FileHandleT) -> FileView | None:
        """The committed bytes this handle reads (decoding: call from a thread)."""
        h = self.handle(fh)
        return None if self._spool_of(h) else h.view

    def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        h = self.handle(fh)
        if h.ino in VIRTUAL:
            return (h.answer if h.ino == CONTROL_INO else h.body)[off:off + size]
        spool = self._spool_of(h)
        if spool is None:
            return h.view.read(off, size)
        return self._read_spool(spool, off, size)

    def overlay_plan(self, fh: FileHandleT, off: int, size: int) -> tuple[list, FileView] | None:
        """How to read ``size`` bytes at ``off`` of a file under range copy-on-write: its
        (offset, length, from_spool) pieces and the committed bytes (None: no overlay)."""
        h = self.handle(fh)
        spool = None if h.ino in VIRTUAL else self._spool_of(h)
        return None if spool is None else self._spool_plan(spool, off, size)

    def is_control(self, fh: FileHandleT) -> bool:
        return self.handle(fh).ino == CONTROL_INO

    def control_buffer(self, fh: FileHandleT) -> ControlBuffer:
        """Where requests written to the control file ``fh`` collect (control.py reads them)."""
        h = self.handle(fh)
        if h.ino != CONTROL_INO or not h.writable:
            raise OSError(errno.EBADF, "not the control file open for writing")
        return h

    def write(self, fh: FileHandleT, off: int, data: bytes) -> int:
        """Bytes written to the control file (file data goes through :meth:`begin_write`)."""
        take_bytes(self.control_buffer(fh), data)
        return len(data)

    def begin_write(self, fh: FileHandleT, off: int, size: int) -> tuple[str, int]:
        """Account for a write of ``size`` bytes at ``off`` through ``fh``; returns the
        spool and the descriptor to pwrite to. The handle follows the file into its spool
        (copied by another handle, or by :meth:`copy_up_for_write`). A failure of an
        earlier write to this file is raised here."""
        h = self.handle(fh)
        if not h.writable or h.ino in VIRTUAL or self._spool_of(h) is None:
            raise OSError(errno.EBADF, "not open for writing")
        self.raise_deferred(h.spool)
        p = self.paths.get(h.ino)
        e = self.stage.get(p) if p is not None else None
        if e is not None and (mode := write_clears(e, h.uid)) is not None:
            self.stage.chmod(p, mode)
        h.dirty = True
        self.pending[h.spool] = self.pending.get(h.spool, 0) + 1
        self.pending_end[h.spool] = max(self.pending_end.get(h.spool, 0), off + size)
        self.counters["bytes_written"] += size
        self._touch(self.paths.get(h.ino))
        return h.spool, self.fds[h.spool][0]

    def end_write(self, spool: str, error: OSError | None, off: int = 0, n: int = 0) -> None:
        """A queued write of ``n`` bytes at ``off`` was applied (or failed with ``error``)."""
        if error is None and n:
            try:
                self._wrote(spool, off, n)
            except OSError as e:  # the map could not take the range: the writer is told
                log.error("recording a write to the spool of %s failed: %s", spool, e)
                error = e
        left = self.pending[spool] - 1
        if left:
            self.pending[spool] = left
        else:
            del self.pending[spool]
            self.pending_end.pop(spool, None)
        if error is not None and spool not in self.errors:
            self.errors[spool] = error

    def writes_pending(self, spool: str | None) -> bool:
        return spool is not None and spool in self.pending

    def pending_spools(self) -> list[str]:
        return list(self.pending)

    def spool_of(self, fh: FileHandleT) -> str | None:
        """The spool file ``fh`` writes to (None: committed bytes, or no such handle)."""
        h = self.handles.get(fh)
        return None if h is None else h.spool

    def needs_flush(self, fh: FileHandleT) -> bool:
        """A close of ``fh`` has something to make durable, or a failed write to tell."""
        h = self.handles.get(fh)
        return h is not None and (h.dirty or (h.spool is not None and h.spool in self.errors))

    def raise_deferred(self, spool: str | None) -> None:
        err = self.errors.pop(spool, None) if spool else None
        if err is not None:
            raise OSError(err.errno, err.strerror)

    def _touch(self, path: str | None) -> None:
        """A file was written, or opened or closed for writing: the auto-commit debounce
        starts again if the file counts (None: a file no longer in the tree)."""
        if path is not None and (self.auto is None or self.auto.counts(path)):
            self.last_write = time.monotonic()
            if self.auto_failures:
                self._retry_soon(path)

    def _retry_soon(self, path: str) -> None:
        """A change that may fix a failing auto-commit: the backoff starts over (the next
        attempt follows the debounce)."""
        if self.auto_failures and (self.auto is None or self.auto.counts(path)):
            self.auto_failures = 0
            self.auto_retry_at = 0.0
            if self.auto_error is not None:
                self.auto_error["next_attempt"] = None

    def fsync(self, fh: FileHandleT) -> None:
        h = self.handle(fh)
        self.raise_deferred(h.spool)
        if h.spool is not None and h.dirty:
            self._sync(h.spool)
            h.dirty = False

    def flush(self, fh: FileHandleT) -> None:
        """A close(): what this handle wrote becomes durable before close returns."""
        self.fsync(fh)

    def release(self, fh: FileHandleT) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        if h.spool is not None:
            if h.dirty:
                self._sync(h.spool)
            if self._close_spool(h.spool):
                if h.spool in self.dead:
                    self.dead.discard(h.spool)
                    self.stage.discard_spool(h.spool)
        if h.writable:
            self._touch(self.paths.get(h.ino))

    def truncate(self, ino: InodeT, size: int, fh: FileHandleT | None = None, caller: Caller | None = None) -> None:
        path = self.paths.get(ino)
        spool = None
        if fh is not None and fh in self.handles:
            spool = self._spool_of(self.handles[fh])
        if spool is None:
            _p, e = self._entry(ino)
            if e.kind == "d":
                raise OSError(errno.EISDIR, path)
            if e.spool is None:
                raise OSError(errno.EIO, f"{path}: truncate before its copy")
            spool = e.spool
        self._truncate_spool(spool, size)
        e = self.stage.get(path) if path is not None else None
        if e is not None and caller is not None and (mode := write_clears(e, caller.uid)) is not None:
            self.stage.chmod(path, mode)
        self._touch(path)

    def fallocate(self, fh: FileHandleT, mode: int, off: int, length: int) -> None:
        """fallocate on the file open as ``fh`` (already in the spool: the caller copies
        it first, as for a write): mode 0 allocates (and extends the size), KEEP_SIZE
        allocates without, PUNCH_HOLE|KEEP_SIZE punches the range (zeros); any other mode
        is EOPNOTSUPP. pyfuse3 does not dispatch fallocate yet (docs/decisions.md): the
        kernel answers EOPNOTSUPP itself until it does."""
        h = self.handle(fh)
        if h.ino in VIRTUAL:
            raise OSError(errno.EOPNOTSUPP, "fallocate on a .coral file")
        if mode not in (0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE):
            raise OSError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
        if not h.writable or self._spool_of(h) is None:
            raise OSError(errno.EBADF, "not open for writing")
        self.raise_deferred(h.spool)
        fd = self.fds[h.spool][0]
        if mode & FALLOC_FL_PUNCH_HOLE:
            try:
                fallocate(fd, mode, off, length)
            except OSError as e:  # a spool file system without holes: write the zeros
                if e.errno != errno.EOPNOTSUPP:
                    raise
                end = min(off + length, os.fstat(fd).st_size)
                for at in range(off, end, 1 << 20):
                    os.pwrite(fd, bytes(min(1 << 20, end - at)), at)
            self._wrote(h.spool, off, min(off + length, os.fstat(fd).st_size) - off)  # zeros, the spool's
        elif mode == 0:
            os.posix_fallocate(fd, off, length)
        else:
            fallocate(fd, mode, off, length)
        h.dirty = True
        self._touch(self.paths.get(h.ino))

    def needs_copy_for_truncate(self, ino: InodeT) -> bool:
        if ino in VIRTUAL:
            raise OSError(errno.EPERM, VIRTUAL[ino])
        _p, e = self._entry(ino)
        return e.kind == "f" and e.spool is None

    def _changeable(self, ino: InodeT) -> tuple[str, Entry]:
        if ino in VIRTUAL:
            raise OSError(errno.EPERM, f"{VIRTUAL[ino]} belongs to coralfs")
        return self._entry(ino)

    def chmod(self, ino: InodeT, mode: int, caller: Caller | None = None) -> None:
        path, e = self._changeable(ino)
        self.stage.chmod(path, chmod_mode(e, mode, caller))

    def chown(self, ino: InodeT, uid: int | None, gid: int | None, caller: Caller | None = None) -> None:
        """chown as POSIX says (posix.chown_change); never a silent no-op."""
        path, e = self._changeable(ino)
        uid, gid, mode = chown_change(e, uid, gid, caller)
        self.stage.chown(path, uid, gid, mode)

    def set_times(self, ino: InodeT, atime_ns: int | None, mtime_ns: int | None) -> None:
        """utimensat: atime and mtime as given (None: omitted); ctime becomes now. (Who may
        is checked by the kernel: default_permissions.)"""
        path, _e = self._changeable(ino)
        self.stage.set_times(path, atime_ns, mtime_ns)

    def set_mtime(self, ino: InodeT, mtime_ns: int) -> None:
        self.set_times(ino, None, mtime_ns)

    def close(self) -> None:
        """The mount ends: what open files wrote is made durable."""
        for spool, (fd, _n) in self.fds.items():
            try:
                self._sync(spool)
            finally:
                os.close(fd)
        self.fds.clear()
        self.overlays.clear()
        self.unders.clear()
        self.handles.clear()

    def writers(self) -> list[str]:
        """Paths open for writing now."""
        out = []
        for h in self.handles.values():
            if h.writable and h.ino not in VIRTUAL:
                out.append(self.paths.get(h.ino, f"(unlinked inode {h.ino})"))
        return sorted(set(out))

    def busy_spools(self) -> set[str]:
        return {h.spool for h in self.handles.values() if h.writable and h.spool}

    # -- xattrs --------------------------------------------------------------------------
    def _xpath(self, ino: InodeT) -> str:
        if ino in VIRTUAL:
            raise OSError(errno.ENOTSUP, "no xattrs here")
        p, _e = self._entry(ino)
        return p

    def getxattr(self, ino: InodeT, name: bytes) -> bytes:
        return self.stage.getxattr(self._xpath(ino), name)

    def setxattr(self, ino: InodeT, name: bytes, value: bytes) -> None:
        # Only user.* attributes are kept: ACLs (system.posix_acl_*) and security labels
        # would have to change what the mount enforces, so tools fall back to chmod.
        if not name.startswith(b"user."):
            raise OSError(errno.ENOTSUP, f"xattr {name.decode(errors='replace')}: only user.* attributes are kept")
        self.stage.setxattr(self._xpath(ino), name, value)

    def listxattr(self, ino: InodeT) -> list[bytes]:
        if ino in VIRTUAL:
            return []
        return self.stage.listxattr(self._xpath(ino))

    def removexattr(self, ino: InodeT, name: bytes) -> None:
        self.stage.removexattr(self._xpath(ino), name)

    # -- status, commits and the control file --------------------------------------------
    def status(self) -> dict:
        st = self.stage
        head = st.head()
        return {"branch": st.branch, "base": to_hex(st.base) if st.base else None,
                "head": to_hex(head) if head else None,
                "changes": [c.as_dict() for c in st.changes(sizes=True)],
                "open_for_writing": self.writers(),
                "auto_commit": None if self.auto is None else {
                    "debounce": self.auto.debounce, "paths": self.auto.paths,
                    "min_interval": self.auto.min_interval, "keep_last": self.auto.keep_last,
                    "last_error": self.auto_error},
                "counters": self.counters}

    def commit_info(self) -> dict:
        st = self.stage
        if st.base is None:
            return {"id": None, "branch": st.branch}
        info = self.repo.describe_commit(st.base)
        return {"id": info.pop("id"), "branch": st.branch, **info}

    def commit(self, message: str, metadata: dict | None = None, preserve_owner: bool = False) -> dict:
        """Ingest the staged changes (call from a worker thread, with no other change to
        the stage running). The author is the repository's identity in the daemon, which
        runs as the mount's owner: never a value a request brings."""
        t0 = time.perf_counter()
        changes = self.stage.changes()
        cid, stats = self.stage.commit(message, metadata=metadata, busy=self.busy_spools(),
                                       preserve_owner=preserve_owner)
        self.auto_failures, self.auto_retry_at, self.auto_error = 0, 0.0, None
        if cid is None:
            return {"ok": True, "commit": None, "message": "nothing to commit"}
        self.last_commit = time.monotonic()
        self.counters["commits"] += 1
        dt = time.perf_counter() - t0
        return {"ok": True, "commit": to_hex(cid), "branch": self.stage.branch,
                "changes": [c.as_dict(size=False) for c in changes],
                "logical": stats.logical, "stored": stats.stored, "seconds": round(dt, 3),
                "codecs": dict(stats.codecs)}

    def auto_due(self, now: float) -> bool:
        a = self.auto
        if a is None or self.last_write == 0.0 or now - self.last_write < a.debounce:
            return False
        if self.auto_failures and now < self.auto_retry_at:
            return False
        if a.min_interval and self.last_commit and now - self.last_commit < a.min_interval:
            return False
        if any(a.counts(p) for p in self.writers()):
            return False
        return any(a.counts(c.path) for c in self.stage.changes())

    def auto_commit(self) -> dict:
        """The auto-commit (call like :meth:`commit`)."""
        changes = [c.path for c in self.stage.changes()]
        named = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
        self.last_write = 0.0
        out = self.commit(f"auto-commit: {named}", metadata={"auto_commit": True})
        if out.get("commit"):
            self.counters["auto_commits"] += 1
            if self.auto and self.auto.keep_last > 0:
                self._rotate_tags(out["commit"])
        return out

    def auto_failed(self, e: Exception, now: float) -> float:
        """An auto-commit failed with ``e``: shown in status until a commit succeeds, and
        retried after a wait that doubles with each failure (capped at AUTO_RETRY_CAP) and
        starts over when a counted file changes. Returns the wait in seconds."""
        self.auto_failures += 1
        first = max(1.0, self.auto.debounce if self.auto else 1.0)
        delay = min(AUTO_RETRY_CAP, first * 2 ** min(self.auto_failures - 1, 30))
        self.auto_retry_at = now + delay
        self.last_write = now  # still due once the wait is over
        self.auto_error = {"path": getattr(e, "path", None), "error": str(e) or type(e).__name__,
                           "time": time.time(), "attempts": self.auto_failures,
                           "next_attempt": time.time() + delay}
        log.error("auto-commit failed (attempt %d, next in %.0f s unless a file changes): %s",
                  self.auto_failures, delay, e)
        return delay

    def _rotate_tags(self, cid: str) -> None:
        self.repo.tag_rotating(f"auto/{self.stage.branch}", from_hex(cid), self.auto.keep_last, "auto-commit")

    def rebase(self) -> None:
        """Move the staged changes onto the branch head if it moved (on the serving thread,
        before a commit runs in a worker thread)."""
        self.stage.rebase()

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(self.stage.spool_dir)

    def stash(self, message: str = "") -> dict:
        if self.writers():
            raise StagingError(f"files are open for writing ({', '.join(self.writers()[:3])}): close them first")
        n = self.stage.stash(message)
        self._forget_all_paths()
        return {"ok": True, "stash": n}

    def stash_pop(self, index: int | None) -> dict:
        got = self.stage.stash_pop(index)
        self._forget_all_paths()
        return {"ok": True, "stash": got["index"], "changes": got["changes"]}

    def log_metric(self, metric: str, value: float, step: int | None) -> dict:
        """A metric point of the experiment whose branch this mount is (exp/NAME), at the
        branch head (the last committed checkpoint: staged changes are not one yet)."""
        name = records.experiment_of_branch(self.repo, self.stage.branch)
        if name is None:
            raise StagingError(f"this mount's branch {self.stage.branch} is not an experiment's: mount exp/NAME "
                               "(`coralfs experiment start NAME` makes one)")
        with self.repo.write_session():
            ev = records.metric_event(self.repo, name, metric, value, step)
            records.append_event(self.repo, name, ev)
        return {"ok": True, "experiment": name, "metric": ev["metric"], "value": ev["value"], "step": ev["step"],
                "commit": ev["commit"]}

    def _forget_all_paths(self) -> None:
        """The tree changed under the kernel: inodes of paths that are gone are detached."""
        for p in [p for p in self.inos if p and self.stage.get(p) is None]:
            self._detach(p)


__all__ = ["Attr", "AutoCommit", "Handle", "StageFS"]
