"""What a staging area holds: its rows (:class:`Entry`), the changes it reports
(:class:`Change`), its error, and the checks and mode conversions every part shares."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ..objects.errors import CoralError
from ..objects.ids import ObjectId
from ..objects.kinds import MODE_EXEC, validate_path

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


def perm_of(mode: int) -> int:
    """Permission bits of a file from its tree mode (and back: ingest.tree_mode)."""
    return 0o755 if mode == MODE_EXEC else 0o644


def check_path(path: str) -> None:
    if path.split("/", 1)[0] == RESERVED:
        raise OSError(errno.EPERM, f"{RESERVED} is reserved for coralfs")
    try:
        validate_path(path)
    except CoralError:
        raise OSError(errno.EINVAL, f"invalid path {path!r}") from None
