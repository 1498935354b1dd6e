"""The read-ahead policy, without a kernel: when it prefetches, how far, and where it stops."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import save_file

from coralfs.fs.content import Stored
from coralfs.fs.readahead import PREFETCH_AFTER, STEP, ReadAhead


def _content(repo, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    rng = np.random.default_rng(0)
    # three tensors of 8 chunks (32 MiB) each
    save_file({f"t{i}": rng.standard_normal(8 << 20).astype(np.float32) for i in range(3)},
              str(d / "model.safetensors"))
    repo.commit_paths([str(d)], "m")
    c = Stored(repo.open_file(repo.tree_of("main").entries["model.safetensors"].file))
    starts = [off for off, _n, s in c.view.segment_ranges() if hasattr(s, "tensor")]
    return c, starts


def test_random_reads_never_prefetch(repo, tmp_path):
    c, starts = _content(repo, tmp_path)
    ra = ReadAhead()
    rng = np.random.default_rng(1)
    for off in rng.integers(0, c.size - (1 << 17), 50):
        assert ra.after_read(c, int(off), 1 << 17) == []


def test_sequential_reads_plan_the_rest_of_the_tensor_once(repo, tmp_path):
    # Whole-tensor decode-ahead (issue 11): once a reader has gone 512 KiB into a tensor,
    # every remaining chunk of it is scheduled at once (it was a 4-chunk window planned
    # again per chunk), and never a chunk of the next tensor for this short run.
    c, starts = _content(repo, tmp_path)
    t1 = starts[1]
    ra = ReadAhead()
    plans = []
    off = t1
    while off < t1 + (12 << 20):
        ids = ra.after_read(c, off, 1 << 17)
        if ids:
            plans.append((off - t1, ids))
        off += 1 << 17
    assert plans and plans[0][0] + (1 << 17) >= PREFETCH_AFTER  # not before 512 KiB in
    assert plans[0][0] < PREFETCH_AFTER + (1 << 17)
    assert len(plans) == 1  # one plan, not one per 128 KiB read or per chunk
    rest = c.chunk_ids(t1 + plans[0][0] + (1 << 17), starts[2] - t1 - plans[0][0] - (1 << 17))
    assert plans[0][1] == list(dict.fromkeys(rest))  # the whole rest of tensor t1, in order


def test_decode_ahead_stays_within_its_window_and_plans_again_halfway(repo, tmp_path):
    c, starts = _content(repo, tmp_path)
    t1, window = starts[1], 3 * STEP  # a tensor of 8 chunks, a window of 3
    ra = ReadAhead()
    plans = []
    off = t1
    while off < starts[2]:
        ids = ra.after_read(c, off, 1 << 17, window=window)
        if ids:
            plans.append((off - t1, ids))
        off += 1 << 17
    assert len(plans) >= 3
    assert all(len(ids) <= window // STEP + 1 for _, ids in plans)
    gaps = [b[0] - a[0] for a, b in zip(plans, plans[1:])]
    # halfway through the window, not on every read (once more when the run becomes a
    # streaming one that may cross into the next tensor)
    assert sum(g < window // 2 - (1 << 17) for g in gaps) <= 1
    planned = {i for _, ids in plans for i in ids}
    assert set(c.chunk_ids(t1 + (1 << 20), starts[2] - t1 - (1 << 20))) <= planned


def test_a_streaming_reader_crosses_one_chunk_into_the_next_tensor(repo, tmp_path):
    c, starts = _content(repo, tmp_path)
    ra = ReadAhead()
    planned = set()
    off = starts[0]
    while off < starts[1]:
        planned.update(ra.after_read(c, off, 1 << 17))
        off += 1 << 17
    next_tensor = c.chunk_ids(starts[1], starts[2] - starts[1])
    assert next_tensor[0] in planned and not (set(next_tensor[1:]) & planned)


def test_a_cache_probe_counts_no_miss_and_a_cold_read_counts_each_decode_once(repo, tmp_path):
    c, starts = _content(repo, tmp_path)
    cache = c.view.odb.chunks
    cache.clear()
    off, n = starts[1], 3 << 20  # within one tensor: one chunk, maybe two
    ids = c.chunk_ids(off, n)
    misses, hits = cache.misses, cache.hits
    assert c.cached(off, n) is None
    assert cache.misses == misses  # probing decoded nothing and counted nothing
    data = c.read(off, n)
    assert cache.misses == misses + len(ids)  # each decode counted once
    assert c.cached(off, n) == data and cache.hits == hits + len(ids)


def test_a_cold_read_walks_its_byte_range_once(repo, tmp_path, monkeypatch):
    import trio

    from coralfs.fs.reads import ChunkReads, OpenContent
    from coralfs.objects.reader import FileView
    c, starts = _content(repo, tmp_path)
    want = c.view.read(starts[1], 1 << 17)
    c.view.odb.chunks.clear()
    walks = []
    real = FileView.chunks_for

    def counted(self, off, size):
        walks.append((off, size))
        return real(self, off, size)
    monkeypatch.setattr(FileView, "chunks_for", counted)
    reads = ChunkReads(c.view.odb, 1)
    data = trio.run(reads.read, OpenContent(c), starts[1], 1 << 17)
    assert data == want
    assert walks == [(starts[1], 1 << 17)]  # not again for the cache, the ids and the decode
