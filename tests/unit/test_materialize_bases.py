"""The materialization cache writes the chunks a mount reads, not the delta bases decoded
for them: a chunk of another commit decoded only as a base stays in memory, and is written
once it is read for itself. Real repository, real cache on disk, no kernel."""

from __future__ import annotations

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs.fs.content import Span
from coralfs.fs.materialize import MaterializedCache, TieredChunks
from coralfs.objects.cache import ByteLRU
from coralfs.objects.kinds import Tensor, TensorSegment


def _chunks(repo, rev: str) -> list:
    f = repo.read_file(repo.tree_of(rev).entries["model.safetensors"].file)
    return [c for s in f.segments if isinstance(s, TensorSegment)
            for c in repo.odb.get_object(s.tensor, Tensor).chunks]


def _two_steps(repo, tmp_path) -> None:
    rng = np.random.default_rng(0)
    w = {f"l{i}": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(4)}
    d = tmp_path / "ck"
    d.mkdir()
    for step in range(2):
        save_file(w, str(d / "model.safetensors"))
        repo.commit_paths([str(d)], f"step {step}")
        w = {k: v + np.float32(1e-4) * rng.standard_normal(v.shape, dtype=np.float32) for k, v in w.items()}


def _tier(repo, tmp_path) -> TieredChunks:
    repo.odb.chunks.clear()   # what the commits decoded: a mount starts empty
    tier = TieredChunks(repo.odb.chunks, MaterializedCache(str(tmp_path / "mat"), 1 << 30))
    repo.odb.chunks = tier
    return tier


def _written(tier: TieredChunks) -> set:
    tier.close()   # drains the writer
    return {c for c in tier.memory._d if tier.disk.contains(c)}


def _deltas(repo) -> list:
    """The chunks stored as deltas: those of one of the two commits."""
    deltas = {rev: [c for c in _chunks(repo, rev) if repo.odb.chunk_header(c).base is not None]
              for rev in ("main", "main~1")}
    return max(deltas.values(), key=len)


def test_a_chunk_decoded_only_as_a_delta_base_is_not_written(repo, tmp_path):
    _two_steps(repo, tmp_path)
    read = _deltas(repo)
    bases = {repo.odb.chunk_header(c).base for c in read} - set(read)
    assert len(read) >= 4 and len(bases) == len(read)
    tier = _tier(repo, tmp_path)
    for c in read:
        repo.odb.read_chunk(c)
    assert all(b in tier.memory for b in bases)     # decoded, held in memory
    on_disk = _written(tier)
    assert set(read) <= on_disk and not bases & on_disk, (len(on_disk), len(bases & on_disk))


@pytest.mark.parametrize("how", ["read_chunk", "mount fast path"])
def test_a_base_read_for_itself_later_is_written_then(repo, tmp_path, how):
    """Read for itself from memory: by ObjectDB.read_chunk, or as a mount serves a read
    whose chunks are all in memory (Span.cached, on the event loop)."""
    _two_steps(repo, tmp_path)
    delta = _deltas(repo)[0]
    tier = _tier(repo, tmp_path)
    base = repo.odb.chunk_header(delta).base
    repo.odb.read_chunk(delta)
    assert base in tier.memory and base in tier._unkept
    if how == "read_chunk":
        repo.odb.read_chunk(base)          # a memory hit, now read for itself
    else:
        n = len(tier.memory.peek(base))
        assert Span(repo.odb, [(base, 0, n // 2)]).cached() is not None
    assert base in _written(tier)
    assert os.path.getsize(tier.disk.path(base)) > 1 << 20


def test_the_base_only_ids_stay_bounded_by_the_memory_cache(tmp_path):
    memory = ByteLRU(10 * 1000)
    tier = TieredChunks(memory, MaterializedCache(str(tmp_path / "mat"), 1 << 20))
    for i in range(5000):   # 10 of them fit in memory at a time
        tier.put(i.to_bytes(32, "big"), b"x" * 1000, keep=False)
    held = [i.to_bytes(32, "big") for i in range(5000) if i.to_bytes(32, "big") in memory]
    assert len(held) == 10 and all(k in tier._unkept for k in held)   # still known as unwritten
    assert len(tier._unkept) <= 2 * 256 + 1
    tier.close()
