"""A persistent similarity index: finds a delta base for a tensor with no same-path base.

A tensor's sketch is the sign bits of 128 elements at fixed positions (a fine-tune of a
model keeps the signs of almost all of its weights). Sketches are split into 8 bands of 16
bits; tensors sharing a band with the same element width and byte length are candidates,
ranked by Hamming distance. The index lives in SQLite on disk (bounded memory, shared by
processes, survives restarts); it is a cache, so a lost index costs only compression.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
from typing import TYPE_CHECKING

from .durable import create_file, make_dirs
from .ids import ObjectId
from .lazy import lazy_module

np = lazy_module("numpy")  # imported on first use: commands that never compute start without it

if TYPE_CHECKING:
    from .dtypes import DType
    from .regions import Region
    from .writer import Source

log = logging.getLogger(__name__)

SAMPLES = 128
BANDS = 8
MAX_DISTANCE = 32  # of 128 bits: beyond this a delta is unlikely to help


class SimilarityIndex:
    def __init__(self, path: str) -> None:
        self.path = path
        make_dirs(os.path.dirname(path))
        create_file(path)
        self._local = threading.local()
        self._rebuild_lock = threading.Lock()
        try:
            self._create()
        except sqlite3.DatabaseError as e:
            self._rebuild(e)

    def _create(self) -> None:
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS tensors (id BLOB PRIMARY KEY, width INT, "
                       "nbytes INT, sketch BLOB)")
            db.execute("CREATE TABLE IF NOT EXISTS bands (key INT, id BLOB)")
            db.execute("CREATE INDEX IF NOT EXISTS bands_key ON bands(key)")
            # A damaged file often opens fine and fails on its first real read.
            db.execute("SELECT count(*) FROM (SELECT 1 FROM tensors LIMIT 1)").fetchone()

    def _rebuild(self, err: Exception) -> None:
        """The index is a cache: a damaged one is removed and started afresh (the cost
        is compression for tensors with no same-path base until it fills again)."""
        with self._rebuild_lock:
            log.warning("similarity index %s is damaged (%s); rebuilding it empty", self.path, err)
            db = getattr(self._local, "db", None)
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
                self._local.db = None
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
            self._create()

    def _guard(self, fn, *args):
        """Run one index operation; on a damaged database rebuild and retry once."""
        try:
            return fn(*args)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            self._rebuild(e)
            return fn(*args)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            # A cache: losing its last writes to a crash costs compression, never data.
            db.execute("PRAGMA synchronous=OFF")
        return db

    @staticmethod
    def positions(length: int, width: int) -> np.ndarray:
        """Byte offsets (within a tensor) of the bytes holding the sampled sign bits: the
        last byte of each sampled little-endian element."""
        n = length // width
        return np.linspace(0, n - 1, SAMPLES).astype(np.int64) * width + (width - 1)

    @staticmethod
    def sketch_from(top_bytes: np.ndarray) -> bytes:
        return np.packbits((top_bytes >> 7).astype(np.uint8)).tobytes()

    @classmethod
    def sketch(cls, src: Source, region: Region, dt: DType) -> bytes:
        """Sign bits of SAMPLES elements spread evenly over the tensor (read from disk;
        the writer takes them from chunks it has in memory when it can)."""
        pos = cls.positions(region.length, dt.width)
        top = np.array([src.read_at(region.offset + int(p), 1)[0] for p in pos], dtype=np.uint8)
        return cls.sketch_from(top)

    @staticmethod
    def _keys(width: int, nbytes: int, sketch: bytes) -> list[int]:
        # blake2b, not hash(): keys must be equal across processes.
        keys = []
        for b in range(BANDS):
            band = sketch[b * 2:(b + 1) * 2]
            d = hashlib.blake2b(f"{width}:{nbytes}:{b}:".encode() + band, digest_size=7).digest()
            keys.append(int.from_bytes(d, "little"))
        return keys

    def add(self, tid: ObjectId, width: int, nbytes: int, sketch: bytes) -> None:
        self._guard(self._add, tid, width, nbytes, sketch)

    def _add(self, tid: ObjectId, width: int, nbytes: int, sketch: bytes) -> None:
        db = self._db()
        with db:
            cur = db.execute("INSERT OR IGNORE INTO tensors VALUES (?,?,?,?)",
                             (bytes(tid), width, nbytes, sketch))
            if cur.rowcount:
                db.executemany("INSERT INTO bands VALUES (?,?)",
                               [(k, bytes(tid)) for k in self._keys(width, nbytes, sketch)])

    def find(self, width: int, nbytes: int, sketch: bytes) -> ObjectId | None:
        return self._guard(self._find, width, nbytes, sketch)

    def _find(self, width: int, nbytes: int, sketch: bytes) -> ObjectId | None:
        keys = self._keys(width, nbytes, sketch)
        db = self._db()
        q = ",".join("?" * len(keys))
        rows = db.execute(f"SELECT DISTINCT t.id, t.sketch FROM bands b JOIN tensors t ON t.id=b.id "
                          f"WHERE b.key IN ({q}) AND t.width=? AND t.nbytes=? LIMIT 64",
                          (*keys, width, nbytes)).fetchall()
        best, best_d = None, MAX_DISTANCE + 1
        mine = int.from_bytes(sketch, "little")
        for tid, sk in rows:
            d = (mine ^ int.from_bytes(sk, "little")).bit_count()
            if d < best_d:
                best, best_d = ObjectId(tid), d
        return best

    def remove_missing(self, alive: set[ObjectId]) -> int:
        """Forget tensors gc removed."""
        return self._guard(self._remove_missing, alive)

    def _remove_missing(self, alive: set[ObjectId]) -> int:
        db = self._db()
        gone = [r[0] for r in db.execute("SELECT id FROM tensors") if ObjectId(r[0]) not in alive]
        with db:
            db.executemany("DELETE FROM tensors WHERE id=?", [(g,) for g in gone])
            db.executemany("DELETE FROM bands WHERE id=?", [(g,) for g in gone])
        return len(gone)
