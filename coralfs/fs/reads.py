"""The read path both adapters share: cache hits answered on the event loop, misses
decoded in worker threads, and the chunks readahead.py expects next decoded in the
background (each once: a read needing one waits for it).

:class:`ChunkReads` is an object an adapter holds (not a base class): it knows the
object database, its thread limits and counters, nothing about inodes or handles. With
a materialization cache (materialize.py) it also serves ``--prefetch``: the chunks of a
commit decoded straight to disk in the background, with progress in stats.json.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..objects import codecs
from ..objects.errors import CorruptObject, ObjectUnavailable
from ..objects.ids import ObjectId, from_hex
from .content import Content
from .materialize import TieredChunks
from .readahead import MIN_WINDOW, WINDOW, ReadAhead

log = logging.getLogger(__name__)


@dataclass
class OpenContent:
    """What one open file reads, with its read-ahead state."""

    content: Content
    ahead: ReadAhead = field(default_factory=ReadAhead)


class Fetcher(Protocol):
    """A store whose objects may have to come over the network (a remote's): the read
    path fetches them under their own thread limit before decoding (see ChunkReads)."""

    read_budget: float

    def missing(self, oids: Iterable[ObjectId]) -> list[ObjectId]: ...
    def fetch_many(self, oids: Iterable[ObjectId]) -> None: ...
    def runs(self, oids: Iterable[ObjectId]) -> list[list[ObjectId]]: ...
    def discard(self, oid: ObjectId) -> None: ...


class ChunkReads:
    def __init__(self, odb, threads: int, fetcher: Fetcher | None = None,
                 tier: TieredChunks | None = None) -> None:
        self.odb = odb
        # The materialization cache, installed as the object database's chunk cache (so
        # delta bases are looked up on disk too); None: decoded chunks stay in memory.
        self.tier = tier
        if tier is not None:
            odb.chunks = tier
        self.progress: dict | None = None  # --prefetch
        # A remote store: chunks are fetched (coalesced) in fetch threads of their own, so
        # a stalled store occupies those, never the decode threads that serve reads of
        # chunks already here; a read waits at most the store's budget for its fetch.
        self.fetcher = fetcher
        self.fetch_limiter = trio.CapacityLimiter(4)
        # Demand reads and prefetches have their own threads: a read never queues behind
        # prefetches of chunks it does not need yet.
        self.limiter = trio.CapacityLimiter(max(1, threads))
        self.prefetch_limiter = trio.CapacityLimiter(max(1, threads))
        self.nursery: trio.Nursery | None = None  # set while serving: prefetches run there
        self._prefetching: dict[ObjectId, trio.Event] = {}  # chunk id -> set when decoded
        self.counters = {"reads": 0, "bytes_served": 0, "cache_fast_path": 0, "prefetched_chunks": 0}

    def start(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    async def read(self, f: OpenContent, off: int, size: int) -> bytes:
        span = f.content.span(off, size)  # the file's segments are walked once per read
        data = span.cached()
        if data is None:
            # Chunks being prefetched: wait for them rather than decode them again.
            waited = False
            for oid in span.chunk_ids():
                ev = self._prefetching.get(oid)
                if ev is not None:
                    await ev.wait()
                    waited = True
            if waited:
                data = span.cached()
        if data is None:
            if self.fetcher is not None:
                await self._fetch(span.chunk_ids())
            try:
                data = await trio.to_thread.run_sync(span.read, limiter=self.limiter)
            except CorruptObject as e:
                if self.fetcher is not None:  # the next read fetches it again (the bucket may be repaired)
                    self.fetcher.discard(from_hex(e.object_id))
                raise
        else:
            self.counters["cache_fast_path"] += 1
        # A remote's frames are written to its disk cache behind the decode; a read does
        # not wait for them: the daemon flushes that cache when it unmounts (a daemon
        # killed first only fetches them again on the next mount).
        wanted = f.ahead.after_read(f.content, off, len(data), span.region, self.window())
        if wanted:
            self._prefetch(wanted)
        self.counters["reads"] += 1
        self.counters["bytes_served"] += len(data)
        return data

    def window(self) -> int:
        """How far decode-ahead may run: a quarter of the chunk cache, so chunks decoded
        ahead are still there when the reader comes."""
        return max(MIN_WINDOW, min(WINDOW, self.odb.chunks.budget // 4))

    async def in_thread(self, fn, *args):
        """Run ``fn(*args)`` in a worker thread, under the demand-read limit."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def _fetch(self, ids: list[ObjectId]) -> None:
        """Fetch what of ``ids`` is not local, in a fetch thread; the wait is bounded even
        if every fetch thread is stuck (the thread is abandoned, the read fails)."""
        fetcher = self.fetcher
        missing = fetcher.missing(ids)
        if not missing:
            return
        with trio.move_on_after(fetcher.read_budget + 1.0) as scope:
            await trio.to_thread.run_sync(fetcher.fetch_many, missing, limiter=self.fetch_limiter,
                                          abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise ObjectUnavailable(missing[0].hex(), f"no fetch finished within {fetcher.read_budget:g} s")

    def _prefetch(self, ids: Iterable[ObjectId]) -> None:
        """Decode these chunks in the background (the policy lives in readahead.py)."""
        if self.nursery is None:
            return
        todo = [oid for oid in ids if oid not in self._prefetching and oid not in self.odb.chunks]
        for oid in todo:
            self._prefetching[oid] = trio.Event()
        if self.fetcher is not None and todo:
            # a task per range GET: each chunk decodes as soon as its own range is here
            for group in self.fetcher.runs(todo):
                self.nursery.start_soon(self._fetch_then_decode, group)
            return
        for oid in todo:
            self.nursery.start_soon(self._prefetch_one, oid)

    async def _fetch_then_decode(self, ids: list[ObjectId]) -> None:
        """Read-ahead of a remote: one coalesced fetch of these chunks, then their decodes."""
        try:
            await self._fetch(ids)
        except Exception as e:  # noqa: BLE001 - a failed prefetch is retried by the read itself
            log.info("read-ahead of %d chunks failed: %s", len(ids), e)
            for oid in ids:  # no decodes that would wait on the store again: readers go on
                self._prefetching.pop(oid).set()
            return
        for oid in ids:
            self.nursery.start_soon(self._prefetch_one, oid)

    async def _prefetch_one(self, oid: ObjectId) -> None:
        try:
            await trio.to_thread.run_sync(self.odb.read_chunk, oid, limiter=self.prefetch_limiter)
            self.counters["prefetched_chunks"] += 1
        except Exception as e:  # noqa: BLE001 - a failed prefetch is retried by the read itself
            log.debug("prefetch of %s failed: %s", oid.hex(), e)
        finally:
            self._prefetching.pop(oid).set()

    # -- --prefetch: materialize a whole commit (or some tensors) in the background ------
    async def prefetch_all(self, plan) -> None:
        """Decode every chunk ``plan()`` lists (chunk id, length) straight into the
        materialization cache (not the memory cache: a reader's working set stays), under
        the read-ahead thread limit, so demand reads keep their own threads."""
        tier = self.tier
        p = self.progress = {"state": "planning", "chunks": 0, "bytes": 0, "done_chunks": 0, "done_bytes": 0,
                             "written": 0, "already": 0, "errors": 0}
        items = await trio.to_thread.run_sync(plan, limiter=self.prefetch_limiter)
        p.update(state="running", chunks=len(items), bytes=sum(n for _oid, n in items))
        log.info("prefetch: %d chunks, %d bytes", len(items), p["bytes"])

        async def one(oid: ObjectId, n: int) -> None:
            try:
                if self.fetcher is not None:
                    await self._fetch([oid])
                fresh = await trio.to_thread.run_sync(self._materialize_one, tier, oid,
                                                      limiter=self.prefetch_limiter)
                p["done_chunks"] += 1
                p["written" if fresh else "already"] += 1
            except Exception as e:  # noqa: BLE001 - a chunk that fails here is decoded (or fails) on read
                p["errors"] += 1
                log.warning("prefetch of %s failed: %s", oid.hex(), e)
            p["done_bytes"] += n

        async with trio.open_nursery() as nursery:
            lanes = trio.Semaphore(2 * self.prefetch_limiter.total_tokens)  # bounded memory
            for oid, n in items:
                await lanes.acquire()

                async def run(oid=oid, n=n) -> None:
                    try:
                        await one(oid, n)
                    finally:
                        lanes.release()
                nursery.start_soon(run)
        p["state"] = "done"
        log.info("prefetch done: %d chunks (%d already materialized, %d errors)", p["done_chunks"],
                 p["already"], p["errors"])

    def _materialize_one(self, tier: TieredChunks, oid: ObjectId) -> bool:
        """Decode one chunk into the cache on disk; False if it was there already."""
        if tier.disk.contains(oid):
            return False
        data = tier.peek(oid)  # decoded by a reader already: only written
        if data is None:
            odb = self.odb
            data = codecs.decode(odb.store.get(oid), oid, odb.read_base)
        tier.disk.put(oid, data)
        return True

    def stats(self) -> dict:
        """The counters .coral/stats.json shows about reads and the chunk cache."""
        odb = self.odb
        out = {**self.counters, "decoded_bytes": odb.decoded_bytes, "decoded_chunks": odb.decoded_chunks,
               "cache_used": odb.chunks.used, "cache_budget": odb.chunks.budget,
               "cache_hits": odb.chunks.hits, "cache_misses": odb.chunks.misses}
        if self.tier is not None:
            out["materialized"] = self.tier.stats()
        if self.progress is not None:
            out["prefetch"] = dict(self.progress)
        return out


__all__ = ["ChunkReads", "OpenContent"]
