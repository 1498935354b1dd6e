"""The pyfuse3 adapter of a read-only mount: translates kernel requests into vfs calls.

Errors become errno in adapter.to_errno; reads go through reads.ChunkReads (cache hits on
the event loop, misses and read-ahead in worker threads). Snapshots never change, so files
are opened with keep_cache and entries carry long timeouts; ref listings get short ones.
"""

from __future__ import annotations

import errno
import logging
import os

import pyfuse3

from ..adapter import Handles, entry_attributes, handler, statfs_empty
from ..materialize import TieredChunks
from ..model import FileHandleT, InodeT
from ..reads import ChunkReads, OpenContent
from .vfs import LONG, VFS, Node

log = logging.getLogger(__name__)


def erofs(*names: str):
    """Every write-side request answers EROFS: the mount is read-only."""
    def deco(cls):
        for n in names:
            async def refuse(self, *args, **kwargs):
                raise pyfuse3.FUSEError(errno.EROFS)
            refuse.__name__ = n
            setattr(cls, n, refuse)
        return cls
    return deco


@erofs("setattr", "mknod", "mkdir", "unlink", "rmdir", "symlink", "rename", "link", "write",
       "create", "setxattr", "removexattr", "fsync", "fsyncdir")
class CoralOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, vfs: VFS, threads: int = 2, tier: TieredChunks | None = None,
                 prefetch: list[str] | None = None) -> None:
        super().__init__()
        self.vfs = vfs
        self.reads = ChunkReads(vfs.repo.odb, threads, tier=tier)
        self.prefetch = prefetch if tier is not None and vfs.root_commit is not None else None
        self.files: Handles[OpenContent] = Handles()
        self.dirs: Handles[list[tuple[str, Node]]] = Handles()
        self.uid, self.gid = os.getuid(), os.getgid()
        vfs.stats = self.stats  # .coral/stats.json shows these counters

    def start(self, nursery) -> None:
        """Background work of a serving mount: read-ahead, and ``--prefetch``."""
        self.reads.start(nursery)
        if self.prefetch:
            snap = self.vfs.snapshot(self.vfs.root_commit)
            nursery.start_soon(self.reads.prefetch_all, lambda: snap.chunk_plan(self.prefetch))

    # -- attributes ----------------------------------------------------------------------
    def _attr(self, node: Node, entry_timeout: float = LONG) -> pyfuse3.EntryAttributes:
        # A snapshot's link knows its size (its File's); HEAD's target is read each time.
        size = len(self.vfs.link_target(node)) if node.kind == "link" and not node.size else node.size
        return entry_attributes(node.ino, node.mode, node.st_nlink, size, node.mtime_ns,
                                self.uid, self.gid, node.attr_timeout, entry_timeout)

    # -- lookups -------------------------------------------------------------------------
    @handler
    async def lookup(self, parent_inode: InodeT, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        node = self.vfs.lookup(parent_inode, os.fsdecode(name))
        return self._attr(node, self.vfs.entry_timeout(parent_inode))

    @handler
    async def getattr(self, inode: InodeT, ctx=None) -> pyfuse3.EntryAttributes:
        return self._attr(self.vfs.node(inode))

    @handler
    async def forget(self, inode_list: list[tuple[InodeT, int]]) -> None:
        for ino, n in inode_list:
            self.vfs.forget(ino, n)

    @handler
    async def readlink(self, inode: InodeT, ctx=None) -> bytes:
        return self.vfs.readlink(inode)

    @handler
    async def access(self, inode: InodeT, mode: int, ctx=None) -> bool:
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        self.vfs.node(inode)
        return True

    # -- directories ---------------------------------------------------------------------
    @handler
    async def opendir(self, inode: InodeT, ctx=None) -> FileHandleT:
        return self.dirs.add(sorted(self.vfs.children(inode).items()))

    @handler
    async def readdir(self, fh: FileHandleT, start_id: int, token) -> None:
        entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            name, node = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attr(node), i + 1):
                return
            self.vfs.remember(node)  # readdirplus: the kernel now holds a reference

    @handler
    async def releasedir(self, fh: FileHandleT) -> None:
        self.dirs.pop(fh)

    # -- files ---------------------------------------------------------------------------
    @handler
    async def open(self, inode: InodeT, flags: int, ctx=None) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.vfs.node(inode)
        content = self.vfs.open(inode)
        fh = self.files.add(OpenContent(content))
        fi = pyfuse3.FileInfo(fh=fh)
        fi.keep_cache = not node.dynamic  # snapshots never change; stats.json does
        fi.direct_io = node.dynamic
        return fi

    @handler
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        f = self.files[fh]
        log.debug("read fh=%d off=%d size=%d", fh, off, size)
        return await self.reads.read(f, off, size)

    @handler
    async def release(self, fh: FileHandleT) -> None:
        self.files.pop(fh)

    @handler
    async def flush(self, fh: FileHandleT) -> None:
        return None

    # -- the rest ------------------------------------------------------------------------
    @handler
    async def statfs(self, ctx=None) -> pyfuse3.StatvfsData:
        return statfs_empty()

    @handler
    async def getxattr(self, inode: InodeT, name: bytes, ctx=None) -> bytes:
        self.vfs.node(inode)
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @handler
    async def listxattr(self, inode: InodeT, ctx=None) -> list[bytes]:
        self.vfs.node(inode)
        return []

    def stats(self) -> dict:
        return {**self.reads.stats(), "inodes_known": self.vfs.known(), "open_files": len(self.files)}
