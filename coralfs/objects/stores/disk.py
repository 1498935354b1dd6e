"""DiskStore: loose objects under ``REPO/objects``."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from ..durable import dead_temps, fsync_dir, inherited_file_mode, make_dirs, sync_filesystem, write_durable, write_temp
from ..errors import CoralError, ObjectNotFound
from ..ids import HEX_LEN, ObjectId, from_hex, is_hex_prefix, to_hex
from .base import ObjectStore

BATCH_BYTES = 256 << 20   # pending bytes of a batch that make it flush (they sit in the page cache)


class DiskStore(ObjectStore):
    """Loose objects: ``objects/ab/cdef...``, each written once, durably.

    Files are fsynced before their rename; the fan-out directories touched are fsynced
    together in :meth:`sync`, which a commit calls before it moves a ref. Inside
    :meth:`batch` (a commit, a fetch or clone) objects skip their own fsync: see there.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        # In a batch: objects written to hidden temp files, not yet durable (id -> temp).
        self._pending: dict[ObjectId, str] = {}
        # In a batch: re-encoded frames of objects that have a name (or a pending one),
        # written to hidden temp files; renamed over the object only after the flush has
        # made the names of the pending objects durable (id -> temp).
        self._replacing: dict[ObjectId, str] = {}
        self._pending_bytes = 0
        self._batching = 0
        self._flush_bytes = BATCH_BYTES
        self._prefix = os.path.join(root, "")
        # Fan-out directories seen to exist, and the mode a new file there inherits
        # (durable.inherited_file_mode): a stat each put otherwise. Nothing here removes
        # them; one removed meanwhile by hand is made again when a write finds it gone.
        self._dir_modes: dict[str, int] = {}

    @contextlib.contextmanager
    def batch(self, flush_bytes: int = 0) -> Iterator[None]:
        """Within it, :meth:`put` writes each frame to a hidden temp file without an
        fsync, and :meth:`replace` does the same for a re-encoded frame; :meth:`flush`
        (each ``flush_bytes`` written, on leaving the outermost batch, in :meth:`sync`)
        makes them all durable with one flush of the file system, renames the new objects
        into place, flushes again for their names, and only then renames the re-encoded
        frames over their objects (and flushes a third time). An object gets its name only
        once its bytes are durable, as without a batch, and a reverse delta never replaces
        its parent's keyframe before the keyframe it names is durable under its name, so a
        crash leaves whole objects and old frames or hidden temp files (never a name
        without its bytes, never a delta without its base); reads see pending frames
        meanwhile. A clone of hundreds of objects paid an fsync per object and per
        fan-out directory, a commit of a 45 MB checkpoint ~450 of them."""
        with self._lock:
            self._batching += 1
            if flush_bytes:
                self._flush_bytes = flush_bytes
        try:
            yield
        finally:
            with self._lock:
                self._batching -= 1
                outermost = not self._batching
                if outermost:
                    self._flush_bytes = BATCH_BYTES
            if outermost:
                self.flush()   # an inner batch leaves its frames to the outer one's flush

    @property
    def batching(self) -> bool:
        """Whether puts are pending until a flush (inside :meth:`batch`)."""
        return bool(self._batching)

    def flush(self) -> None:
        """Make the batch's pending objects durable and give them their names, then swap
        in the re-encoded frames (see :meth:`batch` for the order)."""
        with self._flush_lock:
            with self._lock:
                # One snapshot of both: a re-encoded frame registered before it names a
                # keyframe put before it, which is then in ``items`` or named already.
                items = list(self._pending.items())
                swaps = list(self._replacing.items())
            if not items and not swaps:
                return
            try:
                sync_filesystem(self.root)        # their bytes, new objects and re-encodings
            except BaseException:
                # Their bytes may not be on disk (a failed writeback is not reported
                # twice): none of them gets a name, nothing is swapped in.
                self._discard(items, swaps)
                raise
            for oid, tmp in items:
                path = self._path(oid)
                _link_new(tmp, path)
                with self._lock:
                    del self._pending[oid]
                    self._dirty.add(os.path.dirname(path))
            if swaps:
                if items:
                    try:
                        sync_filesystem(self.root)  # the names the re-encoded frames may refer to
                    except BaseException:
                        self._discard([], swaps)  # the parents stay the keyframes they are
                        raise
                with _locked_dir(self.root):
                    for oid, tmp in swaps:
                        with self._lock:
                            # A later replace of the same object took its place: that one is
                            # not in this flush's first sync; the next flush swaps it.
                            if self._replacing.get(oid) != tmp:
                                continue
                            del self._replacing[oid]
                        self._swap(oid, tmp)
            with self._lock:
                self._pending_bytes = sum(os.path.getsize(t) for t in
                                          [*self._pending.values(), *self._replacing.values()])
                synced = set(self._dirty)
            sync_filesystem(self.root)            # their names (and every directory made)
            with self._lock:
                self._dirty -= synced

    def _discard(self, items: list[tuple[ObjectId, str]], swaps: list[tuple[ObjectId, str]]) -> None:
        """Forget and remove the temp files of ``items`` and ``swaps`` (a failed flush)."""
        with self._lock:
            for oid, tmp in items:
                if self._pending.get(oid) == tmp:
                    del self._pending[oid]
            for oid, tmp in swaps:
                if self._replacing.get(oid) == tmp:
                    del self._replacing[oid]
        for _, tmp in [*items, *swaps]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _swap(self, oid: ObjectId, tmp: str) -> bool:
        """Rename the re-encoded frame ``tmp`` over ``oid`` unless the base it names is a
        delta itself now (under the objects directory's lock, held by the caller). The
        base is a keyframe when the frame is encoded; another process may since have
        named its own frame of the same content, a delta (an object's name goes to
        whichever frame of it is named first). Swapping then could close a cycle
        (``oid`` -> base -> ``oid``), so ``oid`` keeps its frame: it costs space only."""
        from ..codecs import DELTA_CODECS, parse_header
        try:
            with open(tmp, "rb") as f:
                base = parse_header(f.read(4096), oid).base
            if base is not None:
                bh = parse_header(self._read(base, 4096), base)
                if bh.codec in DELTA_CODECS:
                    os.unlink(tmp)
                    return False
        except CoralError:  # the base is gone or unreadable: keep the frame that reads
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            return False
        os.replace(tmp, self._path(oid))
        return True

    def _path(self, oid: ObjectId) -> str:
        h = oid.hex()
        return f"{self._prefix}{h[:2]}/{h[2:]}"

    def has(self, oid: ObjectId) -> bool:
        return oid in self._pending or os.path.exists(self._path(oid))

    def put(self, oid: ObjectId, frame: bytes) -> bool:
        path = self._path(oid)
        d = path[:len(self._prefix) + 2]
        if self._batching and (oid in self._pending or os.path.exists(path)):
            return False
        if self._batching:
            tmp = self._write_temp(d, frame)
            with self._lock:
                if oid in self._pending:   # another thread put it meanwhile
                    os.unlink(tmp)
                    return False
                self._pending[oid] = tmp
                self._pending_bytes += len(frame)
                # Another thread's batch may have ended meanwhile: then no flush is coming.
                full = self._pending_bytes >= self._flush_bytes or not self._batching
            if full:
                self.flush()
            return True
        self._fan_out(d)
        try:
            written = write_durable(path, frame, readonly=True, sync_dir=False, exclusive=True)
        except FileNotFoundError:
            self._fan_out(d, again=True)
            written = write_durable(path, frame, readonly=True, sync_dir=False, exclusive=True)
        if written:
            with self._lock:
                self._dirty.add(d)
        return written

    def _fan_out(self, d: str, again: bool = False) -> int:
        """Make fan-out directory ``d`` if it is missing; the mode of a new file in it."""
        mode = None if again else self._dir_modes.get(d)
        if mode is None:
            if not os.path.isdir(d):
                make_dirs(d)
                with self._lock:
                    self._dirty.add(self.root)
            mode = self._dir_modes[d] = inherited_file_mode(d) & 0o444
        return mode

    def _write_temp(self, d: str, frame: bytes) -> str:
        """A batch's temp file for ``frame`` in fan-out directory ``d`` (no fsync)."""
        try:
            return write_temp(d, frame, inherited=self._fan_out(d), sync=False, writeback=True)
        except FileNotFoundError:
            return write_temp(d, frame, inherited=self._fan_out(d, again=True), sync=False, writeback=True)

    def _candidates(self, oid: ObjectId) -> list[str]:
        """Where ``oid``'s current frame may be: a pending re-encoding, a pending object's
        temp file, its name (in that order: a flush may rename one while it is read)."""
        out = [t for t in (self._replacing.get(oid), self._pending.get(oid)) if t]
        out.append(self._path(oid))
        return out

    def _read(self, oid: ObjectId, n: int = -1) -> bytes:
        for path in self._candidates(oid):
            try:
                with open(path, "rb") as f:
                    return f.read(n)
            except FileNotFoundError:
                continue
        raise ObjectNotFound(to_hex(oid))

    def get(self, oid: ObjectId) -> bytes:
        return self._read(oid)

    def get_head(self, oid: ObjectId, n: int) -> bytes:
        return self._read(oid, n)

    def replace(self, oid: ObjectId, frame: bytes) -> None:
        path = self._path(oid)
        if self._batching:
            if not self.has(oid):
                raise ObjectNotFound(to_hex(oid))
            # Swapped in by the flush, after the names of the objects put before it.
            tmp = self._write_temp(os.path.dirname(path), frame)
            with self._lock:
                old = self._replacing.get(oid)
                self._replacing[oid] = tmp
                self._pending_bytes += len(frame)
                full = self._pending_bytes >= self._flush_bytes
            if old is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)
            if full:
                self.flush()
            return
        if oid in self._pending or oid in self._replacing:
            self.flush()
        if not os.path.exists(path):
            raise ObjectNotFound(to_hex(oid))
        tmp = write_temp(os.path.dirname(path), frame, readonly=True)
        with _locked_dir(self.root):
            self._swap(oid, tmp)
        with self._lock:
            self._dirty.add(os.path.dirname(path))

    def sync_object(self, oid: ObjectId) -> None:
        if self._batching:
            # What may refer to it from an existing object (a re-encoded parent) goes
            # through replace, which the flush swaps in only after this object's name is
            # durable; new objects referring to it are named in the same flush, unreachable
            # until a ref moves after sync(). Nothing to wait for now.
            return
        if oid in self._pending or oid in self._replacing:
            self.flush()   # durable and named, directory included
            return
        fsync_dir(os.path.dirname(self._path(oid)))

    def _stat(self, oid: ObjectId) -> os.stat_result:
        for path in self._candidates(oid):
            try:
                return os.stat(path)
            except FileNotFoundError:
                continue
        raise ObjectNotFound(to_hex(oid))

    def size(self, oid: ObjectId) -> int:
        return self._stat(oid).st_size

    def age(self, oid: ObjectId) -> float:
        return time.time() - self._stat(oid).st_mtime

    def delete(self, oid: ObjectId) -> None:
        if oid in self._pending or oid in self._replacing:
            self.flush()
        try:
            os.unlink(self._path(oid))
        except FileNotFoundError:
            pass

    def __iter__(self) -> Iterator[ObjectId]:
        # Pending objects of a batch are listed once, whether a flush names them meanwhile.
        pending = set(self._pending)
        for d in sorted(os.listdir(self.root)):
            if len(d) == 2:
                yield from (o for o in self._ids_in(d, "") if o not in pending)
        yield from pending

    def iter_prefix(self, prefix: str) -> Iterator[ObjectId]:
        if not is_hex_prefix(prefix):
            raise ValueError(f"{prefix!r} is not a lowercase hex prefix")
        if len(prefix) < 2:  # two digits name one fan-out directory; fewer, all of them
            yield from (o for o in self if to_hex(o).startswith(prefix))
            return
        pending = {o for o in self._pending if to_hex(o).startswith(prefix)}
        if os.path.isdir(os.path.join(self.root, prefix[:2])):
            yield from (o for o in self._ids_in(prefix[:2], prefix[2:]) if o not in pending)
        yield from pending

    def _ids_in(self, d: str, start: str) -> Iterator[ObjectId]:
        """Ids in fan-out directory ``d`` whose file name starts with ``start`` (temp
        files of writes in progress and stray names are not objects)."""
        for name in sorted(os.listdir(os.path.join(self.root, d))):
            if len(name) == HEX_LEN - 2 and name.startswith(start) and not name.startswith("."):
                try:
                    yield from_hex(d + name)
                except ValueError:
                    continue

    def stale_temps(self, older_than: float) -> Iterator[tuple[str, int]]:
        """(path, size) of hidden temp files in the fan-out directories that a writer
        left behind: its process is gone (the pid in the name, see durable._temp_name)
        and the file is older than ``older_than`` seconds (a pid can be reused). A
        batch killed before its flush leaves up to BATCH_BYTES of them."""
        for d in sorted(os.listdir(self.root)):
            sub = os.path.join(self.root, d)
            if len(d) == 2 and os.path.isdir(sub):
                yield from dead_temps(sub, older_than)

    def sync(self) -> None:
        self.flush()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        # Subdirectories first, then the root that lists them.
        for d in sorted(dirty, key=len, reverse=True):
            fsync_dir(d)


def _link_new(tmp: str, path: str) -> None:
    """Give ``tmp`` the name ``path`` unless an object of that name exists: then that
    frame stays (another process named its frame of the same content first; a frame is
    never renamed over another here, so a delta never replaces the keyframe it may be
    the base of) and ``tmp`` is removed."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: a rename, checked first
        if not os.path.exists(path):
            os.rename(tmp, path)
            return
    os.unlink(tmp)


@contextlib.contextmanager
def _locked_dir(root: str) -> Iterator[None]:
    """An exclusive flock on the objects directory itself: one process at a time checks a
    re-encoded frame's base and swaps it in (two opposite swaps checked at once could
    each see the other's object still a keyframe)."""
    import fcntl
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
