"""The object store of a remote, for mounts: frames read from the remote's packs by range
GET (then ``loose/<hex>``), kept in a local chunk cache, with every fetch bounded.

- Reads locate an object in the pack indexes (loaded once, refreshed on a miss at most
  every ``refresh_every`` seconds), fetch exactly its byte range, check its frame header
  (the checksum and the object's own id) and keep the frame in the :class:`ChunkCache`.
  :meth:`fetch_many` fetches many objects at once, coalescing objects that lie close
  together in one pack into one range GET (a gap of at most ``gap`` bytes is fetched
  and dropped), and follows delta bases, so the decode that follows needs no network.
- Writes (put, replace, delete) go to ``loose/<hex>`` with conditional writes, so the
  store passes the ObjectStore conformance class; packs are immutable.
- Every remote call runs in a small pool of fetch threads and the caller waits at most
  the rest of its ``read_budget`` (retrying transient failures with backoff inside it):
  a stalled store makes that read fail with :class:`ObjectUnavailable` naming the
  object (EIO in a mount) after the budget, however long the stalled request hangs.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ..objects import codecs
from ..objects.cache import ByteLRU
from ..objects.errors import CoralError, CorruptObject, ObjectNotFound, ObjectUnavailable  # re-exported
from ..objects.ids import ObjectId, from_hex, is_hex_prefix, to_hex
from ..objects.stores import ObjectStore
from .blobs import BlobNotFound, BlobStore, PreconditionFailed, RemoteError, RemoteUnavailable
from .cache import ChunkCache
from .packs import DamagedPack, Location, PackIndexes, decode_index, encode_index
from .refs import RemoteRefs

log = logging.getLogger(__name__)
T = TypeVar("T")

LOOSE = "loose/"
DEFAULT_CACHE_SIZE = 10 << 30
DEFAULT_BUDGET = 30.0
COALESCE_GAP = 256 << 10     # a hole this small is cheaper to fetch than another request
COALESCE_MAX = 16 << 20      # largest range GET of coalesced objects (more go out in parallel)
FETCH_THREADS = 4
FRESH_BYTES = 64 << 20       # frames just fetched, kept in memory for their decode


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "coralfs")


def remote_key(url: str, endpoint: str | None = None) -> str:
    """The cache directory name of one remote (its URL and endpoint)."""
    return hashlib.sha256(f"{url}\n{endpoint or ''}".encode()).hexdigest()[:20]



class IndexCache:
    """The remote's blobs as PackIndexes reads them, with each ``.idx`` kept on disk: an
    index is named by the hash of its records and never changes, so a mount of a remote
    it has seen lists ``packs/`` and fetches only indexes pushed since. A cached index is
    checked (its checksum and its name) before use; a damaged one is fetched again."""

    def __init__(self, blobs: BlobStore, root: str) -> None:
        self.blobs = blobs
        self.url = blobs.url
        self.root = root
        self.fetched_bytes = 0
        os.makedirs(root, mode=0o700, exist_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.blobs.list(prefix)

    def _sound(self, key: str, data: bytes) -> bool:
        try:
            recs = decode_index(data, self.url, key)
        except DamagedPack:
            return False
        return key.endswith(f"pack-{encode_index(recs)[0]}.idx")

    def get(self, key: str) -> bytes:
        path = os.path.join(self.root, os.path.basename(key))
        try:
            with open(path, "rb") as f:
                data = f.read()
            if self._sound(key, data):
                return data
        except FileNotFoundError:
            pass
        data = self.blobs.get(key)
        self.fetched_bytes += len(data)
        if self._sound(key, data):   # a damaged index is never kept (PackIndexes names it)
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except OSError as e:
                log.warning("cannot keep pack index %s in the cache (%s)", key, e)
        return data


class RemoteObjectStore(ObjectStore):
    """A remote's objects as an ObjectStore (see the module docstring)."""

    def __init__(self, blobs: BlobStore, cache_dir: str, cache_size: int = DEFAULT_CACHE_SIZE, *,
                 read_budget: float = DEFAULT_BUDGET, refresh_every: float = 10.0,
                 fetch_threads: int = FETCH_THREADS, gap: int = COALESCE_GAP, retry_delay: float = 0.2,
                 index_dir: str | None = None) -> None:
        """``cache_dir``: the chunk cache; ``index_dir``: where pack indexes are kept
        (None: fetched by every store)."""
        self.blobs = blobs
        self.where = blobs.url
        self.read_budget = read_budget
        self.refresh_every = refresh_every
        self.gap = gap
        self.retry_delay = retry_delay
        # Remote calls run here, never in the caller's thread: a caller stops waiting when
        # its budget is spent even if the request itself hangs until the client's timeout.
        self._pool = cf.ThreadPoolExecutor(max(1, fetch_threads), thread_name_prefix="coralfs-fetch")
        self._runs = cf.ThreadPoolExecutor(max(1, fetch_threads), thread_name_prefix="coralfs-fetch-run")
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._pinned: dict[ObjectId, bytes] = {}
        # Frames just fetched, for the decode that follows (no read back from the disk cache).
        self._fresh = ByteLRU(FRESH_BYTES)
        self._put_times: dict[ObjectId, float] = {}
        self.counters = {"bytes_fetched": 0, "range_gets": 0, "objects_fetched": 0, "fetch_retries": 0,
                         "fetch_failures": 0, "index_refreshes": 0}
        self.cache = ChunkCache(cache_dir, cache_size)
        self._index_cache = IndexCache(blobs, index_dir) if index_dir else None
        self.indexes: PackIndexes = self.call("the pack indexes", PackIndexes, self._index_cache or blobs)
        self._last_refresh = time.monotonic()

    # -- bounded remote calls ------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args, deadline: float | None = None) -> T:
        """``fn(*args)`` in a fetch thread, waiting at most until ``deadline`` (default:
        ``read_budget`` from now); transient failures are retried with backoff inside it.
        ObjectUnavailable naming ``what`` when the budget runs out."""
        if deadline is None:
            deadline = time.monotonic() + self.read_budget
        delay = self.retry_delay
        attempt = 0
        while True:
            attempt += 1
            fut = self._pool.submit(fn, *args)
            try:
                return fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except cf.TimeoutError:
                fut.cancel()  # still queued behind stalled requests: never sent
                self._count("fetch_failures")
                log.error("%s: %s did not arrive within the %g s budget (%d attempt(s))",
                          self.where, what, self.read_budget, attempt)
                raise ObjectUnavailable(what, f"{self.where} did not answer within {self.read_budget:g} s") from None
            except RemoteUnavailable as e:
                last: Exception = e
            except (BlobNotFound, PreconditionFailed, DamagedPack):
                raise
            except RemoteError as e:   # wrong credentials, a missing bucket: no retry helps
                self._count("fetch_failures")
                raise ObjectUnavailable(what, str(e)) from None
            except CoralError:
                raise
            except Exception as e:  # noqa: BLE001 - connection resets, client timeouts: transient
                last = e
            if time.monotonic() + delay >= deadline:
                self._count("fetch_failures")
                log.error("%s: %s failed %d time(s), giving up: %s", self.where, what, attempt, last)
                raise ObjectUnavailable(what, f"{self.where}: {last} (after {attempt} attempt(s))") from None
            self._count("fetch_retries")
            log.warning("%s: fetching %s failed (%s); retrying", self.where, what, last)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    # -- locating ------------------------------------------------------------------------
    def _locate(self, oid: ObjectId, deadline: float | None = None) -> Location | None:
        loc = self.indexes.where.get(oid)
        if loc is None and self._refresh(deadline):
            loc = self.indexes.where.get(oid)
        return loc

    def _refresh(self, deadline: float | None = None) -> bool:
        """Load indexes pushed since the last look, at most once per ``refresh_every``."""
        if time.monotonic() - self._last_refresh < self.refresh_every:
            return False
        with self._refresh_lock:
            if time.monotonic() - self._last_refresh < self.refresh_every:
                return True  # another thread just did
            try:
                self.call("the pack indexes", self.indexes.refresh, deadline=deadline)
            finally:
                self._last_refresh = time.monotonic()
            self._count("index_refreshes")
        return True

    @staticmethod
    def _loose(oid: ObjectId) -> str:
        return LOOSE + to_hex(oid)

    # -- reads ---------------------------------------------------------------------------
    def has(self, oid: ObjectId) -> bool:
        if oid in self._pinned or self._locate(oid) is not None:
            return True
        return self.call(to_hex(oid), self.blobs.head, self._loose(oid)) is not None

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]:
        """Which of these have no local copy (no network: a stat per object)."""
        return [o for o in oids if o not in self._pinned and o not in self._fresh and not self.cache.contains(o)]

    def get(self, oid: ObjectId) -> bytes:
        frame = self._pinned.get(oid)
        if frame is None:
            frame = self._fresh.peek(oid)
        if frame is None:
            frame = self.cache.get(oid)
        if frame is not None:
            return frame
        deadline = time.monotonic() + self.read_budget
        loc = self._locate(oid, deadline)
        if loc is not None:
            frame = self._fetch_runs([(loc, oid)], deadline)[oid]
            self.cache.put(oid, frame)
            return frame
        try:
            frame = self.call(to_hex(oid), self.blobs.get, self._loose(oid), deadline=deadline)
        except BlobNotFound:
            raise ObjectNotFound(to_hex(oid)) from None
        self._got(1, len(frame))
        return frame

    def fetch_many(self, oids: Iterable[ObjectId]) -> None:
        """Bring these objects (and the delta bases they need) into the local cache with
        as few range GETs as their places in the packs allow, within one read budget.
        Objects no index names are left to :meth:`get` (loose ones)."""
        deadline = time.monotonic() + self.read_budget
        todo = self.missing(dict.fromkeys(oids))
        for _depth in range(64):   # readers stop at chains of 64
            if not todo:
                return
            located = [(loc, o) for o in todo if (loc := self._locate(o, deadline)) is not None]
            bases = []
            for o, frame in self._fetch_runs(located, deadline).items():
                # written to the disk cache behind the decode, which reads it from memory
                self.cache.put_later(o, frame)
                self._fresh.put(o, frame)
                h = codecs.parse_header(frame, o)
                if h.base is not None:
                    bases.append(h.base)
            todo = self.missing(dict.fromkeys(bases))

    def runs(self, oids: Iterable[ObjectId]) -> list[list[ObjectId]]:
        """``oids`` in the groups one range GET each would fetch (by their places in the
        packs; objects no index names, e.g. loose ones, in a group of their own), so a
        read-ahead can decode each group as soon as it arrives instead of waiting for a
        whole window (no network: indexes as loaded)."""
        located, rest = [], []
        for o in dict.fromkeys(oids):
            loc = self.indexes.where.get(o)
            if loc is None:
                rest.append(o)
            else:
                located.append((loc, o))
        return [[o for _loc, o in run] for run in self._plan_runs(located)] + ([rest] if rest else [])

    def _plan_runs(self, located: list[tuple[Location, ObjectId]]) -> list[list[tuple[Location, ObjectId]]]:
        """Objects at most ``gap`` bytes apart in one pack, up to COALESCE_MAX bytes: one run."""
        located = sorted(located, key=lambda x: (x[0].pack, x[0].offset))
        runs: list[list[tuple[Location, ObjectId]]] = []
        for loc, o in located:
            if runs:
                last = runs[-1]
                start, end = last[0][0].offset, last[-1][0].offset + last[-1][0].length
                if (loc.pack == last[0][0].pack and 0 <= loc.offset - end <= self.gap
                        and loc.offset + loc.length - start <= COALESCE_MAX):
                    last.append((loc, o))
                    continue
            runs.append([(loc, o)])
        return runs

    def _fetch_runs(self, located: list[tuple[Location, ObjectId]], deadline: float) -> dict[ObjectId, bytes]:
        """Frames of packed objects, checked (length, header checksum, own id): objects
        at most ``gap`` bytes apart in one pack share one range GET."""
        out: dict[ObjectId, bytes] = {}
        runs = self._plan_runs(located)
        # Several runs go out at once (a read-ahead window spans a few): each waits in its
        # own thread, all within the one deadline.
        if len(runs) == 1:
            fetched = [self._fetch_run(runs[0], deadline)]
        else:
            futs = [self._runs.submit(self._fetch_run, run, deadline) for run in runs]
            fetched = [f.result() for f in futs]
        for run, (start, data) in zip(runs, fetched):
            for loc, o in run:
                frame = data[loc.offset - start: loc.offset - start + loc.length]
                if len(frame) != loc.length:
                    raise CorruptObject(to_hex(o), f"{loc.pack} in {self.where} is cut short")
                codecs.parse_header(frame, o)  # a damaged header or another object: named, not cached
                out[o] = frame
        return out

    def _fetch_run(self, run: list[tuple[Location, ObjectId]], deadline: float) -> tuple[int, bytes]:
        """(start offset, bytes) of one run of neighbouring objects: one range GET."""
        first = run[0]
        start = first[0].offset
        end = max(loc.offset + loc.length for loc, _ in run)
        try:
            data = self.call(to_hex(first[1]), self.blobs.get_range, first[0].pack, start, end - start,
                             deadline=deadline)
        except BlobNotFound:
            raise ObjectUnavailable(to_hex(first[1]), f"{first[0].pack} is gone from {self.where} "
                                    "(repacked since the mount started? mount again)") from None
        self._got(len(run), len(data), gets=1)
        return start, data

    def _got(self, objects: int, n: int, gets: int = 0) -> None:
        with self._lock:
            self.counters["objects_fetched"] += objects
            self.counters["bytes_fetched"] += n
            self.counters["range_gets"] += gets

    def discard(self, oid: ObjectId) -> None:
        """Drop the local copy of an object that failed its decode: the next read fetches
        it again (EIO again while the remote's copy is damaged, served once repaired)."""
        self.cache.discard(oid)
        self._fresh.clear()

    def pin(self, oid: ObjectId) -> None:
        """Keep an object's frame in memory for the life of the store (what a mount walks
        on its event loop: commits, trees, files, tensors), so no such step waits on the
        network once the mount serves."""
        if oid not in self._pinned:
            self._pinned[oid] = self.get(oid)

    def get_head(self, oid: ObjectId, n: int) -> bytes:
        frame = self._pinned.get(oid)
        if frame is None and self.cache.contains(oid):
            frame = self.cache.get(oid)
        if frame is not None:
            return frame[:n]
        loc = self._locate(oid)
        if loc is not None:
            data = self.call(to_hex(oid), self.blobs.get_range, loc.pack, loc.offset, min(n, loc.length))
            self._got(0, len(data), gets=1)
            return data
        try:
            data = self.call(to_hex(oid), self.blobs.get_range, self._loose(oid), 0, n)
        except BlobNotFound:
            raise ObjectNotFound(to_hex(oid)) from None
        self._got(0, len(data), gets=1)
        return data

    def size(self, oid: ObjectId) -> int:
        loc = self._locate(oid)
        if loc is not None:
            return loc.length
        info = self.call(to_hex(oid), self.blobs.head, self._loose(oid))
        if info is None:
            raise ObjectNotFound(to_hex(oid))
        return info.size

    def age(self, oid: ObjectId) -> float:
        t = self._put_times.get(oid)
        if t is not None:
            return time.time() - t
        if not self.has(oid):
            raise ObjectNotFound(to_hex(oid))
        # Blobs carry no write time through the BlobStore interface: an object this
        # process did not write counts as brand new, so an age-based sweep spares it.
        return 0.0

    def __iter__(self) -> Iterator[ObjectId]:
        packed = list(self.indexes.where)
        yield from packed
        seen = set(packed)
        for o in self._loose_ids(""):
            if o not in seen:
                yield o

    def iter_prefix(self, prefix: str) -> Iterator[ObjectId]:
        if not is_hex_prefix(prefix):
            raise ValueError(f"{prefix!r} is not a lowercase hex prefix")
        return self._iter_prefix(prefix)

    def _iter_prefix(self, prefix: str) -> Iterator[ObjectId]:
        packed = [o for o in list(self.indexes.where) if to_hex(o).startswith(prefix)]
        yield from packed
        seen = set(packed)
        for o in self._loose_ids(prefix):
            if o not in seen:
                yield o

    def _loose_ids(self, prefix: str) -> list[ObjectId]:
        keys = self.call("the loose objects", lambda: list(self.blobs.list(LOOSE + prefix)))
        out = []
        for k in sorted(keys):
            try:
                out.append(from_hex(k[len(LOOSE):]))
            except ValueError:
                continue  # not an object name
        return out

    # -- writes (loose objects; packs never change) --------------------------------------
    def put(self, oid: ObjectId, frame: bytes) -> bool:
        if oid in self._pinned or self._locate(oid) is not None:
            return False
        try:
            self.call(to_hex(oid), self.blobs.put_if, self._loose(oid), bytes(frame), None)
        except PreconditionFailed:
            return False   # written once already (by us or another writer)
        self._put_times[oid] = time.time()
        return True

    def replace(self, oid: ObjectId, frame: bytes) -> None:
        if self.call(to_hex(oid), self.blobs.head, self._loose(oid)) is None:
            if self._locate(oid) is not None:
                raise CoralError(f"object {to_hex(oid)} is in a pack of {self.where}; packs are never rewritten")
            raise ObjectNotFound(to_hex(oid))
        self.call(to_hex(oid), self.blobs.put, self._loose(oid), bytes(frame))
        self._pinned.pop(oid, None)

    def delete(self, oid: ObjectId) -> None:
        if oid in self.indexes.where:
            raise CoralError(f"object {to_hex(oid)} is in a pack of {self.where}; packs are never rewritten")
        self.call(to_hex(oid), self.blobs.delete, self._loose(oid))
        self._pinned.pop(oid, None)
        self._put_times.pop(oid, None)

    def sync_object(self, oid: ObjectId) -> None:
        pass  # a blob put returns once the store holds it durably

    def sync(self) -> None:
        pass  # a blob put returns once the store holds it durably

    # -- the rest ------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            c = dict(self.counters)
        idx = self._index_cache.fetched_bytes if self._index_cache else None
        return {**c, **self.cache.stats(), "packs": len(self.indexes.loaded), "pinned": len(self._pinned),
                "index_bytes_fetched": idx, "read_budget": self.read_budget}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._runs.shutdown(wait=False, cancel_futures=True)
        self.cache.flush()   # a warm mount after this one finds every frame fetched
        self.blobs.close()


REMOTE_MARKER = "coralfs-remote.json"


def open_remote_repository(url: str, *, endpoint: str | None = None, cache_dir: str | None = None,
                           cache_size: int = DEFAULT_CACHE_SIZE, read_budget: float = DEFAULT_BUDGET,
                           options: dict | None = None):
    """A read-only Repository over a remote: objects from a RemoteObjectStore, refs read
    from the remote, config from the remote's ``config.toml``, in a scratch directory under
    the cache directory (one per remote URL) that holds that config and nothing else."""
    import json

    from ..objects.durable import make_dirs, write_durable
    from ..objects.repository import Repository
    from .url import open_blobs, parse_url

    u = parse_url(url)
    blobs = open_blobs(u, endpoint=endpoint, options=options)
    base = os.path.join(os.path.abspath(cache_dir or default_cache_dir()), "remotes", remote_key(str(u), endpoint))
    try:
        store = RemoteObjectStore(blobs, os.path.join(base, "chunks"), cache_size, read_budget=read_budget,
                                  index_dir=os.path.join(base, "indexes"))
        try:
            marker = store.call(REMOTE_MARKER, blobs.get, REMOTE_MARKER)
        except BlobNotFound:
            raise RemoteError(f"{u} is not a coralfs remote (no {REMOTE_MARKER}): push a repository to it first "
                              "(`coralfs push`)") from None
        try:
            fmt = json.loads(marker).get("format")
        except (ValueError, AttributeError):
            fmt = None
        if fmt != 1:
            raise RemoteError(f"{u}: {REMOTE_MARKER} names format {fmt!r}; this coralfs reads remote format 1")
        try:
            config = store.call("config.toml", blobs.get, "config.toml")
        except BlobNotFound:
            raise RemoteError(f"{u} has no config.toml: push to it again (`coralfs push`)") from None
    except BaseException:
        blobs.close()
        raise
    scratch = os.path.join(base, "repo")
    make_dirs(scratch)
    path = os.path.join(scratch, "config.toml")
    try:
        with open(path, "rb") as f:
            same = f.read() == config
    except FileNotFoundError:
        same = False
    if not same:
        write_durable(path, config)
    # Reads bounded by the store's budget like every object read; moving refs is push's job.
    refs = RemoteRefs(blobs, call=store.call,
                      read_only=f"the refs of {blobs.url} are read-only here; move them with `coralfs push`")
    return Repository(scratch, store, refs)


def warm_snapshot(repo, cid: ObjectId, headers: bool = False) -> int:
    """Fetch and pin what a mount of commit ``cid`` walks outside its read path (the
    commit, its tree, every file and tensor object; with ``headers``, also the first
    segment of each file, which --include rewrites), a batch per level. Returns the
    number of objects pinned."""
    from ..objects.kinds import BytesSegment, Commit, File, Tensor, TensorSegment, Tree
    store: RemoteObjectStore = repo.store

    def load(ids: list[ObjectId]) -> None:
        store.fetch_many(ids)
        for o in ids:
            store.pin(o)

    load([cid])
    c = repo.odb.get_object(cid, Commit)
    load([c.tree])
    tree = repo.odb.get_object(c.tree, Tree)
    files = list(dict.fromkeys(e.file for e in tree.entries.values() if not e.is_dir))
    load(files)
    tensors: list[ObjectId] = []
    chunks: list[ObjectId] = []
    for fid in files:
        try:
            f = repo.odb.get_object(fid, File)
        except CorruptObject:
            continue   # a symlink's target is not a File; a damaged one fails on open
        tensors += [s.tensor for s in f.segments if isinstance(s, TensorSegment)]
        if headers and f.segments and isinstance(f.segments[0], BytesSegment):
            chunks += [oid for oid, _n in f.segments[0].chunks]
    tensors = list(dict.fromkeys(tensors))
    load(tensors)
    for t in tensors:
        repo.odb.get_object(t, Tensor)
    store.fetch_many(chunks)
    store.cache.flush()   # what a warm mount walks first is on disk before this one serves
    return 3 + len(files) + len(tensors)


__all__ = ["DEFAULT_CACHE_SIZE", "ObjectUnavailable", "RemoteObjectStore",
           "default_cache_dir", "open_remote_repository", "remote_key", "warm_snapshot"]
