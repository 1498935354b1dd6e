"""TensorFlow tensor bundles, read without TensorFlow (fixtures: scripts/make_tf_fixtures.py).

The fixtures were written by real TensorFlow; these tests never import it.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys

import numpy as np
import pytest

from coralfs.formats import FormatError, detect, tfbundle
from coralfs.integrations.tensorflow import tensors
from tests.conftest import fails, head_of, run_cli, tree_sha
from tests.formats.wire import varint

FIX = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "tf")
EXPECTED = np.load(os.path.join(FIX, "expected.npz"))


def _expected(version: str) -> dict[str, np.ndarray]:
    pre = f"ckpt_{version}/"
    return {k[len(pre):]: EXPECTED[k] for k in EXPECTED.files if k.startswith(pre)}


def _values(repo, ref: str = "HEAD", pattern: str = "*") -> dict[str, np.ndarray]:
    out = {}
    for name, a in tensors(repo, ref, pattern):
        out[name] = a.astype(np.float32) if a.dtype.name == "bfloat16" else a
    return out


def _assemble_slices(vals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Partitioned variables' slices (``name[a:b,c:d]``) put back together."""
    whole: dict[str, list] = {}
    out = {}
    for k, v in vals.items():
        if k.endswith("]") and "[" in k:
            name, _, spec = k[:-1].rpartition("[")
            whole.setdefault(name, []).append(([tuple(map(int, s.split(":"))) for s in spec.split(",")], v))
        else:
            out[k] = v
    for name, parts in whole.items():
        shape = tuple(max(r[d][1] for r, _ in parts) for d in range(len(parts[0][0])))
        a = np.zeros(shape, parts[0][1].dtype)
        for r, v in parts:
            a[tuple(slice(b, e) for b, e in r)] = v
        out[name] = a
    return out


def test_shard_regions_are_typed_and_checked():
    shard = os.path.join(FIX, "ckpt_v1", "ckpt.data-00000-of-00001")
    lay = detect.layout_of(shard, siblings=detect.disk_siblings(shard))
    got = {r.name: (r.dtype, r.shape) for r in lay.regions}
    assert lay.format == "tfbundle"
    assert got["model/w1/.ATTRIBUTES/VARIABLE_VALUE"] == ("F32", (64, 128))
    assert got["model/w2/.ATTRIBUTES/VARIABLE_VALUE"] == ("F16", (128, 32))
    assert got["model/bw/.ATTRIBUTES/VARIABLE_VALUE"] == ("BF16", (8, 8))
    assert got["model/step/.ATTRIBUTES/VARIABLE_VALUE"] == ("I64", ())
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in got  # a string tensor: checked, kept literal
    # Without its index beside it a shard is only bytes.
    assert detect.layout_of(shard).format == "bytes"


def test_checkpoint_values_equal_tensorflows(repo):
    repo.commit_paths([os.path.join(FIX, "ckpt_v1")], "v1")
    got = _values(repo)
    want = _expected("v1")
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k


def test_sharded_checkpoint_slices_put_back_equal_tensorflows(repo):
    repo.commit_paths([os.path.join(FIX, "sharded_v2")], "v2")
    f = repo.tree_of("HEAD").entries
    assert all(repo.read_file(f[f"ckpt.data-0000{i}-of-00003"].file).format == "tfbundle" for i in range(3))
    got = _assemble_slices(_values(repo))
    want = _expected("v2")
    assert set(got) == set(want)
    for k, v in want.items():
        assert np.array_equal(got[k], v), k


def test_tensors_streams_with_a_pattern(repo):
    repo.commit_paths([os.path.join(FIX, "savedmodel_v1")], "v1")
    it = tensors(repo, "HEAD", "w*")
    name, a = next(it)
    assert name.startswith("w") and not a.flags.writeable
    names = {name} | {n for n, _ in it}
    assert names == {"w1/.ATTRIBUTES/VARIABLE_VALUE", "w2/.ATTRIBUTES/VARIABLE_VALUE"}
    sm = _values(repo)
    assert sm["w1/.ATTRIBUTES/VARIABLE_VALUE"].shape == (64, 512) and sm["step/.ATTRIBUTES/VARIABLE_VALUE"] == 7


def test_import_savedmodel_deltas_and_exports_byte_identical(tmp_path):
    repo = str(tmp_path / "r")
    run_cli("init", repo)
    sm = tmp_path / "sm"
    shutil.copytree(os.path.join(FIX, "savedmodel_v1"), sm)
    run_cli("import", "tensorflow", str(sm), repo=repo)
    v1 = head_of(repo)
    shutil.rmtree(sm)
    shutil.copytree(os.path.join(FIX, "savedmodel_v2"), sm)
    out = run_cli("import", "tensorflow", str(sm), repo=repo).stdout
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        meta = r.read_commit(r.resolve(v1)).metadata
        assert meta["import"] == "tensorflow"
        assert meta["tensorflow"]["kind"] == "savedmodel"
        assert meta["tensorflow"]["bundles"]["variables/variables"]["tensors"] == 8
        data = "variables/variables.data-00000-of-00001"
        assert r.read_file(r.tree_of("HEAD").entries[data].file).format == "tfbundle"
    finally:
        r.close()
    # v2 changed 4 rows of w1 (128 KiB), b1 and step: w1 is stored as a delta, the rest
    # (saved_model.pb, tensors under 64 KiB, packed) mostly again.
    pct = float(out.split("newly stored (")[1].split("%")[0])
    assert pct < 35, out
    run_cli("export", v1, str(tmp_path / "e1"), repo=repo)
    run_cli("export", "HEAD", str(tmp_path / "e2"), repo=repo)
    assert tree_sha(tmp_path / "e1") == tree_sha(os.path.join(FIX, "savedmodel_v1"))
    assert tree_sha(tmp_path / "e2") == tree_sha(os.path.join(FIX, "savedmodel_v2"))


def test_second_version_stores_far_less_than_as_bytes(tmp_path, monkeypatch):
    """The same two SavedModel versions, with and without the bundle reader."""
    from coralfs import Repository

    def stored(name: str) -> int:
        r = Repository.init(str(tmp_path / name))
        try:
            r.commit_paths([os.path.join(FIX, "savedmodel_v1")], "v1")
            return r.commit_paths([os.path.join(FIX, "savedmodel_v2")], "v2").stats.stored
        finally:
            r.close()

    as_bundle = stored("bundle")
    monkeypatch.setattr(detect, "BY_NAME", [])
    as_bytes = stored("bytes")
    assert as_bundle < as_bytes * 0.4, (as_bundle, as_bytes)


def test_import_checkpoint_prefix(tmp_path):
    repo = str(tmp_path / "r")
    run_cli("init", repo)
    d = tmp_path / "ck"
    shutil.copytree(os.path.join(FIX, "sharded_v1"), d)
    (d / "other.txt").write_text("not part of the checkpoint")
    run_cli("import", "tensorflow", str(d / "ckpt"), repo=repo)
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        assert sorted(r.tree_of("HEAD").entries) == ["ckpt.data-00000-of-00003", "ckpt.data-00001-of-00003",
                                                     "ckpt.data-00002-of-00003", "ckpt.index"]
    finally:
        r.close()


# --- malformed bundles ----------------------------------------------------------------

def _copy_ckpt(tmp_path, name: str = "ckpt_v1"):
    d = tmp_path / name
    shutil.copytree(os.path.join(FIX, name), d)
    return d


def _entry_offset(index: bytes, key: bytes) -> int:
    return index.index(key) + len(key)


def test_bad_crc_is_named_and_nothing_committed(tmp_path):
    repo = str(tmp_path / "r")
    run_cli("init", repo)
    d = _copy_ckpt(tmp_path)
    shard = d / "ckpt.data-00000-of-00001"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0x40  # inside w1
    shard.write_bytes(bytes(raw))
    line = fails(repo, "import", "tensorflow", str(d))
    assert "ckpt.data-00000-of-00001" in line and "crc32c mismatch" in line and "w1" in line
    assert "nothing was committed" in line
    line = fails(repo, "commit", str(d), "-m", "x")
    assert "crc32c mismatch" in line
    from coralfs import Repository
    with Repository.open(repo) as r:
        assert r.head() is None


def test_truncated_shard_and_missing_shard(tmp_path, repo):
    d = _copy_ckpt(tmp_path)
    shard = d / "ckpt.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:40000])
    with pytest.raises(FormatError, match="outside the shard"):
        repo.commit_paths([str(d)], "x")
    assert repo.head() is None
    d2 = _copy_ckpt(tmp_path, "sharded_v1")
    os.unlink(d2 / "ckpt.data-00001-of-00003")
    repo_dir = str(tmp_path / "r2")
    run_cli("init", repo_dir)
    line = fails(repo_dir, "import", "tensorflow", str(d2))
    assert "ckpt.data-00001-of-00003: missing" in line


def test_corrupt_index_is_named(tmp_path, repo):
    d = _copy_ckpt(tmp_path)
    idx = d / "ckpt.index"
    raw = bytearray(idx.read_bytes())
    raw[10] ^= 0x01
    idx.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"ckpt\.data-00000-of-00001: its index ckpt\.index: .*crc32c"):
        repo.commit_paths([str(d)], "x")
    assert repo.head() is None


# A table writer for crafted indexes (one data block, uncompressed or snappy).



def _block(rows: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in rows)
    return body + struct.pack("<II", 0, 1)


def _snappy_literal(data: bytes) -> bytes:
    """Snappy of ``data`` as literals of up to 60 bytes (valid snappy, never a copy)."""
    out = varint(len(data))
    for i in range(0, len(data), 60):
        piece = data[i:i + 60]
        out += bytes([(len(piece) - 1) << 2]) + piece
    return out


def _table(rows: list[tuple[bytes, bytes]], snappy: bool = False) -> bytes:
    out = bytearray()

    def put(body: bytes, kind: int = 0) -> tuple[int, int]:
        off = len(out)
        out.extend(body + bytes([kind]))
        out.extend(struct.pack("<I", tfbundle.mask(tfbundle.crc32c(body + bytes([kind])))))
        return off, len(body)

    data = _block(rows)
    off, size = put(_snappy_literal(data), 1) if snappy else put(data)
    meta_off, meta_size = put(_block([]))
    idx_off, idx_size = put(_block([(rows[-1][0] + b"\xff", varint(off) + varint(size))]))
    foot = varint(meta_off) + varint(meta_size) + varint(idx_off) + varint(idx_size)
    return bytes(out) + foot.ljust(40, b"\0") + struct.pack("<Q", tfbundle.TABLE_MAGIC)


def _entry(dtype: int, shape: list[int], offset: int, size: int, crc: int, shard: int = 0) -> bytes:
    dims = b"".join(b"\x12" + varint(len(d)) + d for d in (b"\x08" + varint(s) for s in shape))
    return (b"\x08" + varint(dtype) + b"\x12" + varint(len(dims)) + dims + b"\x18" + varint(shard)
            + b"\x20" + varint(offset) + b"\x28" + varint(size) + b"\x35" + struct.pack("<I", crc))


def _bundle(tmp_path, entries: list[tuple[bytes, bytes]], data: bytes, snappy: bool = False, shards: int = 1):
    d = tmp_path / "crafted"
    d.mkdir(exist_ok=True)
    (d / "b.index").write_bytes(_table([(b"", b"\x08" + varint(shards))] + entries, snappy))
    (d / f"b.data-00000-of-{shards:05d}").write_bytes(data)
    return d


def test_snappy_index_reads_like_an_uncompressed_one(tmp_path):
    a = np.arange(12, dtype=np.float32)
    e = _entry(1, [3, 4], 0, 48, tfbundle.mask(tfbundle.crc32c(a.tobytes())))
    d = _bundle(tmp_path, [(b"a", e)], a.tobytes(), snappy=True)
    shard = str(d / "b.data-00000-of-00001")
    lay = detect.layout_of(shard, siblings=detect.disk_siblings(shard))
    assert [(r.name, r.dtype, r.shape, r.offset, r.length) for r in lay.regions] == [("a", "F32", (3, 4), 0, 48)]
    assert tfbundle.snappy_decompress(b"\x0a\x08abc" + b"\x0d\x03") == b"abcabcabca"  # overlapping copy


@pytest.mark.parametrize("case, entry, problem", [
    ("lying offset", (1, [4], 40, 16), "outside the shard"),
    ("size not shape", (1, [5], 0, 16), "needs 20"),
    ("bad crc", (1, [4], 0, 16, 1234), "crc32c mismatch"),
    ("shard out of range", (1, [4], 0, 16, None, 3), "shard 3 of a 1-shard bundle"),
])
def test_crafted_index_lies_are_refused(tmp_path, repo, case, entry, problem):
    data = np.arange(8, dtype=np.float32).tobytes()
    dtype, shape, off, size, *rest = entry
    crc = rest[0] if rest and rest[0] is not None else tfbundle.mask(tfbundle.crc32c(data[off:off + size]))
    shard = rest[1] if len(rest) > 1 else 0
    d = _bundle(tmp_path, [(b"t", _entry(dtype, shape, off, size, crc, shard))], data)
    with pytest.raises(FormatError, match=problem) as ei:
        repo.commit_paths([str(d)], "x")
    assert "b.data-00000-of-00001" in str(ei.value) and "\n" not in str(ei.value)
    assert repo.head() is None


def test_no_tensorflow_imported():
    assert "tensorflow" not in sys.modules


def test_tensors_reads_any_format_coralfs_splits(repo, tmp_path):
    from safetensors.numpy import save_file
    import torch
    d = tmp_path / "m"
    d.mkdir()
    big = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)  # stored as a tensor
    save_file({"big": big, "small": np.arange(5, dtype=np.int16)}, str(d / "a.safetensors"))
    torch.save({"t": torch.arange(6, dtype=torch.float64)}, d / "b.pt")
    np.save(d / "c.npy", np.eye(3, dtype=np.float32))
    repo.commit_paths([str(d)], "mixed")
    got = dict(tensors(repo, "HEAD", files="*.safetensors"))
    assert set(got) == {"big", "small"} and np.array_equal(got["big"], big)
    assert np.array_equal(got["small"], np.arange(5, dtype=np.int16))
    allv = list(tensors(repo))
    assert any(np.array_equal(a, np.arange(6, dtype=np.float64)) for _, a in allv)  # the torch storage
    assert any(np.array_equal(a, np.eye(3, dtype=np.float32)) for _, a in allv)


def test_crc32c_fallback_equals_the_c_implementation():
    import google_crc32c
    data = bytes(range(256)) * 40 + b"tail"
    assert tfbundle._crc32c_py(data) == google_crc32c.value(data) == tfbundle.crc32c(data)
    assert tfbundle._crc32c_py(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tfbundle._crc32c_py(data[100:], tfbundle._crc32c_py(data[:100])) == tfbundle.crc32c(data)


def test_import_tensorflow_refuses_what_is_not_tensorflow(tmp_path):
    repo = str(tmp_path / "r")
    run_cli("init", repo)
    (tmp_path / "empty").mkdir()
    assert "neither a SavedModel" in fails(repo, "import", "tensorflow", str(tmp_path / "empty"))
    (tmp_path / "x.bin").write_bytes(b"abc")
    assert "no x.bin.index beside it" in fails(repo, "import", "tensorflow", str(tmp_path / "x.bin"))
    assert "no such file or directory" in fails(repo, "import", "tensorflow", str(tmp_path / "nope"))
