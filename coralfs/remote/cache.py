"""The local chunk cache of remote mounts: frames fetched from a remote, kept on disk.

One file per object (``chunks/ab/<hex>``): a 24-byte header (``CRCE`` magic, format,
the frame's length and its xxh3-64) then the frame exactly as the remote stores it. A
load checks the length and the xxh3 before anything is served, so an entry torn by a
crash or damaged on disk is deleted and fetched again, never served; the frame's own
checks (header checksum, xxh3 of the decoded bytes) still run when it is decoded.

Entries are written to a temp file and renamed into place, so two processes filling one
entry at once both leave a whole one (the same bytes: frames are content-addressed and
packs never change). Nothing is fsynced: a lost or torn entry is only a refetch.

The cache is bounded by ``budget`` bytes with LRU eviction by mtime (a hit touches the
entry's mtime; atime is unreliable under relatime/noatime): once the entries written by
this process push the total over the budget, the directory is scanned and the oldest
entries are removed until it is at 90% of it (the margin makes scans rare).

:meth:`ChunkCache.put_later` (what a mount's coalesced fetches use) hands the write to a
writer thread, so a read's decode does not wait for the disk: the frame is served from
memory until it is written (``get`` and ``contains`` see it), at most ``PENDING_MAX``
bytes wait (then the fetch waits for the disk), ``discard`` waits for an entry's write
before removing it, and ``flush`` (called by ``close`` of the remote store, when a mount
ends) writes everything queued: a daemon killed before that only fetches those again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections import deque

import xxhash

from ..objects.durable import preallocate
from ..objects.ids import ObjectId, to_hex

log = logging.getLogger(__name__)

MAGIC = b"CRCE\x01"
_HEAD = struct.Struct("<5s3xQQ")   # magic+format, padding, frame length, xxh3-64 of the frame
HEAD_SIZE = _HEAD.size
LOW_WATER = 0.9
TOUCH_EVERY = 60.0   # seconds: a hit refreshes an entry's mtime at most this often
PENDING_MAX = 256 << 20   # frames waiting for the writer thread
WRITER_NICE = 10          # the writer thread runs this much nicer than the process
WRITER_IDLE = 0.5         # seconds: the writer thread ends when nothing came for this long


class ChunkCache:
    """Frames on disk under ``root``, bounded by ``budget`` bytes (entry files included)."""

    def __init__(self, root: str, budget: int) -> None:
        self.root = root
        self.budget = budget
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self.used = self._scan_size()
        self.counters = {"cache_hits": 0, "cache_misses": 0, "cache_discarded": 0, "cache_evicted": 0,
                         "cache_written_bytes": 0}
        # put_later: frames waiting for the writer thread (id -> frame), in arrival order
        self._cv = threading.Condition()
        self._pending: dict[ObjectId, bytes] = {}
        self._queue: deque[ObjectId] = deque()
        self._pending_bytes = 0
        self._writer: threading.Thread | None = None

    def path(self, oid: ObjectId) -> str:
        h = to_hex(oid)
        return os.path.join(self.root, h[:2], h[2:])

    def contains(self, oid: ObjectId) -> bool:
        """Cheap (one stat, no read): whether an entry exists (or waits to be written); a
        load still checks it."""
        return oid in self._pending or os.path.exists(self.path(oid))

    def get(self, oid: ObjectId) -> bytes | None:
        """The cached frame, or None (absent, or torn/damaged: then it is removed)."""
        frame = self._pending.get(oid)
        if frame is not None:
            return frame
        path = self.path(oid)
        try:
            with open(path, "rb") as f:
                data = f.read()
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            self._count("cache_misses")
            return None
        frame = self._check(data)
        if frame is None:
            log.warning("chunk cache: entry %s is torn or damaged; removing it and fetching again", to_hex(oid))
            self._remove(path, len(data))
            self._count("cache_discarded")
            self._count("cache_misses")
            return None
        if time.time() - st.st_mtime > TOUCH_EVERY:
            try:
                os.utime(path)  # LRU: recently used
            except OSError:
                pass
        self._count("cache_hits")
        return frame

    @staticmethod
    def _check(data: bytes) -> bytes | None:
        if len(data) < HEAD_SIZE:
            return None
        magic, length, check = _HEAD.unpack_from(data)
        if magic != MAGIC or len(data) != HEAD_SIZE + length:
            return None
        frame = data[HEAD_SIZE:]
        if xxhash.xxh3_64_intdigest(frame) != check:
            return None
        return frame

    def put(self, oid: ObjectId, frame: bytes) -> None:
        n = HEAD_SIZE + len(frame)
        if n > self.budget * LOW_WATER:
            return  # it would evict everything else and itself
        path = self.path(oid)
        d = os.path.dirname(path)
        tmp = os.path.join(d, f".tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                preallocate(fd, n)   # far cheaper page-cache writes on ext4 (durable.preallocate)
                for part in (_HEAD.pack(MAGIC, len(frame), xxhash.xxh3_64_intdigest(frame)), frame):
                    view = memoryview(part).cast("B")
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:  # a full or read-only cache disk costs speed, not reads
            log.warning("chunk cache: cannot write %s (%s); serving without caching it", to_hex(oid), e)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        with self._lock:
            self.used += n
            self.counters["cache_written_bytes"] += n
            over = self.used > self.budget
        if over:
            self.evict()

    def put_later(self, oid: ObjectId, frame: bytes) -> None:
        """:meth:`put` in the writer thread; waits only while PENDING_MAX bytes wait (a
        pending frame is served from memory by :meth:`get` until it is written)."""
        n = HEAD_SIZE + len(frame)
        if n > self.budget * LOW_WATER:
            return
        with self._cv:
            if oid in self._pending:
                return   # queued already
            while self._pending_bytes and self._pending_bytes + n > PENDING_MAX:
                self._cv.wait()
            self._pending[oid] = frame
            self._queue.append(oid)
            self._pending_bytes += n
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_queued, name="coralfs-cache-writer")
                self._writer.start()
            self._cv.notify_all()

    def _write_queued(self) -> None:
        """The writer thread: entries in arrival order; ends once idle (a process that
        exits joins it, so what was queued is written)."""
        with contextlib.suppress(OSError, AttributeError):
            # Below the decodes: on a busy machine the reads come first and the queue
            # (PENDING_MAX) absorbs the writes; a nice value is per thread on Linux.
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE))
        while True:
            with self._cv:
                if not self._queue:
                    self._cv.wait(WRITER_IDLE)
                    if not self._queue:
                        self._writer = None
                        return
                oid = self._queue.popleft()
                frame = self._pending[oid]
            try:
                self.put(oid, frame)
            except Exception as e:  # noqa: BLE001 - a cache write failing costs a refetch, never a read
                log.warning("chunk cache: cannot write %s (%s)", to_hex(oid), e)
            with self._cv:
                del self._pending[oid]
                self._pending_bytes -= HEAD_SIZE + len(frame)
                self._cv.notify_all()

    def flush(self) -> None:
        """Wait until every frame handed to :meth:`put_later` is written."""
        with self._cv:
            while self._pending:
                self._cv.wait()

    def discard(self, oid: ObjectId) -> None:
        with self._cv:
            while oid in self._pending:   # its write would land after the removal
                self._cv.wait()
        path = self.path(oid)
        try:
            n = os.stat(path).st_size
        except FileNotFoundError:
            return
        self._remove(path, n)

    def _remove(self, path: str, n: int) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        with self._lock:
            self.used = max(0, self.used - n)

    def _entries(self) -> list[tuple[float, int, str]]:
        """(mtime, size, path) of every entry (temp files of writes in flight excluded)."""
        out = []
        try:
            subdirs = os.listdir(self.root)
        except FileNotFoundError:
            return out
        for sub in subdirs:
            d = os.path.join(self.root, sub)
            try:
                it = os.scandir(d)
            except (NotADirectoryError, FileNotFoundError):
                continue
            with it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue  # evicted by another process meanwhile
                    out.append((st.st_mtime, st.st_size, e.path))
        return out

    def _scan_size(self) -> int:
        return sum(n for _t, n, _p in self._entries())

    def evict(self) -> None:
        """Remove least recently used entries until the cache is at 90% of its budget.
        Other processes may evict at the same time: each removal is one unlink, and an
        entry removed under a reader's feet is only a refetch."""
        with self._lock:
            entries = sorted(self._entries())
            total = sum(n for _t, n, _p in entries)
            target = int(self.budget * LOW_WATER)
            removed = 0
            for _t, n, p in entries:
                if total <= target:
                    break
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
                total -= n
                removed += 1
            self.used = total
            self.counters["cache_evicted"] += removed
        if removed:
            log.info("chunk cache: evicted %d entries (now %d of %d bytes)", removed, total, self.budget)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def stats(self) -> dict:
        with self._lock:
            return {**self.counters, "cache_used": self.used, "cache_budget": self.budget}


__all__ = ["ChunkCache", "HEAD_SIZE"]
