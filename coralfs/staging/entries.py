"""What a staging area holds: its rows (:class:`Entry`), the changes it reports
(:class:`Change`), its error, and the checks and mode conversions every part shares."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from ..objects.errors import CoralError
from ..objects.ids import ObjectId
from ..objects.kinds import MODE_DIR, MODE_EXEC, MODE_SYMLINK, TreeEntry, validate_path

RESERVED = ".coral"
COPY_BLOCK = 4 << 20
# Space held back on the spool's file system so the manifest can still record an unlink
# (which frees space) when writers have filled the disk.
RESERVE = 1 << 20
NAME_MAX = 255    # bytes of one name: what every local file system (and export) takes
PATH_MAX = 4095   # bytes of a whole path below the mount (PATH_MAX less its NUL)


class StagingError(CoralError):
    exit_code = 7


@dataclass
class Entry:
    """One row of the manifest (``entries`` in stage.db): a name of the working tree.

    - ``kind``: "f" file, "d" directory, "l" symbolic link.
    - ``mode``: the 12 permission bits (S_ISUID, S_ISGID, sticky, rwx x3), as chmod set
      them; 0o777 for a link. Commits record only what ``ingest.tree_mode`` takes (the
      executable bit) unless asked for more.
    - ``uid``, ``gid``: the owner (the creating process's, or the mount owner's for rows
      read from a commit and rows of manifests older than these columns).
    - ``mtime_ns``, ``atime_ns``, ``ctime_ns``: the times stat shows. For a file whose
      bytes are in the spool, mtime and ctime are also read from the spool file (a write
      moves them there without a manifest transaction); ``atime`` moves only by utimensat.
    - ``fid``: the committed File holding the bytes (unchanged or renamed files), or
    - ``spool``: the spool file (``spool/NAME``) holding bytes written since the base.
    - ``target``: a link's target text (kind "l"); never followed by coralfs.
    - ``link``: the hard-link group. Rows with the same ``link`` are names of ONE inode:
      they share content (the same ``spool`` or the same ``fid``), mode, owner and times
      (one Entry object in memory; every change rewrites all their rows), and st_nlink is
      the number of rows in the group. A commit turns the rows of a group (equivalently:
      rows sharing one spool name) into entries of the same File object. Rows that merely
      hold the same ``fid`` with ``link`` None are separate files with equal content.
    """

    kind: str                 # "f", "d" or "l"
    mode: int                 # the 12 permission bits
    mtime_ns: int
    fid: ObjectId | None = None   # committed content
    spool: str | None = None      # written content (spool/NAME)
    uid: int | None = None        # None: the mount owner (this process)
    gid: int | None = None
    atime_ns: int | None = None   # None: mtime_ns
    ctime_ns: int | None = None
    target: str | None = None     # kind "l": the link's target
    link: str | None = None       # hard-link group id (None: one name)

    def __post_init__(self) -> None:
        if self.uid is None:
            self.uid = os.getuid()
        if self.gid is None:
            self.gid = os.getgid()
        if self.atime_ns is None:
            self.atime_ns = self.mtime_ns
        if self.ctime_ns is None:
            self.ctime_ns = self.mtime_ns


@dataclass
class Change:
    status: str   # added, modified, deleted
    path: str
    size: int = 0
    kind: str = "f"             # "f" file, "d" (empty) directory, "l" symbolic link
    target: str | None = None   # a link's target

    def as_dict(self, size: bool = True) -> dict:
        """As status and commit answers show it (kind and target only for links and
        directories, so file changes look as they always did)."""
        out: dict = {"status": self.status, "path": self.path}
        if size:
            out["size"] = self.size
        if self.kind != "f":
            out["kind"] = self.kind
        if self.target is not None:
            out["target"] = self.target
        return out


def entry_of_tree(te: TreeEntry, mtime_ns: int, target=None) -> Entry:
    """The row of a committed tree entry: a file, an empty directory, or a symbolic link
    (``target()`` reads its target text from the repository, called only for links)."""
    if te.mode == MODE_DIR:
        return Entry("d", 0o755, mtime_ns)
    if te.mode == MODE_SYMLINK:
        return Entry("l", 0o777, mtime_ns, te.file, target=target())
    return Entry("f", perm_of(te.mode), mtime_ns, te.file)


def perm_of(mode: int) -> int:
    """Permission bits of a file from its tree mode (and back: ingest.tree_mode)."""
    return 0o755 if mode == MODE_EXEC else 0o644


def check_name(path: str) -> None:
    """ENAMETOOLONG for a name over NAME_MAX bytes or a path over PATH_MAX."""
    b = os.fsencode(path)
    if len(b) > PATH_MAX:
        raise OSError(errno.ENAMETOOLONG, f"a path is at most {PATH_MAX} bytes")
    if any(len(part) > NAME_MAX for part in b.split(b"/")):
        raise OSError(errno.ENAMETOOLONG, f"a name is at most {NAME_MAX} bytes")


def check_path(path: str) -> None:
    check_name(path)
    if path.split("/", 1)[0] == RESERVED:
        raise OSError(errno.EPERM, f"{RESERVED} is reserved for coralfs")
    try:
        validate_path(path)
    except CoralError:
        raise OSError(errno.EINVAL, f"invalid path {path!r}") from None
