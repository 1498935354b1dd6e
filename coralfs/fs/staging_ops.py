"""The pyfuse3 adapter of a writable (staging) mount: translates kernel requests into
StageFS calls.

Writes are written behind: a write is answered once it is queued (at most WRITE_QUEUE
requests, so memory stays bounded), and one task applies the queue in order with pwrite
in a worker thread. The kernel sends a writer's next request meanwhile, so moving bytes
through FUSE overlaps with writing them to the spool. Everything that must see the bytes
waits for the spool's queue to drain first: reads of that file, truncation, fsync, close
(flush), commits and stashes. A failed pwrite (ENOSPC) is reported by the next write,
fsync or close of that file.

Changes to the staging area (namespace changes, writes, copies into the spool, commits,
stashes) run one at a time under ``mutex``; reads run alongside. Copies of committed files
into the spool, reads of committed bytes and commits run in worker threads. Errors become
errno in adapter.to_errno (an OSError keeps its errno: ENOSPC from the spool reaches the
writer as ENOSPC).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time

import pyfuse3
import trio

from ..objects.durable import start_writeback
from .content import Stored
from .adapter import Handles, entry_attributes, handler
from .reads import ChunkReads, OpenContent
from .stagefs import CONTROL_INO, VIRTUAL, Attr, StageFS

log = logging.getLogger(__name__)

TIMEOUT = 1.0
AUTO_POLL = 0.2
WRITE_QUEUE = 16


def _write_out(fd: int, buf: bytes, off: int) -> OSError | None:
    """Apply one queued write; its failure is returned, to be told to the writer later."""
    try:
        n = os.pwrite(fd, buf, off)
    except OSError as e:
        return e
    if n != len(buf):
        return OSError(errno.EIO, f"short write to the spool ({n} of {len(buf)} bytes)")
    start_writeback(fd, off, n)  # so the fsync at close has little left to do
    return None


class StagingOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, sfs: StageFS, threads: int = 2) -> None:
        super().__init__()
        self.sfs = sfs
        self.mutex = trio.Lock()
        self.reads = ChunkReads(sfs.repo.odb, threads)
        self._committed: dict[int, OpenContent] = {}  # fh -> reads of committed bytes
        self.dirs: Handles[list[tuple[str, Attr]]] = Handles()
        self.uid, self.gid = os.getuid(), os.getgid()
        self._queue: trio.MemorySendChannel | None = None
        self.nursery: trio.Nursery | None = None
        self._drained: dict[str, trio.Event] = {}

    def start(self, nursery: trio.Nursery) -> None:
        """Background work of a serving mount: the write-behind queue, auto-commits."""
        self.nursery = nursery
        self.reads.start(nursery)
        send, recv = trio.open_memory_channel(WRITE_QUEUE)
        self._queue = send
        nursery.start_soon(self._apply_writes, recv)
        if self.sfs.auto is not None:
            nursery.start_soon(self.auto_commit_loop)

    async def _apply_writes(self, recv) -> None:
        try:
            async for spool, fd, off, buf in recv:
                # Shielded: a write taken off the queue is applied even when shutdown
                # begins (an unshielded call could be cancelled before it starts).
                with trio.CancelScope(shield=True):
                    err = await trio.to_thread.run_sync(_write_out, fd, buf, off)
                self._applied(spool, err)
        finally:  # shutting down (a signal): what was acknowledged still reaches the spool
            while True:
                try:
                    spool, fd, off, buf = recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                self._applied(spool, _write_out(fd, buf, off))

    def _applied(self, spool: str, err: OSError | None) -> None:
        if err is not None:
            log.error("write to the spool of %s failed: %s", spool, err)
        self.sfs.end_write(spool, err)
        if spool not in self.sfs.pending:
            ev = self._drained.pop(spool, None)
            if ev is not None:
                ev.set()

    async def _drain(self, spool: str | None) -> None:
        while spool is not None and spool in self.sfs.pending:
            ev = self._drained.get(spool)
            if ev is None:
                ev = self._drained[spool] = trio.Event()
            await ev.wait()

    async def _drain_all(self) -> None:
        for spool in list(self.sfs.pending):
            await self._drain(spool)

    def _entry(self, a: Attr) -> pyfuse3.EntryAttributes:
        return entry_attributes(a.ino, a.mode, a.nlink, a.size, a.mtime_ns, self.uid, self.gid,
                                0 if a.ino in VIRTUAL else TIMEOUT, TIMEOUT)

    async def _thread(self, fn, *args):
        return await self.reads.in_thread(fn, *args)

    # -- names ---------------------------------------------------------------------------
    @handler
    async def lookup(self, parent_inode, name, ctx=None):
        return self._entry(self.sfs.lookup(parent_inode, os.fsdecode(name)))

    @handler
    async def getattr(self, inode, ctx=None):
        return self._entry(self.sfs.attr(inode))

    @handler
    async def forget(self, inode_list):
        for ino, n in inode_list:
            self.sfs.forget(ino, n)

    @handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        async with self.mutex:
            await self._drain_all()  # queued writes would move the size and mtime set here
            if fields.update_size:
                if self.sfs.needs_copy_for_truncate(inode):
                    await self._thread(self.sfs.copy_up, inode, attr.st_size == 0)
                self.sfs.truncate(inode, attr.st_size, fh)
            if fields.update_mode:
                self.sfs.chmod(inode, attr.st_mode)
            if fields.update_mtime:
                self.sfs.set_mtime(inode, attr.st_mtime_ns)
        return self._entry(self.sfs.attr(inode))

    @handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        async with self.mutex:
            return self._entry(self.sfs.mkdir(parent_inode, os.fsdecode(name), mode))

    @handler
    async def unlink(self, parent_inode, name, ctx):
        async with self.mutex:
            self.sfs.unlink(parent_inode, os.fsdecode(name))

    @handler
    async def rmdir(self, parent_inode, name, ctx):
        async with self.mutex:
            self.sfs.rmdir(parent_inode, os.fsdecode(name))

    @handler
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        async with self.mutex:
            self.sfs.rename(parent_inode_old, os.fsdecode(name_old), parent_inode_new, os.fsdecode(name_new), flags)

    async def symlink(self, parent_inode, name, target, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    @handler
    async def access(self, inode, mode, ctx=None):
        self.sfs.attr(inode)
        return True

    # -- directories ---------------------------------------------------------------------
    @handler
    async def opendir(self, inode, ctx=None):
        return self.dirs.add(self.sfs.readdir(inode))

    @handler
    async def readdir(self, fh, start_id, token):
        entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            name, a = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(a), i + 1):
                return
            self.sfs.remember(a.ino)

    @handler
    async def releasedir(self, fh):
        self.dirs.pop(fh)

    @handler
    async def fsyncdir(self, fh, datasync):
        return None  # every namespace change is durable when it returns

    # -- files ---------------------------------------------------------------------------
    def _info(self, fh: int, ino: int, flags: int) -> pyfuse3.FileInfo:
        fi = pyfuse3.FileInfo(fh=fh)
        fi.keep_cache = False
        # Write-only handles bypass the kernel's page cache (a write-only file cannot be
        # mapped, so nothing is lost): saves run faster and steadier (docs/decisions.md).
        fi.direct_io = ino in VIRTUAL or flags & os.O_ACCMODE == os.O_WRONLY
        return fi

    @handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        async with self.mutex:
            fh, a = self.sfs.create(parent_inode, os.fsdecode(name), mode)
        return self._info(fh, a.ino, flags), self._entry(a)

    @handler
    async def open(self, inode, flags, ctx=None):
        if inode == CONTROL_INO:  # the caller's uid decides (write() gets no request context)
            return self._info(self.sfs.open(inode, flags, ctx.uid if ctx is not None else None), inode, flags)
        if self.sfs.needs_copy(inode, flags):
            async with self.mutex:
                if self.sfs.needs_copy(inode, flags):
                    await self._thread(self.sfs.copy_up, inode, True)
                return self._info(self.sfs.open(inode, flags), inode, flags)
        if flags & os.O_ACCMODE != os.O_RDONLY and inode not in VIRTUAL:
            async with self.mutex:
                return self._info(self.sfs.open(inode, flags), inode, flags)
        return self._info(self.sfs.open(inode, flags), inode, flags)

    @handler
    async def read(self, fh, off, size):
        view = self.sfs.read_view(fh)
        if view is not None:  # committed bytes: decoded lazily, with read-ahead
            got = self._committed.get(fh)
            if got is None or got.content.view is not view:
                got = self._committed[fh] = OpenContent(Stored(view))
            return await self.reads.read(got, off, size)
        self._committed.pop(fh, None)
        await self._drain(self.sfs.handle(fh).spool)
        return self.sfs.read(fh, off, size)

    @handler
    async def write(self, fh, off, buf):
        h = self.sfs.handle(fh)
        if h.ino == CONTROL_INO:
            async with self.mutex:
                n = self.sfs.write(fh, off, buf)
                while b"\n" in h.request:  # each complete line is a request; the last answers
                    await self._drain_all()
                    await self._control(h)
            return n
        if self.sfs.needs_copy_for_write(fh):  # the first write to a committed file
            async with self.mutex:
                if self.sfs.needs_copy_for_write(fh):
                    await self._thread(self.sfs.copy_up, h.ino, False)
                    self.sfs.needs_copy_for_write(fh)  # the handle now writes to the copy
        if self._queue is None:  # not serving (the ops tests): write through
            async with self.mutex:
                return self.sfs.write(fh, off, buf)
        async with self.mutex:  # a commit or stash in progress finishes first
            fd = self.sfs.begin_write(fh, off, len(buf))
        await self._queue.send((h.spool, fd, off, buf))
        return len(buf)

    async def _control(self, h) -> None:
        req = self.sfs.next_request(h)
        if req is None:
            return  # malformed: the handle holds the error answer
        log.info("control request: %s", req.get("op"))
        op = req.get("op")
        # The tree the kernel reads is only changed on this thread: a commit first moves
        # the staged changes onto a branch head that moved (quick), then ingests in a
        # worker thread; stashes (hard links and one transaction) run here.
        if op == "commit":
            answer = self.sfs.run_request({"op": "rebase"})
            if answer.get("ok"):
                answer = await trio.to_thread.run_sync(self.sfs.run_request, req)
        else:
            answer = self.sfs.run_request(req)
        if op in ("stash", "stash-pop") and answer.get("ok"):
            self._invalidate_soon()
        h.answer = json.dumps(answer).encode()

    def _invalidate_soon(self) -> None:
        """After a stash the tree changed behind the kernel: drop what it cached."""
        if self.nursery is None:
            return
        inos = list(self.sfs.lookups)

        async def run() -> None:
            for ino in inos:
                try:
                    await trio.to_thread.run_sync(pyfuse3.invalidate_inode, ino, False)
                except (OSError, pyfuse3.FUSEError):
                    pass
        self.nursery.start_soon(run)

    @handler
    async def flush(self, fh):
        h = self.sfs.handles.get(fh)
        if h is not None and h.spool is not None:
            await self._drain(h.spool)
        if h is not None and (h.dirty or h.spool in self.sfs.errors):
            await self._thread(self.sfs.flush, fh)

    @handler
    async def fsync(self, fh, datasync):
        await self._drain(self.sfs.handle(fh).spool)
        await self._thread(self.sfs.fsync, fh)

    @handler
    async def release(self, fh):
        self._committed.pop(fh, None)
        h = self.sfs.handles.get(fh)
        if h is not None:
            await self._drain(h.spool)
        async with self.mutex:
            self.sfs.release(fh)

    # -- the rest ------------------------------------------------------------------------
    @handler
    async def statfs(self, ctx=None):
        v = os.statvfs(self.sfs.stage.spool_dir)
        s = pyfuse3.StatvfsData()
        s.f_bsize, s.f_frsize = v.f_bsize, v.f_frsize
        s.f_blocks, s.f_bfree, s.f_bavail = v.f_blocks, v.f_bfree, v.f_bavail
        s.f_files, s.f_ffree, s.f_favail = v.f_files, v.f_ffree, v.f_favail
        s.f_namemax = 255
        return s

    @handler
    async def getxattr(self, inode, name, ctx=None):
        try:
            return self.sfs.getxattr(inode, name)
        except OSError as e:
            if e.errno == errno.ENODATA:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
            raise

    @handler
    async def setxattr(self, inode, name, value, ctx=None):
        async with self.mutex:
            self.sfs.setxattr(inode, name, value)

    @handler
    async def listxattr(self, inode, ctx=None):
        return self.sfs.listxattr(inode)

    @handler
    async def removexattr(self, inode, name, ctx=None):
        async with self.mutex:
            try:
                self.sfs.removexattr(inode, name)
            except OSError as e:
                if e.errno == errno.ENODATA:
                    raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
                raise

    # -- auto-commit ---------------------------------------------------------------------
    async def auto_commit_loop(self) -> None:
        """Commit by itself when the rules in StageFS.auto say so."""
        while True:
            await trio.sleep(AUTO_POLL)
            if not self.sfs.auto_due(time.monotonic()):
                continue
            async with self.mutex:
                if not self.sfs.auto_due(time.monotonic()):
                    continue
                await self._drain_all()
                try:
                    self.sfs.stage.rebase()
                    out = await trio.to_thread.run_sync(self.sfs.auto_commit)
                    log.info("auto-commit: %s", out.get("commit") or out.get("message"))
                except Exception as e:  # noqa: BLE001 - shown in status; the spool keeps the changes
                    delay = self.sfs.auto_failed(e, time.monotonic())
                    log.error("auto-commit failed (attempt %d, next in %.0f s unless a file changes): %s",
                              self.sfs.auto_failures, delay, e)


__all__ = ["StagingOperations"]
