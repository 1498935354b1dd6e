"""Write-behind of a writable mount: a write is answered once it is queued, one task
applies the queue in order.

At most WRITE_QUEUE writes wait (memory stays bounded); the task pwrites each in a worker
thread, so moving bytes through FUSE overlaps with writing them to the spool. Everything
that must see a file's bytes first waits for its spool to drain (:meth:`WriteBehind.drain`):
reads of that file, truncation, fsync, close (flush), commits and stashes. A failed pwrite
(ENOSPC) is handed to the model, which tells it at the next write, fsync or close of that
file. On shutdown (the nursery cancelled, as SIGTERM does) what was queued is still applied.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import TYPE_CHECKING

import trio

from ...objects.durable import start_writeback

if TYPE_CHECKING:
    from .vfs import StageFS

log = logging.getLogger(__name__)

WRITE_QUEUE = 16


def write_out(fd: int, buf: bytes, off: int) -> OSError | None:
    """Apply one queued write; its failure is returned, to be told to the writer later."""
    try:
        n = os.pwrite(fd, buf, off)
    except OSError as e:
        return e
    if n != len(buf):
        return OSError(errno.EIO, f"short write to the spool ({n} of {len(buf)} bytes)")
    start_writeback(fd, off, n)  # so the fsync at close has little left to do
    return None


class WriteBehind:
    def __init__(self, model: StageFS, size: int = WRITE_QUEUE) -> None:
        self.model = model
        self.size = size
        self._queue: trio.MemorySendChannel | None = None
        self._drained: dict[str, trio.Event] = {}

    def start(self, nursery: trio.Nursery) -> None:
        send, recv = trio.open_memory_channel(self.size)
        self._queue = send
        nursery.start_soon(self._apply, recv)

    async def send(self, spool: str, fd: int, off: int, buf: bytes) -> None:
        """Queue one write the model accounted for (``model.begin_write``)."""
        if self._queue is None:
            raise RuntimeError("the write-behind queue is not running (start() it in the serving nursery)")
        await self._queue.send((spool, fd, off, buf))

    async def _apply(self, recv: trio.MemoryReceiveChannel) -> None:
        try:
            async for spool, fd, off, buf in recv:
                # Shielded: a write taken off the queue is applied even when shutdown
                # begins (an unshielded call could be cancelled before it starts).
                with trio.CancelScope(shield=True):
                    err = await trio.to_thread.run_sync(write_out, fd, buf, off)
                self._applied(spool, err, off, len(buf))
        finally:  # shutting down (a signal): what was acknowledged still reaches the spool
            while True:
                try:
                    spool, fd, off, buf = recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                self._applied(spool, write_out(fd, buf, off), off, len(buf))

    def _applied(self, spool: str, err: OSError | None, off: int, n: int) -> None:
        if err is not None:
            log.error("write to the spool of %s failed: %s", spool, err)
        self.model.end_write(spool, err, off, n)  # a file under range copy-on-write records the range
        if not self.model.writes_pending(spool):
            ev = self._drained.pop(spool, None)
            if ev is not None:
                ev.set()

    async def drain(self, spool: str | None) -> None:
        """Wait until every queued write to ``spool`` is applied."""
        while self.model.writes_pending(spool):
            assert spool is not None
            ev = self._drained.get(spool)
            if ev is None:
                ev = self._drained[spool] = trio.Event()
            await ev.wait()

    async def drain_all(self) -> None:
        for spool in self.model.pending_spools():
            await self.drain(spool)


__all__ = ["WRITE_QUEUE", "WriteBehind", "write_out"]
