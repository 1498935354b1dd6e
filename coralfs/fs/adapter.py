"""What both pyfuse3 adapters share: the one errno mapping, the handler decorator, entry
attributes and a handle table.

Only FUSEError leaves a handler. Domain errors become errno in :func:`to_errno`: NotFound
-> ENOENT, BadHandle -> EBADF, corrupt, missing or unfetchable (remote) objects -> EIO
(the object id logged), an OSError keeps its errno (ENOSPC from the spool reaches the
writer as ENOSPC). Anything else is a bug: it is logged with its traceback and answered
EIO, never a quiet ENOENT.
"""

from __future__ import annotations

import errno
import functools
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import pyfuse3

from ..objects.errors import CorruptObject, ObjectNotFound, ObjectUnavailable
from .model import BadHandle, FileHandleT, InodeT, NotFound

log = logging.getLogger(__name__)

BLKSIZE = 1 << 20
# Answered without a log line: what a caller asking for a name it does not know expects.
QUIET_ERRNOS = (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY)


def to_errno(e: BaseException, where: str) -> pyfuse3.FUSEError:
    """The one place domain errors become errno."""
    if isinstance(e, pyfuse3.FUSEError):
        return e
    if isinstance(e, CorruptObject):
        log.error("%s: corrupt object %s: %s", where, e.object_id, e.why)
        return pyfuse3.FUSEError(errno.EIO)
    if isinstance(e, ObjectNotFound):
        log.error("%s: missing object %s", where, e.object_id)
        return pyfuse3.FUSEError(errno.EIO if where == "read" else errno.ENOENT)
    if isinstance(e, ObjectUnavailable):
        log.error("%s: object %s not served: %s", where, e.object_id, e)
        return pyfuse3.FUSEError(errno.EIO)
    if isinstance(e, NotFound):
        return pyfuse3.FUSEError(errno.ENOENT)
    if isinstance(e, BadHandle):
        log.warning("%s: %s", where, e)
        return pyfuse3.FUSEError(errno.EBADF)
    if isinstance(e, NotADirectoryError):
        return pyfuse3.FUSEError(errno.ENOTDIR)
    if isinstance(e, IsADirectoryError):
        return pyfuse3.FUSEError(errno.EISDIR)
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        log.error("%s: %s", where, e)
        return pyfuse3.FUSEError(errno.ENOSPC)
    if isinstance(e, OSError) and e.errno:
        if e.errno not in QUIET_ERRNOS:
            log.info("%s: %s", where, e)
        return pyfuse3.FUSEError(e.errno)
    log.error("%s: unexpected error", where, exc_info=e)
    return pyfuse3.FUSEError(errno.EIO)


F = TypeVar("F", bound=Callable[..., Awaitable])


def handler(fn: F) -> F:
    """A pyfuse3 request handler: whatever it raises reaches the kernel as an errno."""
    @functools.wraps(fn)
    async def run(self, *args, **kwargs):
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:  # noqa: BLE001 - translated to errno in one place
            raise to_errno(e, fn.__name__) from None
    return run  # type: ignore[return-value]


def entry_attributes(ino: InodeT, mode: int, nlink: int, size: int, mtime_ns: int, uid: int, gid: int,
                     attr_timeout: float, entry_timeout: float, *, atime_ns: int | None = None,
                     ctime_ns: int | None = None) -> pyfuse3.EntryAttributes:
    """What the kernel is told about an inode (the same shape for every mount; atime and
    ctime are mtime unless given)."""
    a = pyfuse3.EntryAttributes()
    a.st_ino, a.st_mode, a.st_nlink = ino, mode, nlink
    a.st_uid, a.st_gid = uid, gid
    a.st_size = size
    a.st_blksize = BLKSIZE
    a.st_blocks = (size + 511) // 512
    a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = mtime_ns
    if atime_ns is not None:
        a.st_atime_ns = atime_ns
    if ctime_ns is not None:
        a.st_ctime_ns = ctime_ns
    a.generation = 0
    a.attr_timeout = attr_timeout
    a.entry_timeout = entry_timeout
    return a


T = TypeVar("T")


class Handles(Generic[T]):
    """Open handles of one kind (files or directories): numbers given out, looked up and
    released; an unknown number is BadHandle (EBADF), never a KeyError."""

    def __init__(self) -> None:
        self._open: dict[FileHandleT, T] = {}
        self._next = 1

    def add(self, value: T) -> FileHandleT:
        fh = FileHandleT(self._next)
        self._next += 1
        self._open[fh] = value
        return fh

    def __getitem__(self, fh: FileHandleT) -> T:
        try:
            return self._open[fh]
        except KeyError:
            raise BadHandle(f"no open handle {fh}") from None

    def pop(self, fh: FileHandleT) -> T | None:
        return self._open.pop(fh, None)

    def __len__(self) -> int:
        return len(self._open)


def statfs_empty() -> pyfuse3.StatvfsData:
    """statfs of a mount with nothing to allocate (a snapshot)."""
    s = pyfuse3.StatvfsData()
    s.f_bsize = s.f_frsize = BLKSIZE
    s.f_blocks = s.f_bfree = s.f_bavail = 0
    s.f_files = s.f_ffree = s.f_favail = 0
    s.f_namemax = 255
    return s


__all__ = ["BLKSIZE", "Handles", "entry_attributes", "handler", "statfs_empty", "to_errno"]
