"""The writer's stored bytes depend on a file's chunks and their order, not on scheduling:
chunks that write the same object (their own id, or a parent chunk re-encoded as a reverse
delta) are encoded in submission order, whatever the window or the number of workers."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs import Repository
from coralfs.formats import layout_of
from coralfs.objects import codecs
from coralfs.objects.kinds import Tensor
from coralfs.objects.writer import Settings, Writer

CHUNK = 128 << 10


def _versions(tmp_path):
    """v1: tensors a and b equal (so v2's chunks of both name the same parent chunks);
    v2: a and b moved apart, c and d equal new content (the same chunk ids twice)."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal(4 * CHUNK // 4) * 0.05).astype(np.float32)
    c = (rng.standard_normal(2 * CHUNK // 4) * 0.05).astype(np.float32)
    v1 = {"a": w, "b": w.copy(), "c": c, "d": c * 0.5}
    step = lambda s: (rng.standard_normal(w.shape) * s).astype(np.float32)  # noqa: E731
    c2 = c + step(1e-4)[:c.size]
    v2 = {"a": w + step(1e-5), "b": w + step(2e-5), "c": c2, "d": c2.copy()}
    paths = []
    for i, v in enumerate((v1, v2)):
        p = str(tmp_path / f"v{i}.safetensors")
        save_file(v, p)
        paths.append(p)
    return paths


def _store(tmp_path, name, workers, window_bytes, paths):
    repo = Repository.init(str(tmp_path / name))
    w = Writer(repo.odb, Settings(chunk_size=CHUNK, workers=workers), repo.similarity)
    if window_bytes is not None:
        w._window_bytes = window_bytes
    base = None
    try:
        for p in paths:
            fid, _ = _write(w, p, base)
            base = repo.read_file(fid)
        frames = {o: repo.store.get(o) for o in repo.store}
        tensors = {n: repo.odb.get_object(s.tensor, Tensor) for n, s in base.tensors().items()}
        return repo, frames, tensors
    finally:
        w.close()


def _write(w, path, base):
    from coralfs.objects.writer import Source
    with Source(path) as src:
        return w.write_file(src, layout_of(path).regions, "safetensors", base)


@pytest.mark.parametrize("workers,window", [(4, 64 * CHUNK), (3, 2 * CHUNK)])
def test_stored_frames_do_not_depend_on_workers_or_window(tmp_path, workers, window):
    paths = _versions(tmp_path)
    one, frames1, t1 = _store(tmp_path, "one", 1, CHUNK, paths)  # one chunk at a time, in order
    many, frames2, t2 = _store(tmp_path, f"many{workers}", workers, window, paths)
    try:
        assert frames1 == frames2
        # In order: a's new chunks re-encode the shared parent chunks against themselves;
        # b's, named after a's, find those parents deltas and become forward deltas on them.
        odb = many.odb
        for ca, cb in zip(t2["a"].chunks, t2["b"].chunks):
            assert odb.chunk_header(ca).base is None
            hb = odb.chunk_header(cb)
            assert hb.base is not None and odb.chunk_header(hb.base).base == ca
            assert odb.chain_depth(cb) == hb.depth == 2
        assert t2["c"].chunks == t2["d"].chunks
        assert many.fsck().ok
        for name, t in t2.items():
            assert b"".join(odb.read_chunk(c) for c in t.chunks) == b"".join(
                one.odb.read_chunk(c) for c in t1[name].chunks)
        assert all(codecs.parse_header(f, o) for o, f in frames2.items())
    finally:
        one.close()
        many.close()
