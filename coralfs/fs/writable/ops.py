"""The pyfuse3 adapter of a writable (staging) mount: translates kernel requests into
StageFS calls, and decides where each runs.

Writes are written behind (writeback.py). Changes to the staging area (namespace changes,
writes, copies into the spool, commits, stashes) run one at a time under ``mutex``; reads
run alongside. Copies of committed files into the spool, reads of committed bytes and
commits run in worker threads. Control requests (control.py) run after the queue drained.
Errors become errno in adapter.to_errno (an OSError keeps its errno: ENOSPC from the spool
reaches the writer as ENOSPC).
"""

from __future__ import annotations

import errno
import logging
import os
import time

import pyfuse3
import trio

from ..adapter import Handles, entry_attributes, handler
from ..content import Stored
from ..model import FileHandleT, InodeT
from ..reads import ChunkReads, OpenContent
from . import control
from .posix import Caller
from .vfs import CONTROL_INO, VIRTUAL, Attr, StageFS
from .writeback import WriteBehind

log = logging.getLogger(__name__)

TIMEOUT = 1.0
AUTO_POLL = 0.2


class StagingOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, sfs: StageFS, threads: int = 2) -> None:
        super().__init__()
        self.sfs = sfs
        self.mutex = trio.Lock()
        self.reads = ChunkReads(sfs.repo.odb, threads)
        self.writeback = WriteBehind(sfs)
        self._committed: dict[FileHandleT, OpenContent] = {}  # fh -> reads of committed bytes
        self.dirs: Handles[list[tuple[str, Attr]]] = Handles()
        self.uid, self.gid = os.getuid(), os.getgid()
        self.nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        """Background work of a serving mount: read-ahead, the write-behind queue, auto-commits."""
        self.nursery = nursery
        self.reads.start(nursery)
        self.writeback.start(nursery)
        if self.sfs.auto is not None:
            nursery.start_soon(self.auto_commit_loop)

    def _entry(self, a: Attr) -> pyfuse3.EntryAttributes:
        return entry_attributes(a.ino, a.mode, a.nlink, a.size, a.mtime_ns,
                                self.uid if a.uid is None else a.uid, self.gid if a.gid is None else a.gid,
                                0 if a.ino in VIRTUAL else TIMEOUT, TIMEOUT, atime_ns=a.atime_ns, ctime_ns=a.ctime_ns)

    async def _thread(self, fn, *args):
        return await self.reads.in_thread(fn, *args)

    # -- names ---------------------------------------------------------------------------
    @handler
    async def lookup(self, parent_inode: InodeT, name: bytes, ctx=None) -> pyfuse3.EntryAttributes:
        return self._entry(self.sfs.lookup(parent_inode, os.fsdecode(name)))

    @handler
    async def getattr(self, inode: InodeT, ctx=None) -> pyfuse3.EntryAttributes:
        return self._entry(self.sfs.attr(inode))

    @handler
    async def forget(self, inode_list: list[tuple[InodeT, int]]) -> None:
        for ino, n in inode_list:
            self.sfs.forget(ino, n)

    @handler
    async def setattr(self, inode: InodeT, attr, fields, fh: FileHandleT | None, ctx) -> pyfuse3.EntryAttributes:
        caller = Caller.of(ctx)
        async with self.mutex:
            await self.writeback.drain_all()  # queued writes would move the size and mtime set here
            if fields.update_size:
                if self.sfs.needs_copy_for_truncate(inode):
                    await self._thread(self.sfs.copy_up, inode, attr.st_size == 0)
                self.sfs.truncate(inode, attr.st_size, fh, caller)
            # The mode before the owner: a chown's request also carries the mode with set-ID
            # bits cleared, which the caller may set only while it still owns the file.
            if fields.update_mode:
                self.sfs.chmod(inode, attr.st_mode, caller)
            if fields.update_uid or fields.update_gid:
                self.sfs.chown(inode, attr.st_uid if fields.update_uid else None,
                               attr.st_gid if fields.update_gid else None, caller)
            if fields.update_atime or fields.update_mtime:  # UTIME_NOW arrives as the time now
                self.sfs.set_times(inode, attr.st_atime_ns if fields.update_atime else None,
                                   attr.st_mtime_ns if fields.update_mtime else None)
        return self._entry(self.sfs.attr(inode))

    @handler
    async def mkdir(self, parent_inode: InodeT, name: bytes, mode: int, ctx) -> pyfuse3.EntryAttributes:
        async with self.mutex:
            return self._entry(self.sfs.mkdir(parent_inode, os.fsdecode(name), mode, Caller.of(ctx)))

    @handler
    async def unlink(self, parent_inode: InodeT, name: bytes, ctx) -> None:
        async with self.mutex:
            self.sfs.unlink(parent_inode, os.fsdecode(name))

    @handler
    async def rmdir(self, parent_inode: InodeT, name: bytes, ctx) -> None:
        async with self.mutex:
            self.sfs.rmdir(parent_inode, os.fsdecode(name))

    @handler
    async def rename(self, parent_inode_old: InodeT, name_old: bytes, parent_inode_new: InodeT, name_new: bytes,
                     flags: int, ctx) -> None:
        async with self.mutex:
            self.sfs.rename(parent_inode_old, os.fsdecode(name_old), parent_inode_new, os.fsdecode(name_new), flags)

    @handler
    async def symlink(self, parent_inode: InodeT, name: bytes, target: bytes, ctx) -> pyfuse3.EntryAttributes:
        async with self.mutex:
            return self._entry(self.sfs.symlink(parent_inode, os.fsdecode(name), os.fsdecode(target), Caller.of(ctx)))

    @handler
    async def readlink(self, inode: InodeT, ctx=None) -> bytes:
        return os.fsencode(self.sfs.readlink(inode))

    @handler
    async def link(self, inode: InodeT, new_parent_inode: InodeT, new_name: bytes, ctx) -> pyfuse3.EntryAttributes:
        async with self.mutex:
            return self._entry(self.sfs.link(inode, new_parent_inode, os.fsdecode(new_name)))

    @handler
    async def mknod(self, parent_inode: InodeT, name: bytes, mode: int, rdev: int, ctx) -> pyfuse3.EntryAttributes:
        self.sfs.mknod(parent_inode, os.fsdecode(name))

    @handler
    async def access(self, inode: InodeT, mode: int, ctx=None) -> bool:
        self.sfs.attr(inode)
        return True

    # -- directories ---------------------------------------------------------------------
    @handler
    async def opendir(self, inode: InodeT, ctx=None) -> FileHandleT:
        return self.dirs.add(self.sfs.readdir(inode))

    @handler
    async def readdir(self, fh: FileHandleT, start_id: int, token) -> None:
        entries = self.dirs[fh]
        for i in range(start_id, len(entries)):
            name, a = entries[i]
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(a), i + 1):
                return
            self.sfs.remember(a.ino)

    @handler
    async def releasedir(self, fh: FileHandleT) -> None:
        self.dirs.pop(fh)

    @handler
    async def fsyncdir(self, fh: FileHandleT, datasync: bool) -> None:
        return None  # every namespace change is durable when it returns

    # -- files ---------------------------------------------------------------------------
    def _info(self, fh: FileHandleT, ino: InodeT, flags: int) -> pyfuse3.FileInfo:
        fi = pyfuse3.FileInfo(fh=fh)
        fi.keep_cache = False
        # Write-only handles bypass the kernel's page cache (a write-only file cannot be
        # mapped, so nothing is lost): saves run faster and steadier (docs/decisions.md).
        fi.direct_io = ino in VIRTUAL or flags & os.O_ACCMODE == os.O_WRONLY
        return fi

    @handler
    async def create(self, parent_inode: InodeT, name: bytes, mode: int, flags: int, ctx):
        async with self.mutex:
            fh, a = self.sfs.create(parent_inode, os.fsdecode(name), mode, Caller.of(ctx))
        return self._info(fh, a.ino, flags), self._entry(a)

    @handler
    async def open(self, inode: InodeT, flags: int, ctx=None) -> pyfuse3.FileInfo:
        # The caller's uid is kept with the handle (write() gets no request context): the
        # control file is the owner's, and writes by non-root callers clear set-ID bits.
        uid = ctx.uid if ctx is not None else None
        if inode == CONTROL_INO:
            return self._info(self.sfs.open(inode, flags, uid), inode, flags)
        if self.sfs.needs_copy(inode, flags):
            async with self.mutex:
                if self.sfs.needs_copy(inode, flags):
                    await self._thread(self.sfs.copy_up, inode, True)
                return self._info(self.sfs.open(inode, flags, uid), inode, flags)
        if flags & os.O_ACCMODE != os.O_RDONLY and inode not in VIRTUAL:
            async with self.mutex:
                return self._info(self.sfs.open(inode, flags, uid), inode, flags)
        return self._info(self.sfs.open(inode, flags, uid), inode, flags)

    @handler
    async def read(self, fh: FileHandleT, off: int, size: int) -> bytes:
        view = self.sfs.read_view(fh)
        if view is not None:  # committed bytes: decoded lazily, with read-ahead
            return await self.reads.read(self._content(fh, view), off, size)
        await self.writeback.drain(self.sfs.spool_of(fh))
        plan = self.sfs.overlay_plan(fh, off, size)
        if plan is None:
            self._committed.pop(fh, None)
            return self.sfs.read(fh, off, size)
        # Range copy-on-write: written ranges from the spool, the rest decoded as above.
        pieces, under = plan
        parts = [self.sfs.read(fh, a, n) if own else await self.reads.read(self._content(fh, under), a, n)
                 for a, n, own in pieces]
        return parts[0] if len(parts) == 1 else b"".join(parts)  # none: at or past the end

    def _content(self, fh: FileHandleT, view) -> OpenContent:
        got = self._committed.get(fh)
        if got is None or got.content.view is not view:
            got = self._committed[fh] = OpenContent(Stored(view))
        return got

    @handler
    async def write(self, fh: FileHandleT, off: int, buf: bytes) -> int:
        if self.sfs.is_control(fh):
            async with self.mutex:
                cbuf = self.sfs.control_buffer(fh)
                control.take_bytes(cbuf, buf)
                while control.has_request(cbuf):  # each complete line is a request; the last answers
                    await self.writeback.drain_all()
                    await self._control(cbuf)
            return len(buf)
        if self.sfs.needs_copy_for_write(fh):  # the first write to a committed file
            async with self.mutex:
                if self.sfs.needs_copy_for_write(fh):
                    await self._thread(self.sfs.copy_up_for_write, fh)
        async with self.mutex:  # a commit or stash in progress finishes first
            spool, fd = self.sfs.begin_write(fh, off, len(buf))
        await self.writeback.send(spool, fd, off, buf)
        return len(buf)

    @handler
    async def fallocate(self, fh: FileHandleT, mode: int, off: int, length: int) -> None:
        """fallocate(2) for the day pyfuse3 dispatches FUSE_FALLOCATE (3.5 does not: the
        kernel answers EOPNOTSUPP; docs/decisions.md). Runs like a write: copy first,
        queued writes applied first."""
        if self.sfs.needs_copy_for_write(fh):
            async with self.mutex:
                if self.sfs.needs_copy_for_write(fh):
                    await self._thread(self.sfs.copy_up_for_write, fh)
        async with self.mutex:
            await self.writeback.drain(self.sfs.spool_of(fh))
            self.sfs.fallocate(fh, mode, off, length)

    async def _control(self, buf: control.ControlBuffer) -> None:
        req = control.next_request(buf)
        if req is None:
            return  # malformed: the buffer holds the error answer
        op = req.get("op")
        log.info("control request: %s", op)
        # The tree the kernel reads is only changed on this thread: a commit first moves
        # the staged changes onto a branch head that moved (quick), then ingests in a
        # worker thread; stashes (hard links and one transaction) run here.
        if op == "commit":
            reply = control.run_request(self.sfs, {"op": "rebase"})
            if reply.get("ok"):
                reply = await trio.to_thread.run_sync(control.run_request, self.sfs, req)
        else:
            reply = control.run_request(self.sfs, req)
        if op in ("stash", "stash-pop") and reply.get("ok"):
            self._invalidate_soon()
        control.answer(buf, reply)

    def _invalidate_soon(self) -> None:
        """After a stash the tree changed behind the kernel: drop what it cached."""
        if self.nursery is None:
            return
        inos = self.sfs.known_inodes()

        async def run() -> None:
            for ino in inos:
                try:
                    await trio.to_thread.run_sync(pyfuse3.invalidate_inode, ino, False)
                except (OSError, pyfuse3.FUSEError):
                    pass
        self.nursery.start_soon(run)

    @handler
    async def flush(self, fh: FileHandleT) -> None:
        await self.writeback.drain(self.sfs.spool_of(fh))
        if self.sfs.needs_flush(fh):
            await self._thread(self.sfs.flush, fh)

    @handler
    async def fsync(self, fh: FileHandleT, datasync: bool) -> None:
        self.sfs.handle(fh)  # EBADF for a handle never given out
        await self.writeback.drain(self.sfs.spool_of(fh))
        await self._thread(self.sfs.fsync, fh)

    @handler
    async def release(self, fh: FileHandleT) -> None:
        self._committed.pop(fh, None)
        await self.writeback.drain(self.sfs.spool_of(fh))
        async with self.mutex:
            self.sfs.release(fh)

    # -- the rest ------------------------------------------------------------------------
    @handler
    async def statfs(self, ctx=None) -> pyfuse3.StatvfsData:
        v = self.sfs.statvfs()
        s = pyfuse3.StatvfsData()
        s.f_bsize, s.f_frsize = v.f_bsize, v.f_frsize
        s.f_blocks, s.f_bfree, s.f_bavail = v.f_blocks, v.f_bfree, v.f_bavail
        s.f_files, s.f_ffree, s.f_favail = v.f_files, v.f_ffree, v.f_favail
        s.f_namemax = 255
        return s

    @handler
    async def getxattr(self, inode: InodeT, name: bytes, ctx=None) -> bytes:
        try:
            return self.sfs.getxattr(inode, name)
        except OSError as e:
            if e.errno == errno.ENODATA:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
            raise

    @handler
    async def setxattr(self, inode: InodeT, name: bytes, value: bytes, ctx=None) -> None:
        async with self.mutex:
            self.sfs.setxattr(inode, name, value)

    @handler
    async def listxattr(self, inode: InodeT, ctx=None) -> list[bytes]:
        return self.sfs.listxattr(inode)

    @handler
    async def removexattr(self, inode: InodeT, name: bytes, ctx=None) -> None:
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
                await self.writeback.drain_all()
                try:
                    self.sfs.rebase()
                    out = await trio.to_thread.run_sync(self.sfs.auto_commit)
                    log.info("auto-commit: %s", out.get("commit") or out.get("message"))
                except Exception as e:  # noqa: BLE001 - shown in status (the model logs it); the spool keeps the changes
                    self.sfs.auto_failed(e, time.monotonic())


__all__ = ["StagingOperations"]
