"""HDF5 chunked datasets: each unfiltered chunk a typed region at the offset h5py's chunk
index gives, filtered chunks literal, byte-identical round trips, in-place updates stored
as deltas."""

from __future__ import annotations

import h5py
import numpy as np

from coralfs.formats import layout_of
from tests.conftest import DELTA_CODEC_NAMES, sha


def _write(path, scale: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((300, 256)) * 0.02).astype(np.float32)
    w = w + np.float32(scale) * rng.standard_normal(w.shape).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("layer/kernel", data=w, chunks=(128, 128))  # 300 rows: padded edge chunks
        f.create_dataset("layer/gz", data=w, chunks=(128, 128), compression="gzip")
        f.create_dataset("layer/shuffled", data=w[:128], chunks=(64, 64), shuffle=True)
        f.create_dataset("sparse", shape=(1000,), dtype="f8", chunks=(100,))
        f["sparse"][200:300] = 1.0  # one chunk allocated
        f.create_dataset("contiguous", data=np.arange(500, dtype=np.int16))
    return w


def test_unfiltered_chunks_are_regions_at_their_offsets(tmp_path):
    p = tmp_path / "w.h5"
    w = _write(p)
    lay = layout_of(str(p))
    got = {r.name: r for r in lay.regions}
    with h5py.File(p) as f:
        ds = f["layer/kernel"]
        infos = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    assert len(infos) == 6
    for s in infos:
        r = got["/layer/kernel:" + ",".join(map(str, s.chunk_offset))]
        assert (r.offset, r.length, r.dtype, r.shape) == (s.byte_offset, s.size, "F32", (128, 128))
    raw = p.read_bytes()
    r = got["/layer/kernel:128,0"]
    np.testing.assert_array_equal(np.frombuffer(raw[r.offset:r.offset + r.length], np.float32).reshape(128, 128),
                                  w[128:256, :128])
    assert [n for n in got if n.startswith("/sparse")] == ["/sparse:200"]
    assert not [n for n in got if n.startswith(("/layer/gz", "/layer/shuffled"))]  # filtered: literal
    assert got["/contiguous"].dtype == "I16"


def test_chunked_round_trip_and_in_place_update_deltas(repo, tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    _write(d / "w.h5")
    first = repo.commit_paths([str(d)], "v1").stats
    with h5py.File(d / "w.h5", "r+") as f:  # a training step updates the weights in place
        k = f["layer/kernel"]
        k[...] = k[()] + np.float32(1e-5)
    second = repo.commit_paths([str(d)], "v2").stats
    assert set(second.codecs) & DELTA_CODEC_NAMES, second.codecs
    assert second.stored < 0.6 * first.stored, (second.stored, first.stored)
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert sha(out / "w.h5") == sha(d / "w.h5")
    with h5py.File(out / "w.h5") as f, h5py.File(d / "w.h5") as g:
        for k in ("layer/kernel", "layer/gz", "layer/shuffled", "sparse", "contiguous"):
            np.testing.assert_array_equal(f[k][()], g[k][()])
