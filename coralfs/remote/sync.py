"""push, fetch, pull and clone between a repository and a remote (layout: layout.py).

What crosses the wire is frames exactly as the sending side stores them, in packs of
about 32 MiB (packs.py), and ref texts. A push walks from the refs it sends, stops at
objects the remote has (its pack indexes and loose keys) and uploads the rest
children-first, so the remote never holds an object without what it references; then it
moves each ref by compare-and-swap. A fetch walks the remote's graph from its refs, level
by level, fetching the frames the local store lacks with coalesced range GETs; each frame
is verified (header, decode, SHA-256 of the content against its id) before it is written,
objects are made durable before any ref, and a damaged frame fails naming the object and
the pack with nothing of it stored.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ..objects import codecs, history
from ..objects.config import remotes
from ..objects.durable import fsync_dir, make_dirs, write_durable
from ..objects.errors import CoralError, CorruptObject
from ..objects.ids import ObjectId, hash_bytes, to_hex
from ..objects.kinds import BytesSegment, Commit, File, PackSegment, Tag, Tensor, TensorSegment, Tree
from ..objects.odb import ObjectDB
from ..objects.refs import EXPERIMENTS, HEAD, HEADS, REMOTES, TAGS, RefMoved
from ..objects.repository import SHALLOW, Repository
from ..objects.stores import DiskStore
from . import layout
from .blobs import BlobNotFound, BlobStore, RemoteError
from .graph import (
    DamagedRemoteObject,
    NewerRemoteObject,
    RemoteObjects,
    RemoteRefMoved,
    local_store,
    plan_push,
    refused_object,
)
from .journal import JOURNAL_DIR, Journal
from .packs import PACKS, TARGET_PACK, Location, PackBuilder, encode_index, pack_keys
from .packs import coalesce as _ranges
from .refs import RemoteRefs
from .url import open_blobs

log = logging.getLogger(__name__)

# Progress callback: (phase, bytes done, objects done, bytes total or None, objects total or None).
Progress = Callable[[str, int, int, int | None, int | None], None]
DEFER_MAX = 256 << 20
# A fetch keeps this many range GETs in flight, and this many bytes of frames queued for
# verification, while it verifies on VERIFY_THREADS threads.
GETS_AHEAD = 2
VERIFY_AHEAD = 48 << 20
VERIFY_THREADS = max(2, min(4, os.cpu_count() or 1))
FETCH_CACHE_MIN = 64 << 20   # the fetch's decoded-chunk cache: `cache.size`, at least this


# -- push --------------------------------------------------------------------------------

@dataclass
class RefUpdate:
    name: str              # full name on the remote (refs/heads/main)
    old: ObjectId | None   # what the remote held
    new: ObjectId
    status: str = ""       # "new", "fast-forward", "forced", "up-to-date"


@dataclass
class PushResult:
    updates: list[RefUpdate] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    packs: int = 0
    cleaned: int = 0       # interrupted uploads of an earlier push removed


def pack_target() -> int:
    """Bytes of frames per pack (CORALFS_PACK_SIZE overrides it: tests make many packs)."""
    v = os.environ.get("CORALFS_PACK_SIZE")
    return int(v) if v and v.isdigit() and int(v) > 0 else TARGET_PACK


def push(repo: Repository, blobs: BlobStore, remote: str, refs: list[str], *, force: bool = False,
         progress: Progress | None = None) -> PushResult:
    """Send ``refs`` (full local names: refs/heads/X, refs/tags/X) to the remote."""
    res = PushResult()
    wanted: list[tuple[str, ObjectId]] = []
    for name in refs:
        oid = repo.refs.read(name)
        if oid is None:
            raise CoralError(f"nothing to push: {name} does not exist (or has no commits yet)")
        wanted.append((name, oid))
    # An experiment travels with its branch: pushing exp/NAME pushes its record too.
    for name, _ in list(wanted):
        if name.startswith(HEADS + "exp/"):
            rec = repo.refs.read(EXPERIMENTS + name[len(HEADS + "exp/"):])
            if rec is not None:
                wanted.append((EXPERIMENTS + name[len(HEADS + "exp/"):], rec))
    if not layout.is_initialized(blobs):
        # the remote's HEAD (what a clone checks out): the current branch if it is pushed,
        # else the first branch pushed
        branches = [n[len(HEADS):] for n, _ in wanted if n.startswith(HEADS)]
        head = repo.head_branch()
        layout.initialize(blobs, repo.config, head if head in branches or not branches else branches[0])
    layout.check_remote(blobs)
    blobs.abandon(PACKS)   # a directory remote keeps the temp files of killed uploads (even if up to date)
    rrefs = RemoteRefs(blobs)
    for name, oid in wanted:
        old = rrefs.read(name)
        u = RefUpdate(name, old, oid)
        if old == oid:
            u.status = "up-to-date"
        elif old is None:
            u.status = "new"
        elif name.startswith((HEADS, EXPERIMENTS)) and _is_ancestor(repo, old, oid):
            u.status = "fast-forward"
        elif force:
            u.status = "forced"
        else:
            short = name.split("/", 2)[2]
            what = "tag" if name.startswith(TAGS) else "experiment record" if name.startswith(EXPERIMENTS) else "branch"
            raise RemoteRefMoved(f"{what} {short} moved on the remote {remote} ({to_hex(old)[:12]} is not in your history): "
                                 f"pull first (`coralfs pull {remote} {short}`), or push --force to replace it")
        res.updates.append(u)
    todo = [u for u in res.updates if u.status != "up-to-date"]
    if todo:
        _upload(repo, blobs, remote, [u.new for u in todo], res, progress)
    for u in todo:
        try:
            rrefs.set_if_equals(u.name, u.old, u.new, f"push: {u.status}", repo.identity(), force=u.status == "forced")
        except RefMoved:
            short = u.name.split("/", 2)[2]
            raise RemoteRefMoved(f"branch {short} moved on the remote {remote} during the push: pull first "
                                 f"(`coralfs pull {remote} {short}`) and push again (the objects sent are not sent twice)") from None
    for u in res.updates:
        if u.name.startswith(HEADS):
            track = f"{REMOTES}{remote}/{u.name[len(HEADS):]}"
            repo.refs.set_if_equals(track, None, u.new, f"push: {u.status}", force=True)
    return res


def _is_ancestor(repo: Repository, old: ObjectId, new: ObjectId) -> bool:
    if not local_store(repo.store).has(old):
        return False   # the remote has a commit this repository never saw: not a fast-forward
    try:
        return history.is_ancestor(repo, old, new)
    except CoralError:
        return False


def _upload(repo: Repository, blobs: BlobStore, remote: str, tips: list[ObjectId], res: PushResult,
            progress: Progress | None) -> None:
    journal = Journal.load(repo.path, remote, blobs.url)
    if journal.in_flight:
        for pack_id in list(journal.in_flight):
            pack_key, idx_key = pack_keys(pack_id)
            if blobs.head(idx_key) is None and blobs.head(pack_key) is not None:
                blobs.delete(pack_key)   # our interrupted upload: never indexed, so never read
                res.cleaned += 1
        journal.in_flight = []
    have = RemoteObjects(blobs)
    order = plan_push(repo, tips, have.__contains__)
    total = sum(repo.store.size(o) for o in order)
    res.objects = len(order)
    with repo.write_session():  # gc must not sweep what is being sent
        with PackSender(blobs, journal, res) as sender:
            builder = PackBuilder(pack_target())
            done = 0
            for i, oid in enumerate(order):
                frame = repo.store.get(oid)   # as stored: never re-encoded
                builder.add(oid, frame)
                done += len(frame)
                if builder.full() or i == len(order) - 1:
                    sender.send(builder)
                    builder = PackBuilder(pack_target())
                    if progress:
                        progress("push", done, i + 1, total, len(order))
    res.bytes = total
    journal.finish()


class PackSender:
    """Uploads each pack while the next one is read and built, one body on its way at a
    time: the next upload starts only once the one before is whole and indexed, so a push
    killed at any moment leaves at most one body without its index, and the next push
    re-sends at most that one pack (two bodies in flight measured faster against moto,
    but a kill could then leave two). Indexes are written in pack order, so a pack's
    objects become visible only after those of every pack before it: what references them
    is never visible first. Every pack is in the journal before its first byte leaves; a
    body whose upload or index failed stays in it for the next push's clean-up."""

    def __init__(self, blobs: BlobStore, journal: Journal, res: PushResult) -> None:
        self.blobs, self.journal, self.res = blobs, journal, res
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="coralfs-push")
        self._flight: tuple[str, bytes, Future] | None = None

    def send(self, builder: PackBuilder) -> None:
        pack_id, idx = encode_index(builder.records)
        body = b"".join(builder.parts)
        builder.parts.clear()
        self._index()   # the body before is whole and indexed before this one leaves
        self.journal.begin(pack_id)   # before the first byte leaves: the next push owns what is left of it
        self._flight = (pack_id, idx, self._pool.submit(self.blobs.put, pack_keys(pack_id)[0], body))

    def _index(self) -> None:
        """Wait for the body on its way, then write its index."""
        if self._flight is None:
            return
        pack_id, idx, fut = self._flight
        fut.result()
        self.blobs.put(pack_keys(pack_id)[1], idx)
        self._flight = None
        self.journal.done(pack_id)
        self.res.packs += 1

    def __enter__(self) -> PackSender:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._index()
        finally:
            if self._flight is not None:
                self._flight[2].cancel()
            self._pool.shutdown(wait=True)


# -- fetch -------------------------------------------------------------------------------

@dataclass
class FetchResult:
    heads: dict[str, ObjectId] = field(default_factory=dict)
    tags: dict[str, ObjectId] = field(default_factory=dict)
    head_branch: str | None = None
    objects: int = 0
    bytes: int = 0
    shallow: set[ObjectId] = field(default_factory=set)


class Fetcher:
    """Brings the closure of some remote ids into the local store, verified."""

    def __init__(self, repo: Repository, objs: RemoteObjects, *, depth: int | None = None,
                 pattern: str | None = None, progress: Progress | None = None) -> None:
        self.repo = repo
        self.objs = objs
        self.where = objs.blobs.url
        self.local = local_store(repo.store)
        # Decoded chunks kept for the deltas against them, as much as the repository's
        # `cache.size` allows (default 512 MiB). A whole fetch meets frames in pack order,
        # not in chain order: on the MiniLM series (900 MB decoded, chains of up to 7
        # deltas) read in pack key order at 512 MiB, 180 chunks were decoded again from the
        # disk (ObjectDB._decode: evicted bases and the links of their chains, 132 of them
        # SUBS/SPARSE deltas; 2.8 s); 768 MiB none; smallest frames first (_mean_frame),
        # 512 MiB none.
        cache_bytes = max(FETCH_CACHE_MIN, int(repo.config.get("cache.size")))
        self.odb = ObjectDB(self.local, cache_bytes=cache_bytes)
        self.depth = depth
        self.pattern = pattern
        self.progress = progress
        self.objects = 0
        self.bytes = 0
        self.boundary: set[ObjectId] = set()
        self.totals: tuple[int | None, int | None] = (None, None)
        # A whole fetch reads packs smallest frames first (_mean_frame), not in upload
        # order: a delta whose base is in a pack not read yet waits here (up to DEFER_MAX
        # bytes) instead of costing a second read of its base; past DEFER_MAX the range
        # holding the base is read at once (_read_waited_base).
        self.defer = False
        self._waiting: dict[ObjectId, list[tuple[ObjectId, bytes, str]]] = {}
        self._waiting_bytes = 0
        self._waits_on: dict[ObjectId, ObjectId] = {}   # a waiting delta -> its base
        # the batch obtain_many is reading: its ranges, their GETs in flight, those read,
        # and (whole fetch) the range of each id
        self._ranges: list[tuple[str, int, int, list[tuple[int, int, ObjectId]]]] = []
        self._gets: dict[int, Future] = {}
        self._read: set[int] = set()
        self._range_of: dict[ObjectId, int] = {}
        # jobs queued on the pool, oldest first, and by id (see "moving frames")
        self._order: deque[tuple[ObjectId, Future, int]] = deque()
        self._jobs: dict[ObjectId, Future] = {}
        self._pending_bytes = 0
        # ids this fetch has stored, and ids a whole fetch found missing here at its start
        # (a stat each otherwise, several times an object: see _here)
        self._stored: set[ObjectId] = set()
        self._absent: set[ObjectId] = set()
        self._depth = 0
        self._pool: ThreadPoolExecutor | None = None
        self._net: ThreadPoolExecutor | None = None

    # what is already whole here: commits reachable from local refs (their objects landed
    # before the ref moved); a fetch does not walk below them
    def _complete(self) -> set[ObjectId]:
        tips = []
        for prefix in (HEADS, TAGS, REMOTES):
            for oid in self.repo.refs.list(prefix).values():
                try:
                    tips.append(self.repo.peel(oid))
                except CoralError:
                    continue
        try:
            return set(history.walk(self.repo, tips))
        except CoralError:
            return set()

    def _wanted(self, name: str) -> bool:
        return self.pattern is None or fnmatch.fnmatchcase(name, self.pattern)

    def run(self, tips: Iterable[ObjectId]) -> None:
        complete = self._complete()
        if self.depth is None and self.pattern is None:
            # A whole fetch brings everything the remote has and this repository lacks,
            # streamed pack by pack in large ranges; the walk below then only checks that
            # the refs' closure is all here (objects nothing references any more come too:
            # gc removes them).
            missing = [oid for oid in [*self.objs.indexes.where, *self.objs.loose] if not self.local.has(oid)]
            self._absent = set(missing)
            self.totals = (sum(max(self.objs.location(o).length, 0) for o in missing), len(missing))
            self.defer = True
            try:
                self.obtain_many(missing)
            finally:
                self.defer = False
            with self._working():
                while self._waiting:   # bases no pack brought (a damaged remote): one GET each
                    base = next(iter(self._waiting))
                    if self._here(base) or base in self._jobs:
                        self._release(base)
                    else:
                        self._fetch_now(base)
        frontier: list[tuple[ObjectId, str, object]] = [(t, "any", 1) for t in tips]
        seen: set[tuple[ObjectId, str, object]] = set()
        while frontier:
            batch = []
            for item in frontier:
                key = (item[0], item[1], item[2] if item[1] in ("commit", "tensor", "any") else None)
                if key not in seen:
                    seen.add(key)
                    batch.append(item)
            self.obtain_many([oid for oid, _k, _a in batch])
            frontier = []
            for oid, kind, arg in batch:
                frontier += self._expand(oid, kind, arg, complete)

    def _expand(self, oid: ObjectId, kind: str, arg: object, complete: set[ObjectId]) -> list[tuple[ObjectId, str, object]]:
        if kind == "chunk":
            return []
        obj = self.odb.get_object(oid)
        if isinstance(obj, Tag):
            return [(obj.target, "any", arg)]
        if isinstance(obj, Commit):
            if oid in complete:
                return []
            out: list[tuple[ObjectId, str, object]] = [(obj.tree, "tree", None)]
            d = int(arg)  # type: ignore[call-overload]
            if self.depth is not None and d >= self.depth and obj.parents:
                self.boundary.add(oid)
            elif oid in self.repo.shallow:
                pass   # a shallow boundary stays one
            else:
                out += [(p, "commit", d + 1) for p in obj.parents]
            return out
        if isinstance(obj, Tree):
            return [(e.file, "file", path) for path, e in obj.entries.items()]
        if isinstance(obj, File):
            whole = self._wanted(str(arg))
            out = []
            for s in obj.segments:
                if isinstance(s, (BytesSegment, PackSegment)):
                    # a pack of small tensors travels whole if any of them is wanted
                    if whole or (isinstance(s, PackSegment) and any(self._wanted(t.name) for t in s.tensors)):
                        out += [(c, "chunk", None) for c, _n in s.chunks]
                elif isinstance(s, TensorSegment):
                    out.append((s.tensor, "tensor", whole or self._wanted(s.name)))
            return out
        if isinstance(obj, Tensor):
            return [(c, "chunk", None) for c in obj.chunks] if arg else []
        return []

    # -- moving frames -------------------------------------------------------------------
    # Frames are verified and written on a small pool (zstd, numpy, hashlib and the file
    # writes release the GIL) while the main thread issues the next range GETs; a delta's
    # job starts when its base's job is done (submitted first, so the oldest job never
    # waits on a later one; no pool thread blocks on it). Decoded chunks go to the cache,
    # so a delta reads its base from memory instead of decoding it again from the disk.

    def obtain_many(self, oids: list[ObjectId]) -> None:
        need: dict[ObjectId, Location] = {}
        for oid in oids:
            if oid in need or oid in self._jobs or self._here(oid):
                continue
            loc = self.objs.location(oid)
            if loc is None:
                raise RemoteError(f"{self.where}: object {to_hex(oid)} is referenced but not in the remote; "
                                  f"run `coralfs fsck --remote` and push it again")
            need[oid] = loc
        by_pack: dict[str, list[tuple[int, int, ObjectId]]] = {}
        with self._working():
            for oid, loc in need.items():
                if loc.length < 0:
                    self.obtain_one(oid)
                else:
                    by_pack.setdefault(loc.pack, []).append((loc.offset, loc.length, oid))
            # A whole fetch reads smallest frames first (_mean_frame), so deltas wait for
            # their bases in the deferral; the walk of a --depth/pattern fetch (no deferral)
            # reads largest first, so bases land before their deltas.
            order = sorted(by_pack, key=lambda k: _mean_frame(by_pack[k], k), reverse=not self.defer)
            ranges = [(key, *r) for key in order for r in _ranges(sorted(by_pack[key]))]
            self._ranges, self._gets, self._read = ranges, {}, set()
            self._range_of = {oid: i for i, r in enumerate(ranges) for _o, _n, oid in r[3]} if self.defer else {}
            try:
                nxt = 0
                for i in range(len(ranges)):
                    while nxt < len(ranges) and len(self._gets) < GETS_AHEAD:
                        if nxt not in self._read:
                            self._gets[nxt] = self._get(nxt)
                        nxt += 1
                    self._read_range(i)
                    self._collect(VERIFY_AHEAD)
            finally:
                self._ranges, self._gets, self._read, self._range_of = [], {}, set(), {}

    def _get(self, i: int) -> Future:
        key, start, end, _m = self._ranges[i]
        return self._net.submit(self.objs.blobs.get_range_view, key, start, end - start)

    def _read_range(self, i: int) -> None:
        """Queue the frames of range ``i`` of the batch (once: the deferral may read one
        early, see _read_waited_base)."""
        if i in self._read:
            return
        self._read.add(i)
        fut = self._gets.pop(i, None) or self._get(i)
        key, start, _end, members = self._ranges[i]
        data = memoryview(fut.result())
        frames = {oid: data[off - start: off - start + n] for off, n, oid in members}
        for _off, n, oid in members:
            self._submit(oid, frames[oid], key, n, frames)

    def _read_waited_base(self, base: ObjectId) -> None:
        """The deferral is full and a delta on ``base`` came: read now the range holding
        the base its wait ends at (the one not here nor waiting), once, instead of a lone
        GET of the base and that range read again later. Its deltas waiting go out too."""
        root = base
        while root in self._waits_on:
            root = self._waits_on[root]
        r = self._range_of.get(root)
        if r is not None:
            self._read_range(r)

    def obtain_one(self, oid: ObjectId) -> None:
        if oid in self._jobs or self._here(oid):
            return
        loc = self.objs.location(oid)
        if loc is None:
            raise RemoteError(f"{self.where}: object {to_hex(oid)} is referenced but not in the remote; "
                              f"run `coralfs fsck --remote` and push it again")
        with self._working():
            if loc.length < 0:
                try:
                    frame = self.objs.blobs.get(loc.pack)
                except BlobNotFound:
                    raise RemoteError(f"{self.where}: {loc.pack} vanished during the fetch; fetch again") from None
                self._submit(oid, frame, loc.pack, len(frame), {})
            else:
                frame = self.objs.blobs.get_range(loc.pack, loc.offset, loc.length)
                self._submit(oid, frame, loc.pack, loc.length, {})

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """The pools around a batch of work; the outermost one waits for every job (and
        on an error cancels what has not started, so nothing is written after it)."""
        self._depth += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="coralfs-verify")
            self._net = ThreadPoolExecutor(GETS_AHEAD, thread_name_prefix="coralfs-get")
        ok = False
        try:
            yield
            ok = True
        finally:
            self._depth -= 1
            if not self._depth:
                try:
                    if ok:
                        self._collect(0)
                finally:
                    for _oid, fut, _n in self._order:
                        fut.cancel()
                    for _oid, fut, _n in self._order:
                        with contextlib.suppress(BaseException):
                            fut.result()
                    self._order.clear()
                    self._jobs.clear()
                    self._pending_bytes = 0
                    self._pool.shutdown(wait=True, cancel_futures=True)
                    self._net.shutdown(wait=True, cancel_futures=True)
                    self._pool = self._net = None

    def _collect(self, keep: int) -> None:
        """Wait for the oldest jobs until at most ``keep`` bytes of frames are in flight;
        a job's error (the first damaged object in fetch order) is raised here."""
        while self._order and self._pending_bytes > keep:
            oid, fut, n = self._order[0]
            fut.result()
            self._order.popleft()
            self._jobs.pop(oid, None)
            self._stored.add(oid)
            self._pending_bytes -= n
            self.objects += 1
            self.bytes += n
            if self.progress and (self.objects % 64 == 0 or not self._order):
                self.progress("fetch", self.bytes, self.objects, *self.totals)

    def _here(self, oid: ObjectId) -> bool:
        """Whether the local store has ``oid``. One stored by another process since the
        fetch began is fetched again and not written twice (put keeps the first)."""
        if oid in self._stored:
            return True
        return oid not in self._absent and self.local.has(oid)

    def _submit(self, oid: ObjectId, frame: bytes | memoryview, key: str, length: int,
                batch: dict[ObjectId, memoryview]) -> None:
        """Check what can be checked at once (length, header) and queue the rest: decode,
        SHA-256 against the id, then the write. A delta whose base is neither here, nor
        queued, nor in ``batch`` waits for it (whole fetch) or fetches it now."""
        if oid in self._jobs or self._here(oid):
            return
        if len(frame) != length:
            raise DamagedRemoteObject(self.where, oid, key, f"cut short: {len(frame)} of {length} bytes")
        try:
            h = codecs.parse_header(frame, oid)
        except CorruptObject as e:
            raise refused_object(self.where, oid, key, e.why) from None
        except Exception as e:  # noqa: BLE001 - a crafted frame is named, never a crash
            raise DamagedRemoteObject(self.where, oid, key, f"does not decode: {type(e).__name__}: {e}") from None
        base_job = None
        if h.base is not None and not self._here(h.base):
            if h.base not in self._jobs and h.base in batch:
                self._submit(h.base, batch[h.base], key, len(batch[h.base]), batch)
            if h.base not in self._jobs and not self._here(h.base):
                if self.defer and self._waiting_bytes + len(frame) <= DEFER_MAX:
                    self._waiting.setdefault(h.base, []).append((oid, bytes(frame), key))
                    self._waits_on[oid] = h.base
                    self._waiting_bytes += len(frame)
                    return
                if self.defer:
                    self._read_waited_base(h.base)
                if h.base not in self._jobs and not self._here(h.base):
                    self._fetch_now(h.base)
            base_job = self._jobs.get(h.base)
        if base_job is not None and not base_job.done():
            # run right after its base's job by that thread (no pool thread waits for it)
            fut: Future = Future()
            pool = self._pool
            def start(base: Future, fut: Future = fut, job: tuple = (oid, frame, key, h)) -> None:
                if fut.cancelled():
                    return
                if threading.current_thread().name.startswith("coralfs-verify"):
                    self._run_into(fut, base, *job)
                else:   # the base ended before the callback was added: on the pool
                    pool.submit(self._run_into, fut, base, *job)
            base_job.add_done_callback(start)
        else:
            fut = self._pool.submit(self._verify_and_store, oid, frame, key, h, base_job)
        self._jobs[oid] = fut
        self._order.append((oid, fut, len(frame)))
        self._pending_bytes += len(frame)
        self._release(oid)

    def _run_into(self, fut: Future, base_job: Future, oid: ObjectId, frame: bytes | memoryview, key: str,
                  h: codecs.FrameHeader) -> None:
        """(On the pool.) A delta's job started after its base's: its outcome into ``fut``."""
        if not fut.set_running_or_notify_cancel():
            return
        try:
            self._verify_and_store(oid, frame, key, h, base_job)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits for fut
            fut.set_exception(e)
        else:
            fut.set_result(None)

    def _verify_and_store(self, oid: ObjectId, frame: bytes | memoryview, key: str, h: codecs.FrameHeader,
                          base_job: Future | None) -> None:
        """(On the pool.) Decode, check the content's hash, write; keep a chunk's decoded
        bytes in the cache for the deltas against it."""
        if base_job is not None:
            base_job.result()   # stored (or its error, raised for the base first)
        try:
            data = codecs.decode(frame, oid, self.odb.read_chunk, header=h)
            if hash_bytes(data) != oid:
                raise CorruptObject(to_hex(oid), "content does not hash to its id")
            if h.structured:
                self.odb.keep_object(oid, data)   # for the walk (_expand), parsed here on the pool
        except CorruptObject as e:
            raise refused_object(self.where, oid, key, e.why) from None
        except (DamagedRemoteObject, NewerRemoteObject):
            raise
        except Exception as e:  # noqa: BLE001 - a crafted frame is named, never a crash
            raise DamagedRemoteObject(self.where, oid, key, f"does not decode: {type(e).__name__}: {e}") from None
        self.local.put(oid, frame)
        if not h.structured:
            self.odb.chunks.put(oid, data)

    def _fetch_now(self, oid: ObjectId) -> None:
        """Queue ``oid`` (and the bases it needs) before returning: nothing waits."""
        defer, self.defer = self.defer, False
        try:
            self.obtain_one(oid)
        finally:
            self.defer = defer

    def _release(self, oid: ObjectId) -> None:
        """Queue the deltas that waited for ``oid`` (after it: their jobs wait for its)."""
        for w_oid, w_frame, w_key in self._waiting.pop(oid, []):
            self._waiting_bytes -= len(w_frame)
            self._waits_on.pop(w_oid, None)
            self._submit(w_oid, w_frame, w_key, len(w_frame), {})


def _mean_frame(members: list[tuple[int, int, ObjectId]], key: str) -> tuple[float, str]:
    """The order a fetch reads packs in: smallest frames first (then by key). Small frames
    are mostly deltas, large ones keyframes, so a delta tends to come before its base and
    waits for it (bounded by DEFER_MAX) instead of its base waiting, decoded, in the cache
    for a delta read much later, and being decoded again when the cache let it go (the
    MiniLM series in key order at 512 MiB: 180 chunks decoded again, bases with the links
    of their chains, 132 of them SUBS/SPARSE deltas; 2.8 s of CPU). Only a whole fetch defers deltas: the walk of a --depth or
    pattern fetch reads largest first (bases before their deltas)."""
    return sum(n for _off, n, _oid in members) / len(members), key


def fetch(repo: Repository, blobs: BlobStore, remote: str, *, depth: int | None = None,
          pattern: str | None = None, progress: Progress | None = None) -> FetchResult:
    """Bring the remote's branches and tags here: objects first (verified, durable), then
    the shallow boundary, then refs/remotes/REMOTE/* and the tags this repository lacks."""
    layout.check_remote(blobs)
    rrefs = RemoteRefs(blobs)
    res = FetchResult(heads=rrefs.list(HEADS), tags=rrefs.list(TAGS))
    try:
        target = rrefs.head_target()
        res.head_branch = target[len(HEADS):] if target else None
    except CoralError:
        res.head_branch = None
    objs = RemoteObjects(blobs)
    if pattern is None:
        pattern = remotes(repo.config).get(remote, {}).get("partial") or None
    # Experiment records come along (their chains are short); a shallow fetch leaves them.
    exps = rrefs.list(EXPERIMENTS) if depth is None else {}
    with repo.write_session():
        f = Fetcher(repo, objs, depth=depth, pattern=pattern, progress=progress)
        # Objects without an fsync each, made durable in a few flushes, all before the
        # shallow file and the refs below name them (DiskStore.batch).
        with f.local.batch() if isinstance(f.local, DiskStore) else contextlib.nullcontext():
            f.run([*res.heads.values(), *res.tags.values(), *exps.values()])
        f.local.sync()
        res.objects, res.bytes = f.objects, f.bytes
        if f.boundary:
            res.shallow = set(repo.shallow) | f.boundary
            lines = "".join(sorted(to_hex(o) + "\n" for o in res.shallow))
            write_durable(os.path.join(repo.path, SHALLOW), lines.encode())
            repo.shallow = frozenset(res.shallow)
        prefix = f"{REMOTES}{remote}/"
        old = repo.refs.list(prefix)
        for name, oid in res.heads.items():
            if old.get(name) != oid:
                repo.refs.set_if_equals(prefix + name, old.get(name), oid, "fetch", force=True)
        for name in set(old) - set(res.heads):
            repo.refs.set_if_equals(prefix + name, old[name], None, "fetch: gone from the remote", force=True)
        mine = repo.tags()
        for name, oid in res.tags.items():
            if name not in mine:
                repo.refs.set_if_equals(TAGS + name, None, oid, f"fetch: tag from {remote}")
            elif mine[name] != oid:
                log.warning("tag %s differs on the remote %s; kept the local one", name, remote)
        for name, oid in exps.items():
            here = repo.refs.read(EXPERIMENTS + name)
            if here is None or (here != oid and history.is_ancestor(repo, here, oid)):
                repo.refs.set_if_equals(EXPERIMENTS + name, here, oid, f"fetch: experiment from {remote}")
            elif here != oid and not history.is_ancestor(repo, oid, here):
                log.warning("experiment %s was logged to here and on the remote %s; kept the local record", name, remote)
    return res


# -- pull --------------------------------------------------------------------------------

class Diverged(CoralError):
    exit_code = 1


def fast_forward(repo: Repository, remote: str, branch: str) -> tuple[str, ObjectId | None]:
    """Move ``branch`` to ``REMOTE/branch`` if that is a fast-forward: ("up-to-date" |
    "fast-forward" | "created", id). Diverged histories raise Diverged naming the merge."""
    theirs = repo.refs.read(f"{REMOTES}{remote}/{branch}")
    if theirs is None:
        raise CoralError(f"the remote {remote} has no branch {branch} (see `coralfs remote show {remote}`)")
    ours = repo.refs.read(HEADS + branch)
    if ours is None:
        repo.refs.set_if_equals(HEADS + branch, None, theirs, f"pull: created from {remote}/{branch}")
        return "created", theirs
    if history.is_ancestor(repo, theirs, ours):
        return "up-to-date", ours
    if history.is_ancestor(repo, ours, theirs):
        repo.refs.set_if_equals(HEADS + branch, ours, theirs, f"pull: fast-forward to {remote}/{branch}")
        return "fast-forward", theirs
    raise Diverged(f"{branch} and {remote}/{branch} have diverged: merge them with `coralfs merge {remote}/{branch}` "
                   f"(on {branch}), then push")


# -- clone -------------------------------------------------------------------------------

CLONE_MARK = "clone.json"


def clone(url: str, dest: str, *, endpoint: str | None = None, profile: str | None = None,
          depth: int | None = None, pattern: str | None = None, progress: Progress | None = None) -> tuple[Repository, FetchResult]:
    """A new repository at ``dest`` with the remote as ``origin``. Resumable: a clone that
    was interrupted leaves ``remote-journal/clone.json`` and the same command continues it."""
    import json
    if depth is not None and depth < 1:
        raise CoralError("--depth takes a number of commits, 1 or more")
    options = {"profile": profile} if profile else None
    blobs = open_blobs(url, endpoint=endpoint, options=options)
    layout.check_remote(blobs)
    dest = os.path.abspath(dest)
    mark = os.path.join(dest, JOURNAL_DIR, CLONE_MARK)
    if os.path.exists(dest) and not os.path.exists(mark):
        if not os.path.isdir(dest) or os.listdir(dest):
            raise CoralError(f"cannot clone into {dest}: it exists and is not empty")
        os.rmdir(dest)
    if not os.path.exists(dest):
        _create_clone(dest, url, endpoint, profile, pattern, blobs, json.dumps({"url": url, "depth": depth}))
    repo = Repository.open(dest)
    res = fetch(repo, blobs, "origin", depth=depth, pattern=pattern, progress=progress)
    branch = res.head_branch if res.head_branch in res.heads else (sorted(res.heads)[0] if res.heads else None)
    if branch is not None:
        if repo.refs.read(HEADS + branch) is None:
            repo.refs.set_if_equals(HEADS + branch, None, res.heads[branch], f"clone: from {url}")
        if repo.head_branch() != branch:
            repo.refs.set_symbolic(HEAD, HEADS + branch, f"clone: checkout {branch}")
    os.unlink(mark)
    fsync_dir(os.path.dirname(mark))
    return repo, res


def _create_clone(dest: str, url: str, endpoint: str | None, profile: str | None, pattern: str | None,
                  blobs: BlobStore, mark: str) -> None:
    """Initialize the clone beside ``dest`` and rename it into place: ``dest`` either does
    not exist or is a repository that knows it is an unfinished clone of ``url``."""
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise CoralError(f"cannot clone into {dest}: parent directory {parent} does not exist")
    tmp = os.path.join(parent, f".{os.path.basename(dest)}.clone-tmp")
    shutil.rmtree(tmp, ignore_errors=True)   # what an interrupted clone left before its rename
    repo = Repository.init(tmp)
    try:
        for section, table in layout.read_config(blobs).items():
            for k, v in table.items():
                if section == "storage":
                    repo.config.set(f"{section}.{k}", str(v).lower() if isinstance(v, bool) else str(v))
        repo.config.set("remote.origin.url", url)
        if endpoint:
            repo.config.set("remote.origin.endpoint", endpoint)
        if profile:
            repo.config.set("remote.origin.profile", profile)
        if pattern:
            repo.config.set("remote.origin.partial", pattern)
    finally:
        repo.close()
    make_dirs(os.path.join(tmp, JOURNAL_DIR))
    write_durable(os.path.join(tmp, JOURNAL_DIR, CLONE_MARK), mark.encode())
    os.rename(tmp, dest)
    fsync_dir(parent)
