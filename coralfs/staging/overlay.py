"""Range copy-on-write: a committed file written in a writable mount keeps its committed
bytes in the repository, and only the ranges written land in its spool file.

``spool/NAME`` is then a sparse file of the file's size, and ``spool/NAME.map`` says which
of its bytes are the file's (docs/decisions.md, "Range copy-on-write"):

- a header: magic, the committed File the spool was taken from and its size, CRC32;
- records appended as the file changes, each with its CRC32: ``W a b`` (bytes [a, b) were
  written into the spool), ``T n`` (the file was truncated to n bytes).

A byte at offset x is the spool's when x lies in a written extent or at or beyond the
*limit* (the committed size, lowered by every truncation: bytes a truncation cut and an
extension brought back are zeros, never committed bytes again); below the limit and in
no extent it is the committed file's.

Durability follows the spool's: a ``W`` record is appended only after its bytes were
pwritten into the spool, and a ``T`` record after the spool was truncated, so a daemon
killed at any point leaves a map that claims nothing the spool does not hold (a range
whose record was lost reads its committed bytes, as an unsynced write may be lost). On
fsync and close the spool is fsynced first, then the map. The header is written temp,
fsync, rename, fsync dir before any manifest row names the spool, and so is a compacted
map. Opening a map drops a torn last record (a crash in the middle of an append); a bad
record followed by good ones is corruption and is named (EIO), never read around.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..objects.durable import write_durable
from ..objects.ids import ID_LEN, ObjectId
from .entries import COPY_BLOCK

log = logging.getLogger(__name__)

MAGIC = b"CORALOV1"
HEADER = struct.Struct(f"<8s{ID_LEN}sQ")
RECORD = struct.Struct("<cQQ")
CRC = struct.Struct("<I")
MAP_SUFFIX = ".map"
# A map is rewritten (compacted) at a sync once it holds this many records more than
# extents: an h5py session writes thousands of small ranges that merge into a few.
COMPACT_AFTER = 4096
MATERIALIZE_THREADS = 4  # decoding the committed bytes for a commit (the writer's pool waits meanwhile)

Piece = tuple[int, int, bool]  # (offset, length, from the spool)


def map_path(spool_path: str) -> str:
    return spool_path + MAP_SUFFIX


def _header(path: str, data: bytes) -> tuple[ObjectId, int]:
    """The committed File and size a map's header names (EIO when the header is damaged)."""
    hl = HEADER.size + CRC.size
    if len(data) < hl or _sealed(data[:HEADER.size]) != data[:hl]:
        raise OSError(errno.EIO, f"{path}: the overlay map's header is damaged; the staged file's "
                                 "written ranges cannot be told from its committed bytes")
    magic, fid, size = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise OSError(errno.EIO, f"{path}: not an overlay map (magic {magic!r})")
    return ObjectId(fid), size


def _sealed(data: bytes) -> bytes:
    return data + CRC.pack(zlib.crc32(data))


def _record(kind: bytes, a: int, b: int) -> bytes:
    return _sealed(RECORD.pack(kind, a, b))


class Overlay:
    """The written extents of one spool file over its committed File (in memory, and
    the map on disk that holds them)."""

    def __init__(self, path: str, fid: ObjectId, base_size: int, fd: int | None) -> None:
        self.path = path
        self.fid = fid
        self.base_size = base_size
        self.limit = base_size
        self.starts: list[int] = []   # disjoint extents [starts[i], ends[i]), sorted
        self.ends: list[int] = []
        self.records = 0              # records in the map since its header
        self._fd = fd                 # the map, open for appending (None: read-only)

    # -- the map on disk -----------------------------------------------------------------
    @classmethod
    def create(cls, spool_path: str, fid: ObjectId, size: int) -> Overlay:
        """The map of a spool taken from committed File ``fid`` of ``size`` bytes, durable
        (temp, fsync, rename, fsync dir) when this returns."""
        path = map_path(spool_path)
        write_durable(path, _sealed(HEADER.pack(MAGIC, fid, size)), mode=0o600)
        return cls(path, fid, size, os.open(path, os.O_WRONLY | os.O_APPEND))

    @classmethod
    def load(cls, spool_path: str, *, writable: bool = True) -> Overlay | None:
        """The overlay of ``spool_path`` (None: a spool without one, whose bytes are all
        its own). A torn last record is dropped (and, ``writable``, cut off the map so
        appends follow good records); the limit is the spool's size at most (a
        truncation whose record a crash lost)."""
        path = map_path(spool_path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        fid, size = _header(path, data)
        hl = HEADER.size + CRC.size
        ov = cls(path, fid, size, None)
        rl = RECORD.size + CRC.size
        pos = hl
        while pos + rl <= len(data):
            rec = data[pos:pos + rl]
            if _sealed(rec[:RECORD.size]) != rec:
                if pos + 2 * rl <= len(data):
                    raise OSError(errno.EIO, f"{path}: overlay map record {ov.records + 1} is damaged and "
                                             "more follow it; the staged file cannot be read safely")
                break  # the last record, torn by a crash
            kind, a, b = RECORD.unpack_from(rec)
            if kind == b"W":
                ov._add(a, b)
            elif kind == b"T":
                ov._cut(a)
            else:
                raise OSError(errno.EIO, f"{path}: overlay map record {ov.records + 1} has unknown kind {kind!r}")
            ov.records += 1
            pos += rl
        ov._cut(os.stat(spool_path).st_size)
        if writable:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            if pos != len(data):
                log.warning("%s: dropped a torn last record (%d bytes)", path, len(data) - pos)
                os.ftruncate(fd, pos)
            ov._fd = fd
        return ov

    def _append(self, rec: bytes) -> None:
        if self._fd is None:
            raise OSError(errno.EROFS, f"{self.path}: opened to read")
        n = os.write(self._fd, rec)
        if n != len(rec):
            raise OSError(errno.EIO, f"{self.path}: short append ({n} of {len(rec)} bytes)")
        self.records += 1

    def sync(self) -> None:
        """Make the map durable (call after the spool's own fsync); a map with many more
        records than extents is rewritten first."""
        if self._fd is None:
            return
        if self.records > COMPACT_AFTER + 2 * len(self.starts):
            self.compact()
        os.fsync(self._fd)

    def compact(self) -> None:
        """Rewrite the map as its header, one record per extent and the limit (durably:
        the spool's bytes must be durable already, as :meth:`sync` has them)."""
        recs = [_record(b"W", a, b) for a, b in zip(self.starts, self.ends, strict=True)]
        if self.limit < self.base_size:
            recs.append(_record(b"T", self.limit, 0))
        write_durable(self.path, [_sealed(HEADER.pack(MAGIC, self.fid, self.base_size)), *recs], mode=0o600)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.records = len(recs)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- changes -------------------------------------------------------------------------
    def wrote(self, off: int, n: int) -> None:
        """Bytes [off, off + n) were written into the spool (they are there already)."""
        end = min(off + n, self.limit)  # at or past the limit every byte is the spool's anyway
        if n <= 0 or off >= end or self._covered(off, end):
            return
        self._append(_record(b"W", off, end))
        self._add(off, end)

    def truncated(self, size: int) -> None:
        """The spool was truncated (or extended) to ``size`` bytes (it is already)."""
        if size >= self.limit:
            return  # an extension past the limit: zeros the spool holds
        self._append(_record(b"T", size, 0))
        self._cut(size)

    def _covered(self, a: int, b: int) -> bool:
        i = bisect.bisect_right(self.starts, a) - 1
        return i >= 0 and self.ends[i] >= b

    def _add(self, a: int, b: int) -> None:
        i = bisect.bisect_left(self.ends, a)    # the first extent ending at or after a
        j = bisect.bisect_right(self.starts, b)  # extents starting at or before b touch it
        if i < j:
            a, b = min(a, self.starts[i]), max(b, self.ends[j - 1])
        self.starts[i:j] = [a]
        self.ends[i:j] = [b]

    def _cut(self, size: int) -> None:
        self.limit = min(self.limit, size)
        k = bisect.bisect_left(self.starts, size)
        del self.starts[k:], self.ends[k:]
        if self.ends and self.ends[-1] > size:
            self.ends[-1] = size

    # -- reading -------------------------------------------------------------------------
    def pieces(self, off: int, n: int) -> list[Piece]:
        """[off, off + n) as (offset, length, from_spool) pieces, in order."""
        end = off + n
        out: list[Piece] = []
        pos = off
        i = bisect.bisect_right(self.ends, pos)  # the first extent ending after pos
        while pos < end:
            if pos >= self.limit:
                out.append((pos, end - pos, True))
                break
            if i < len(self.starts) and self.starts[i] <= pos:
                stop = min(self.ends[i], end)
                out.append((pos, stop - pos, True))
                i += 1
            else:
                stop = min(end, self.limit, self.starts[i] if i < len(self.starts) else end)
                out.append((pos, stop - pos, False))
            pos = stop
        return out

    def spooled(self) -> int:
        """Bytes below the limit the spool holds (what range copy-on-write copied)."""
        return sum(b - a for a, b in zip(self.starts, self.ends, strict=True))

    def read(self, spool_fd: int, size: int, off: int, n: int, committed: Callable[[int, int], bytes]) -> bytes:
        """``n`` bytes at ``off`` of the file (``size`` bytes long): written ranges from
        the spool, the others through ``committed(off, n)``."""
        n = max(0, min(n, size - off))
        parts = [os.pread(spool_fd, k, a) if own else committed(a, k) for a, k, own in self.pieces(off, n)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def materialize(self, spool_path: str, committed: Callable[[int, int], bytes], dest: str,
                    threads: int = MATERIALIZE_THREADS) -> None:
        """Write the whole file to ``dest`` (what a commit ingests: the same bytes a full
        copy would hold), blocks decoded on ``threads`` threads, a bounded window of them
        in flight. Not fsynced: it lives only while the commit reads it."""
        fd_in = os.open(spool_path, os.O_RDONLY)
        fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            size = os.fstat(fd_in).st_size

            def block(off: int) -> None:
                data = self.read(fd_in, size, off, COPY_BLOCK, committed)
                if len(data) != min(COPY_BLOCK, size - off):
                    raise OSError(errno.EIO, f"{spool_path}: short read at {off}")
                os.pwrite(fd, data, off)

            with ThreadPoolExecutor(threads) as pool:
                window: deque[Future] = deque()
                for off in range(0, size, COPY_BLOCK):
                    window.append(pool.submit(block, off))
                    if len(window) >= 2 * threads:
                        window.popleft().result()
                while window:
                    window.popleft().result()
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            os.unlink(dest)
            raise
        finally:
            os.close(fd_in)
        os.close(fd)


def committed_under(area, spools: set[str]) -> set[ObjectId]:
    """The committed Files the overlays of ``spools`` read (what gc must keep), loading
    each (when the area opens: before anything can resize a spool, see Overlay.load). A
    map with a damaged record is logged (reading its file answers EIO naming it) and the
    File its intact header names is still kept, so a repair can read the committed bytes."""
    out = set()
    for s in spools:
        try:
            ov = area.overlay(s)
        except OSError as e:
            log.error("%s", e)
            path = map_path(area.spool_path(s))
            try:
                with open(path, "rb") as f:
                    out.add(_header(path, f.read(HEADER.size + CRC.size))[0])
            except OSError:
                pass  # no header to name a File: nothing of the repository is read through it
            continue
        if ov is not None:
            out.add(ov.fid)
    return out


__all__ = ["MAP_SUFFIX", "Overlay", "committed_under", "map_path"]
