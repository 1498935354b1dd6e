"""The read path both adapters share: cache hits answered on the event loop, misses
decoded in worker threads, and the chunks readahead.py expects next decoded in the
background (each once: a read needing one waits for it).

:class:`ChunkReads` is an object an adapter holds (not a base class): it knows the
object database, its thread limits and counters, nothing about inodes or handles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..objects.errors import CorruptObject, ObjectUnavailable
from ..objects.ids import ObjectId, from_hex
from .content import Content
from .readahead import ReadAhead

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
    def discard(self, oid: ObjectId) -> None: ...


class ChunkReads:
    def __init__(self, odb, threads: int, fetcher: Fetcher | None = None) -> None:
        self.odb = odb
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
        wanted = f.ahead.after_read(f.content, off, len(data), span.region)
        if wanted:
            self._prefetch(wanted)
        self.counters["reads"] += 1
        self.counters["bytes_served"] += len(data)
        return data

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
            self.nursery.start_soon(self._fetch_then_decode, todo)
            return
        for oid in todo:
            self.nursery.start_soon(self._prefetch_one, oid)

    async def _fetch_then_decode(self, ids: list[ObjectId]) -> None:
        """Read-ahead of a remote: one coalesced fetch of the window, then the decodes."""
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

    def stats(self) -> dict:
        """The counters .coral/stats.json shows about reads and the chunk cache."""
        odb = self.odb
        return {**self.counters, "decoded_bytes": odb.decoded_bytes, "decoded_chunks": odb.decoded_chunks,
                "cache_used": odb.chunks.used, "cache_budget": odb.chunks.budget,
                "cache_hits": odb.chunks.hits, "cache_misses": odb.chunks.misses}


__all__ = ["ChunkReads", "OpenContent"]
