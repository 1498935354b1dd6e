"""Who asks, and what POSIX lets them change: the rules of chmod, chown, and of writes
that clear set-ID bits, applied by the writable mount to the owner and mode it keeps per
entry (the kernel enforces access from those same fields: default_permissions).

A :class:`Caller` comes from the FUSE request (uid, gid, pid, umask); its supplementary
groups are read from ``/proc/PID/status`` only when a rule needs them. ``None`` as the
caller means the mount's owner without a kernel request (the ops tier, the daemon itself).
Only uid 0 is privileged, as on Linux without capabilities.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass, field

from ...staging import Entry

SETID = stat.S_ISUID | stat.S_ISGID
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def groups_of(pid: int) -> frozenset[int]:
    """The supplementary groups of process ``pid`` (empty when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return frozenset()


@dataclass
class Caller:
    uid: int
    gid: int
    pid: int = 0
    umask: int = 0
    groups: frozenset[int] | None = field(default=None)  # None: read from /proc/PID when needed

    @classmethod
    def of(cls, ctx) -> Caller | None:
        """The caller of a FUSE request (pyfuse3 RequestContext), None without one."""
        if ctx is None:
            return None
        return cls(ctx.uid, ctx.gid, getattr(ctx, "pid", 0), getattr(ctx, "umask", 0))

    @property
    def root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        if gid == self.gid:
            return True
        if self.groups is None:
            self.groups = groups_of(self.pid) if self.pid else frozenset()
        return gid in self.groups


def creation_mode(mode: int, caller: Caller | None) -> int:
    """The permission bits of a new entry: what the call asked, less the caller's umask
    (the kernel may have applied it already: applying it twice changes nothing). 0 stays 0."""
    mode &= 0o7777
    return mode & ~caller.umask if caller is not None else mode


def chmod_mode(e: Entry, mode: int, caller: Caller | None) -> int:
    """The mode chmod(``mode``) gives ``e``: EPERM unless the caller owns it or is root;
    S_ISGID is dropped when a non-root caller is not in the file's group."""
    mode &= 0o7777
    if caller is None or caller.root:
        return mode
    if caller.uid != e.uid:
        if mode | SETID == e.mode | SETID and not mode & ~e.mode:
            # Only set-ID bits cleared: what the kernel sends when anyone's write or
            # truncate removes them (file_remove_privs), not a chmod of the caller's.
            return mode
        raise OSError(errno.EPERM, "only the owner (or root) changes the mode")
    if mode & stat.S_ISGID and not caller.in_group(e.gid):
        mode &= ~stat.S_ISGID
    return mode


def chown_change(e: Entry, uid: int | None, gid: int | None,
                 caller: Caller | None) -> tuple[int | None, int | None, int | None]:
    """What chown(``uid``, ``gid``) changes (None or -1: unchanged): (uid, gid, mode or
    None). Only root changes the owner; the owner may change the group to one of its
    groups; a non-root caller's chown of a non-directory clears S_ISUID and S_ISGID."""
    uid = None if uid in (None, -1, 0xFFFFFFFF) else uid
    gid = None if gid in (None, -1, 0xFFFFFFFF) else gid
    if caller is None or caller.root:
        return uid, gid, None
    if uid is not None and (uid != e.uid or caller.uid != e.uid):
        raise OSError(errno.EPERM, "only root changes the owner")
    if gid is not None and (caller.uid != e.uid or (gid != e.gid and not caller.in_group(gid))):
        raise OSError(errno.EPERM, "the owner may change the group only to one of its groups")
    mode = None
    if (uid is not None or gid is not None) and e.kind != "d" and e.mode & SETID:
        mode = e.mode & ~SETID
    return uid, gid, mode


def write_clears(e: Entry, uid: int | None) -> int | None:
    """The mode a write or truncate by ``uid`` leaves (None: unchanged): a non-root
    writer clears S_ISUID and S_ISGID, as Linux does without CAP_FSETID."""
    if uid is None or uid == 0 or e.kind != "f" or not e.mode & SETID:
        return None
    return e.mode & ~SETID


def fallocate(fd: int, mode: int, off: int, length: int) -> None:
    """fallocate(2) on a spool file (Python's os has only posix_fallocate, which cannot
    keep the size or punch holes)."""
    if _libc.fallocate(fd, mode, off, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def new_owner(caller: Caller | None) -> tuple[int | None, int | None]:
    """uid and gid of what ``caller`` creates (None: the mount owner's)."""
    return (None, None) if caller is None else (caller.uid, caller.gid)


__all__ = ["FALLOC_FL_KEEP_SIZE", "FALLOC_FL_PUNCH_HOLE", "Caller", "chmod_mode", "chown_change", "creation_mode",
           "fallocate", "groups_of", "new_owner", "write_clears"]
