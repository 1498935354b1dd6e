"""The pyfuse3 adapter: translates kernel requests into vfs calls, nothing more.

Only FUSEError leaves a handler: domain errors become errno in :func:`_errno` (missing ->
ENOENT, corrupt -> EIO with the object id logged). Decoding runs in worker threads
under a CapacityLimiter; cache hits are answered on the event loop; the chunks
readahead.py expects a reader to want next are decoded in the background. Snapshots never change, so files are opened with
keep_cache and entries carry long timeouts; ref listings get short ones.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sqlite3
from dataclasses import dataclass, field

import pyfuse3
import trio

from ..objects.errors import CorruptObject, ObjectNotFound
from .content import Content
from .readahead import ReadAhead
from .vfs import LONG, SHORT, VFS, Node, NotFound

log = logging.getLogger(__name__)

BLKSIZE = 1 << 20


def _errno(e: BaseException, where: str) -> pyfuse3.FUSEError:
    """The one place domain errors become errno."""
    if isinstance(e, pyfuse3.FUSEError):
        return e
    if isinstance(e, CorruptObject):
        log.error("%s: corrupt object %s: %s", where, e.object_id, e.why)
        return pyfuse3.FUSEError(errno.EIO)
    if isinstance(e, ObjectNotFound):
        log.error("%s: missing object %s", where, e.object_id)
        return pyfuse3.FUSEError(errno.EIO if where == "read" else errno.ENOENT)
    if isinstance(e, (NotFound, KeyError)):
        return pyfuse3.FUSEError(errno.ENOENT)
    if isinstance(e, NotADirectoryError):
        return pyfuse3.FUSEError(errno.ENOTDIR)
    if isinstance(e, IsADirectoryError):
        return pyfuse3.FUSEError(errno.EISDIR)
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        log.error("%s: %s", where, e)
        return pyfuse3.FUSEError(errno.ENOSPC)
    if isinstance(e, OSError) and e.errno:
        if e.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
            log.info("%s: %s", where, e)
        return pyfuse3.FUSEError(e.errno)
    log.exception("%s: unexpected error", where)
    return pyfuse3.FUSEError(errno.EIO)


def entry_attributes(ino: int, mode: int, nlink: int, size: int, mtime_ns: int, uid: int, gid: int,
                     attr_timeout: float, entry_timeout: float) -> pyfuse3.EntryAttributes:
    """What the kernel is told about an inode (the same shape for every mount)."""
    a = pyfuse3.EntryAttributes()
    a.st_ino, a.st_mode, a.st_nlink = ino, mode, nlink
    a.st_uid, a.st_gid = uid, gid
    a.st_size = size
    a.st_blksize = BLKSIZE
    a.st_blocks = (size + 511) // 512
    a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = mtime_ns
    a.generation = 0
    a.attr_timeout = attr_timeout
    a.entry_timeout = entry_timeout
    return a


def handler(fn):
    @functools.wraps(fn)
    async def run(self, *args, **kwargs):
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:  # noqa: BLE001 - translated to errno in one place
            raise _errno(e, fn.__name__) from None
    return run


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


@dataclass
class _Open:
    content: Content
    ahead: ReadAhead = field(default_factory=ReadAhead)


class ChunkReads:
    """Reads of stored content for an Operations class: cache hits answered on the event
    loop, misses decoded in worker threads, and the chunks readahead.py expects next
    decoded in the background (each once: a read needing one waits for it)."""

    def _init_reads(self, odb, threads: int) -> None:
        self.odb = odb
        # Demand reads and prefetches have their own threads: a read never queues behind
        # prefetches of chunks it does not need yet.
        self.limiter = trio.CapacityLimiter(max(1, threads))
        self.prefetch_limiter = trio.CapacityLimiter(max(1, threads))
        self.nursery: trio.Nursery | None = None
        self._prefetching: dict = {}  # chunk id -> trio.Event set when decoded
        self.counters = {"reads": 0, "bytes_served": 0, "cache_fast_path": 0, "prefetched_chunks": 0}

    async def read_content(self, content: Content, ahead: ReadAhead, off: int, size: int) -> bytes:
        data = content.cached(off, size)
        if data is None:
            # Chunks being prefetched: wait for them rather than decode them again.
            for oid in content.chunk_ids(off, size):
                ev = self._prefetching.get(oid)
                if ev is not None:
                    await ev.wait()
            data = content.cached(off, size)
        if data is None:
            data = await trio.to_thread.run_sync(content.read, off, size, limiter=self.limiter)
        else:
            self.counters["cache_fast_path"] += 1
        wanted = ahead.after_read(content, off, len(data))
        if wanted:
            self._prefetch(wanted)
        self.counters["reads"] += 1
        self.counters["bytes_served"] += len(data)
        return data

    def _prefetch(self, ids) -> None:
        """Decode these chunks in the background (the policy lives in readahead.py)."""
        if self.nursery is None:
            return
        for oid in ids:
            if oid in self._prefetching or oid in self.odb.chunks:
                continue
            self._prefetching[oid] = trio.Event()
            self.nursery.start_soon(self._prefetch_one, oid)

    async def _prefetch_one(self, oid) -> None:
        try:
            await trio.to_thread.run_sync(self.odb.read_chunk, oid, limiter=self.prefetch_limiter)
            self.counters["prefetched_chunks"] += 1
        except Exception as e:  # noqa: BLE001 - a failed prefetch is retried by the read itself
            log.debug("prefetch of %s failed: %s", oid.hex(), e)
        finally:
            self._prefetching.pop(oid).set()


@erofs("setattr", "mknod", "mkdir", "unlink", "rmdir", "symlink", "rename", "link", "write",
       "create", "setxattr", "removexattr", "fsync", "fsyncdir")
class CoralOperations(ChunkReads, pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, vfs: VFS, threads: int = 2) -> None:
        super().__init__()
        self.vfs = vfs
        self._init_reads(vfs.repo.odb, threads)
        self.files: dict[int, _Open] = {}
        self.dirs: dict[int, list[tuple[str, Node]]] = {}
        self._next_fh = 1
        self.uid, self.gid = os.getuid(), os.getgid()
        vfs.stats = self.stats  # .coral/stats.json shows these counters

    # -- attributes ----------------------------------------------------------------------
    def _attr(self, node: Node, entry_timeout: float = LONG) -> pyfuse3.EntryAttributes:
        size = len(self.vfs.readlink(node.ino)) if node.kind == "link" else node.size
        short = node.volatile or node.kind == "link"
        return entry_attributes(node.ino, node.mode, 2 if node.kind == "dir" else 1, size, node.mtime_ns,
                                self.uid, self.gid,
                                0 if node.key[-1] == "stats.json" else (SHORT if short else LONG), entry_timeout)

    # -- lookups -------------------------------------------------------------------------
    @handler
    async def lookup(self, parent_inode, name, ctx=None):
        node = self.vfs.lookup(parent_inode, os.fsdecode(name))
        return self._attr(node, self.vfs.entry_timeout(parent_inode))

    @handler
    async def getattr(self, inode, ctx=None):
        return self._attr(self.vfs.node(inode))

    @handler
    async def forget(self, inode_list):
        for ino, n in inode_list:
            self.vfs.forget(ino, n)

    @handler
    async def readlink(self, inode, ctx=None):
        return self.vfs.readlink(inode)

    @handler
    async def access(self, inode, mode, ctx=None):
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        self.vfs.node(inode)
        return True

    # -- directories ---------------------------------------------------------------------
    @handler
    async def opendir(self, inode, ctx=None):
        entries = sorted(self.vfs.children(inode).items())
        fh = self._next_fh
        self._next_fh += 1
        self.dirs[fh] = entries
        return fh

    @handler
    async def readdir(self, fh, start_id, token):
        entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            name, node = entries[i]
            self.vfs._register(node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attr(node), i + 1):
                return
            self.vfs.remember(node)  # readdirplus: the kernel now holds a reference

    @handler
    async def releasedir(self, fh):
        self.dirs.pop(fh, None)

    # -- files ---------------------------------------------------------------------------
    @handler
    async def open(self, inode, flags, ctx=None):
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self.vfs.node(inode)
        content = self.vfs.open(inode)
        fh = self._next_fh
        self._next_fh += 1
        self.files[fh] = _Open(content)
        fi = pyfuse3.FileInfo(fh=fh)
        dynamic = node.key[-1] == "stats.json"
        fi.keep_cache = not dynamic
        fi.direct_io = dynamic
        return fi

    @handler
    async def read(self, fh, off, size):
        f = self.files[fh]
        log.debug("read fh=%d off=%d size=%d", fh, off, size)
        return await self.read_content(f.content, f.ahead, off, size)

    @handler
    async def release(self, fh):
        self.files.pop(fh, None)

    @handler
    async def flush(self, fh):
        return None

    # -- the rest ------------------------------------------------------------------------
    @handler
    async def statfs(self, ctx=None):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLKSIZE
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    @handler
    async def getxattr(self, inode, name, ctx=None):
        self.vfs.node(inode)
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    @handler
    async def listxattr(self, inode, ctx=None):
        self.vfs.node(inode)
        return []

    def stats(self) -> dict:
        odb = self.odb
        return {**self.counters, "decoded_bytes": odb.decoded_bytes, "decoded_chunks": odb.decoded_chunks,
                "cache_used": odb.chunks.used, "cache_budget": odb.chunks.budget,
                "cache_hits": odb.chunks.hits, "cache_misses": odb.chunks.misses,
                "inodes_known": self.vfs.known(), "open_files": len(self.files)}
