"""The materialization cache of mounts: decoded chunks kept in local files (DESIGN §5).

A chunk decoded by a mount is written once to ``ROOT/ab/<chunk id hex>`` and read back
instead of decoded again, by any later mount, process or commit that holds the same
chunk (entries are keyed by chunk id, so a fine-tune's unchanged tensors are decoded
once for every commit that shares them). An entry is the decoded bytes followed by a
56-byte trailer (``CRMZ`` magic, format, length, xxh3-64 of the bytes, the chunk id):
the bytes start at offset 0, so a load is two ``pread`` calls and no copy.

Never serving a torn entry takes two things: entries are written to a temp file and
renamed into place (a writer killed halfway leaves only a temp file, never an entry),
and a load checks the trailer (magic, length, chunk id) and the xxh3 of the bytes before
anything is served, so a truncated, half-written or damaged file is removed and the
chunk decoded again. Nothing is fsynced: a lost entry is only a decode.

The cache is bounded by ``budget`` bytes (trailers included) across every process that
uses it: a ledger (8 bytes in ``ROOT/ledger``, changed under ``flock``) holds the bytes in
use; a write reserves its size first, and when that would pass the budget the directory
is scanned (the ledger then set to the truth) and the least recently used entries
(by mtime: a load refreshes it; atime is unreliable under relatime/noatime) are removed
until it is at 90% of the budget. The scan also removes temp files whose writer died.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import xxhash

from ..objects.cache import ByteLRU
from ..objects.durable import pid_alive
from ..objects.ids import ObjectId, from_hex, to_hex
from ..objects.kinds import Tensor, TensorSegment

log = logging.getLogger(__name__)

MAGIC = b"CRMZ"
FORMAT = 1
_TAIL = struct.Struct("<4sIQQ32s")  # magic, format, length, xxh3-64 of the bytes, chunk id
TAIL = _TAIL.size
LOW_WATER = 0.9
TOUCH_EVERY = 10.0            # seconds: a load refreshes an entry's mtime at most this often
STALE_TEMP = 3600.0           # a temp file this old is removed even if its pid is alive (reused)
DEFAULT_SIZE = 16 << 30
LEDGER = "ledger"


def materialized_dir(cache_dir: str | None, repo_path: str | None) -> str:
    """Where a mount keeps its materialized chunks: ``CACHE_DIR/materialized``; without
    ``--cache-dir``, ``REPO/cache/materialized`` for a local repository and
    ``$XDG_CACHE_HOME/coralfs/materialized`` for a remote one."""
    if cache_dir is None and repo_path is not None:
        cache_dir = os.path.join(repo_path, "cache")
    if cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        cache_dir = os.path.join(base, "coralfs")
    return os.path.join(os.path.abspath(cache_dir), "materialized")


@dataclass(frozen=True)
class Entry:
    oid: ObjectId
    size: int       # bytes on disk (trailer included)
    mtime: float    # last use
    path: str


class MaterializedCache:
    """Decoded chunks on disk under ``root``, at most ``budget`` bytes."""

    def __init__(self, root: str, budget: int = DEFAULT_SIZE) -> None:
        self.root = root
        self.budget = budget
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._lock = threading.RLock()         # threads of this process (flock is per file)
        self._ledger = os.open(os.path.join(root, LEDGER), os.O_RDWR | os.O_CREAT, 0o600)
        self._seq = 0
        self.counters = {"hits": 0, "misses": 0, "written": 0, "written_bytes": 0, "discarded": 0,
                         "evicted": 0, "write_errors": 0, "temp_removed": 0}

    def close(self) -> None:
        if self._ledger >= 0:
            os.close(self._ledger)
            self._ledger = -1

    def path(self, oid: ObjectId) -> str:
        h = to_hex(oid)
        return os.path.join(self.root, h[:2], h[2:])

    def contains(self, oid: ObjectId) -> bool:
        """Cheap (one stat): whether an entry exists; a load still checks it."""
        return os.path.exists(self.path(oid))

    # -- loading -------------------------------------------------------------------------
    def get(self, oid: ObjectId) -> bytes | None:
        """The chunk's decoded bytes, or None (absent, or torn/damaged: then removed)."""
        path = self.path(oid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self._count("misses")
            return None
        try:
            st = os.fstat(fd)
            n = st.st_size - TAIL
            data = os.pread(fd, n, 0) if n > 0 else b""
            tail = os.pread(fd, TAIL, max(0, n))
        finally:
            os.close(fd)
        why = self._check(oid, n, data, tail)
        if why:
            if self._remove(path, st.st_size):  # counted once (two threads may load it at once)
                log.warning("materialization cache: entry %s is %s; removed, the chunk is decoded again",
                            to_hex(oid), why)
                self._count("discarded")
            self._count("misses")
            return None
        if time.time() - st.st_mtime > TOUCH_EVERY:
            try:
                os.utime(path)  # LRU: recently used
            except OSError:
                pass
        self._count("hits")
        return data

    @staticmethod
    def _check(oid: ObjectId, n: int, data: bytes, tail: bytes) -> str:
        """Why an entry must not be served ("" if it may)."""
        if n < 0 or len(tail) != TAIL or len(data) != n:
            return "truncated"
        magic, fmt, length, check, tid = _TAIL.unpack(tail)
        if magic != MAGIC or fmt != FORMAT or tid != oid:
            return "damaged (bad trailer)"
        if length != n:
            return "truncated"
        if xxhash.xxh3_64_intdigest(data) != check:
            return "damaged (xxh3 mismatch)"
        return ""

    # -- writing -------------------------------------------------------------------------
    def put(self, oid: ObjectId, data: bytes | memoryview) -> bool:
        """Write an entry unless one exists; False if it was not written (too big for the
        budget, already there, or the disk refused: a write error costs speed, not reads)."""
        n = len(data) + TAIL
        if n > self.budget * LOW_WATER:
            return False  # it would evict everything else and itself
        path = self.path(oid)
        if os.path.exists(path):
            return False
        d = os.path.dirname(path)
        with self._lock:
            self._seq += 1
            tmp = os.path.join(d, f".tmp-{os.getpid()}-{threading.get_ident()}-{self._seq}")
        self._reserve(n)
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                tail = _TAIL.pack(MAGIC, FORMAT, len(data), xxhash.xxh3_64_intdigest(data), oid)
                if os.writev(fd, [data, tail]) != n:
                    raise OSError("short write")
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("materialization cache: cannot write %s (%s); serving without it", to_hex(oid), e)
            self._count("write_errors")
            try:
                os.unlink(tmp)
            except OSError:
                pass
            self._adjust(-n)
            return False
        with self._lock:
            self.counters["written"] += 1
            self.counters["written_bytes"] += n
        return True

    # -- the ledger ----------------------------------------------------------------------
    def _locked(self):
        cache = self

        class _Held:
            def __enter__(self):
                cache._lock.acquire()
                fcntl.flock(cache._ledger, fcntl.LOCK_EX)

            def __exit__(self, *exc):
                fcntl.flock(cache._ledger, fcntl.LOCK_UN)
                cache._lock.release()
        return _Held()

    def _read_used(self) -> int | None:
        raw = os.pread(self._ledger, 8, 0)
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else None

    def _write_used(self, used: int) -> None:
        os.pwrite(self._ledger, struct.pack("<Q", max(0, used)), 0)

    def _reserve(self, n: int) -> None:
        with self._locked():
            used = self._read_used()
            if used is None:  # a new cache, or a damaged ledger: count what is there
                used = self._evict_locked(None)
            if used + n > self.budget:
                used = self._evict_locked(int(self.budget * LOW_WATER) - n)
            self._write_used(used + n)

    def _adjust(self, delta: int) -> None:
        with self._locked():
            used = self._read_used()
            if used is not None:
                self._write_used(used + delta)

    def used(self) -> int:
        """Bytes in use, as the ledger says (exact after a scan; ``scan`` fixes it)."""
        with self._locked():
            used = self._read_used()
            if used is None:
                used = self._evict_locked(None)
                self._write_used(used)
        return used

    # -- scanning and eviction -----------------------------------------------------------
    def entries(self, sweep: bool = True) -> list[Entry]:
        """Every entry, oldest use first; with ``sweep``, temp files whose writer died are
        removed (those of live writers are left, and counted by ``_scan``)."""
        return self._scan(sweep)[0]

    def _scan(self, sweep: bool) -> tuple[list[Entry], int]:
        out: list[Entry] = []
        temp = 0
        now = time.time()
        try:
            subdirs = os.listdir(self.root)
        except FileNotFoundError:
            return out, 0
        for sub in subdirs:
            if len(sub) != 2:
                continue
            d = os.path.join(self.root, sub)
            try:
                it = os.scandir(d)
            except (NotADirectoryError, FileNotFoundError):
                continue
            with it:
                for e in it:
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue  # evicted or renamed by another process meanwhile
                    if e.name.startswith(".tmp-"):
                        if sweep and self._dead_temp(e.name, st.st_mtime, now):
                            try:
                                os.unlink(e.path)
                                self._count("temp_removed")
                            except FileNotFoundError:
                                pass
                        else:
                            temp += st.st_size
                        continue
                    try:
                        oid = from_hex(sub + e.name)
                    except ValueError:
                        continue
                    out.append(Entry(oid, st.st_size, st.st_mtime, e.path))
        out.sort(key=lambda x: x.mtime)
        return out, temp

    @staticmethod
    def _dead_temp(name: str, mtime: float, now: float) -> bool:
        try:
            pid = int(name.split("-")[1])
        except (IndexError, ValueError):
            return True
        return now - mtime > STALE_TEMP or not pid_alive(pid)

    def _evict_locked(self, target: int | None) -> int:
        """Scan, remove the oldest entries until at most ``target`` bytes are in use (None:
        remove nothing); returns the bytes in use. Call with the lock held."""
        entries, temp = self._scan(sweep=True)
        total = temp + sum(e.size for e in entries)
        removed = 0
        if target is not None:
            for e in entries:
                if total <= target:
                    break
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass
                total -= e.size
                removed += 1
        self.counters["evicted"] += removed
        if removed:
            log.info("materialization cache: evicted %d entries (now %d of %d bytes)", removed, total, self.budget)
        return total

    def sweep(self) -> int:
        """Remove temp files whose writer died and set the ledger to the truth; returns the
        bytes in use (a mount does this once, in the background, when it starts)."""
        with self._locked():
            used = self._evict_locked(None)
            self._write_used(used)
        return used

    def prune(self, target: int | None = None) -> tuple[int, int]:
        """Evict down to ``target`` bytes (default 90% of the budget); (entries removed,
        bytes in use after)."""
        with self._locked():
            before = self.counters["evicted"]
            used = self._evict_locked(int(self.budget * LOW_WATER) if target is None else target)
            self._write_used(used)
            return self.counters["evicted"] - before, used

    def verify(self) -> tuple[int, int]:
        """Load every entry (each checked, a bad one removed); (entries checked, removed)."""
        before = self.counters["discarded"]
        entries = self.entries()
        for e in entries:
            self.get(e.oid)
        return len(entries), self.counters["discarded"] - before

    def clear(self) -> int:
        """Remove every entry; mounts using the cache decode again. Returns entries removed."""
        n, _used = self.prune(0)
        return n

    def _remove(self, path: str, n: int) -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        self._adjust(-n)
        return True

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def stats(self) -> dict:
        with self._lock:
            c = dict(self.counters)
        return {**c, "dir": self.root, "used": self.used(), "budget": self.budget}


class TieredChunks:
    """The decoded-chunk cache of a mount: the in-memory LRU over the materialization
    cache. It stands in for ``ObjectDB.chunks`` (the same get/peek/put/clear interface),
    so every chunk the object database asks for, delta bases included, is looked up on
    disk before it is decoded, and every chunk decoded to be read is written to disk (by a
    writer thread, behind the reads: a read never waits for a write). A chunk decoded only
    as a delta base stays in memory: it belongs to another commit (the newer one a reverse
    delta points at), and writing it cost as much as the chunk read (measured: the
    one-commit-behind read wrote twice the bytes it served); a later read of the chunk itself
    writes it."""

    def __init__(self, memory: ByteLRU, disk: MaterializedCache, max_pending: int | None = None) -> None:
        self.memory = memory
        self.disk = disk
        self.loaded = 0            # chunks served from disk into memory
        self.skipped = 0           # chunks not written: the disk was behind (a later read writes them)
        self._pending = 0
        self._unkept: set[Hashable] = set()   # in memory as bases only, not written
        # Queued chunks are the most recently decoded ones, so they are in the memory cache
        # too while the queue stays within half of it: the queue costs no memory of its own.
        self._max_pending = max_pending or max(64 << 20, min(512 << 20, memory.budget // 2))
        self._cond = threading.Condition()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="coralfs-materialize", daemon=True)
        self._writer.start()

    # ByteLRU's interface, for ObjectDB and the read path.
    @property
    def budget(self) -> int:
        return self.memory.budget

    @budget.setter
    def budget(self, value: int) -> None:
        self.memory.budget = value

    @property
    def used(self) -> int:
        return self.memory.used

    @property
    def hits(self) -> int:
        return self.memory.hits

    @property
    def misses(self) -> int:
        return self.memory.misses

    def get(self, key: Hashable) -> bytes | None:
        v = self.memory.get(key)
        if v is None and isinstance(key, bytes):
            v = self.disk.get(ObjectId(key))
            if v is not None:
                self.memory.put(key, v)
                with self._cond:
                    self.loaded += 1
        return v

    def peek(self, key: Hashable) -> bytes | None:
        return self.memory.peek(key)

    def put(self, key: Hashable, value: bytes, keep: bool = True) -> None:
        # _unkept changes before the memory cache holds the chunk: a reader that finds it
        # there and calls served() then sees whether it still has to be written.
        with self._cond:
            if keep:
                self._unkept.discard(key)
            else:
                self._unkept.add(key)
                if len(self._unkept) > 2 * max(256, len(self.memory)):
                    # what the memory cache evicted since: a later read decodes it again
                    self._unkept = {k for k in self._unkept if k in self.memory}
        self.memory.put(key, value)
        if keep:
            self.materialize(ObjectId(key), value)

    def served(self, key: Hashable, value: bytes) -> None:
        # Called on every read served from memory (the FUSE fast path): no lock unless the
        # chunk was held as a base only (put adds it to _unkept before memory holds it).
        if key not in self._unkept:
            return
        with self._cond:
            if key not in self._unkept:
                return
            self._unkept.discard(key)
        self.materialize(ObjectId(key), value)

    def clear(self) -> None:
        self.memory.clear()
        with self._cond:
            self._unkept.clear()

    def __contains__(self, key: Hashable) -> bool:
        return key in self.memory

    # Writing behind.
    def materialize(self, oid: ObjectId, data: bytes) -> None:
        """Queue ``data`` for writing. A reader never waits for the disk: when the queue is
        full the chunk is not written now (``skipped``; the next read that decodes it, or
        ``--prefetch``, writes it). Measured: on a disk that takes writes at ~110 MB/s,
        waiting for it made a cold first read 3x slower than decoding without the cache."""
        with self._cond:
            if self._pending + len(data) > self._max_pending or not self._writer.is_alive():
                self.skipped += 1
                return
            self._pending += len(data)
        self._q.put((oid, data))

    def _write_loop(self) -> None:
        try:
            self.disk.sweep()
        except OSError as e:
            log.warning("materialization cache: cannot scan %s: %s", self.disk.root, e)
        while True:
            item = self._q.get()
            if item is None:
                return
            oid, data = item
            try:
                self.disk.put(oid, data)
            except Exception:  # noqa: BLE001 - a failed write costs a decode later, never a read
                log.exception("materialization cache: writing %s failed", to_hex(oid))
            finally:
                with self._cond:
                    self._pending -= len(data)
                    self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return self._pending

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (up to ``timeout``), then stop the writer."""
        self._q.put(None)
        self._writer.join(timeout)
        if not self._writer.is_alive():  # else it still writes: its files stay valid or temp
            self.disk.close()

    def stats(self) -> dict:
        return {**self.disk.stats(), "loaded": self.loaded, "skipped": self.skipped, "pending": self.pending()}


def segment_chunks(odb, seg) -> list[tuple[ObjectId, int]]:
    """(chunk id, length) of one segment of a File, in order."""
    if isinstance(seg, TensorSegment):
        t = odb.get_object(seg.tensor, Tensor)
        return list(zip(t.chunks, t.chunk_lengths()))
    return list(seg.chunks)


def coverage(cache: MaterializedCache, chunks: Iterable[tuple[ObjectId, int]]) -> tuple[int, int]:
    """(bytes materialized, bytes) of these chunks (one stat each)."""
    have = total = 0
    for oid, n in dict(chunks).items():
        total += n
        if cache.contains(oid):
            have += n
    return have, total


__all__ = ["DEFAULT_SIZE", "Entry", "MaterializedCache", "TAIL", "TieredChunks", "coverage", "materialized_dir",
           "segment_chunks"]
