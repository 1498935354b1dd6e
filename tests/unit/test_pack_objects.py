"""File version 2 (packs of small tensors): pinned bytes, version 1 bytes unchanged,
canonical versions and validation of packed tensors."""

from __future__ import annotations

import pytest

from coralfs.objects.ids import ObjectId
from coralfs.objects.kinds import (BytesSegment, File, InvalidObject, PackedTensor, PackSegment,
                                   TensorSegment, parse_object)
from coralfs.objects.wire import WireError

A = ObjectId(bytes(range(32)))
B = ObjectId(bytes(range(32, 64)))

# Computed by the code before packs existed: a File without packs keeps these bytes.
V1 = ("43524f02010b007361666574656e736f72732200000000000000020000000001000000000102030405060708"
      "090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0a00000000000000010100000077202122232425"
      "262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f1800000000000000")
V2 = ("43524f020203006e707a2800000000000000010000000201000000000102030405060708090a0b0c0d0e0f"
      "101112131415161718191a1b1c1d1e1f2800000000000000020000000100000062030046333201020000000000"
      "000004000000000000000800000000000000202122232425262728292a2b2c2d2e2f303132333435363738393a"
      "3b3c3d3e3f010000006302005538020300000000000000010000000000000014000000000000000300000000"
      "000000000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")


def packed() -> File:
    return File("npz", [PackSegment(((A, 40),), (PackedTensor("b", "F32", (2,), 4, 8, B),
                                                  PackedTensor("c", "U8", (3, 1), 20, 3, A)))])


def test_version_1_bytes_unchanged():
    f = File("safetensors", [BytesSegment(((A, 10),)), TensorSegment("w", B, 24)])
    assert f.to_bytes().hex() == V1


def test_version_2_golden_and_roundtrip():
    f = packed()
    data = f.to_bytes()
    assert data.hex() == V2
    assert data[4] == 2
    back = parse_object(data)
    assert back.to_bytes() == data and back.size == 40
    assert {n: (t.dtype, t.shape, t.offset) for n, t in back.tensors().items()} == \
        {"b": ("F32", (2,), 4), "c": ("U8", (3, 1), 20)}
    assert back.tensor_offsets()["c"][0] == 20


def test_versions_are_canonical():
    v1 = bytearray(bytes.fromhex(V1))
    v1[4] = 2  # no pack: must be version 1
    with pytest.raises(WireError):
        parse_object(bytes(v1))
    v2 = bytearray(bytes.fromhex(V2))
    v2[4] = 1  # a pack in a version-1 file
    with pytest.raises(WireError):
        parse_object(bytes(v2))
    v2[4] = 3
    with pytest.raises(WireError, match="version 3"):
        parse_object(bytes(v2))


@pytest.mark.parametrize("tensors, problem", [
    ((PackedTensor("b", "F32", (3,), 0, 8, A),), "is not 8 bytes"),
    ((PackedTensor("b", "F32", (2,), 36, 8, A),), "outside"),
    ((PackedTensor("b", "U8", (8,), 0, 8, A), PackedTensor("c", "U8", (8,), 4, 8, A)), "overlaps"),
    ((PackedTensor("b", "Q99", (8,), 0, 8, A),), "dtype"),
])
def test_bad_packed_tensors_rejected(tensors, problem):
    with pytest.raises(InvalidObject, match=problem):
        File("npz", [PackSegment(((A, 40),), tensors)])


def test_truncated_version_2_rejected():
    data = bytes.fromhex(V2)
    for n in (6, 40, len(data) - 1):
        with pytest.raises(WireError):
            parse_object(data[:n])


def test_fsck_catches_a_packed_digest_that_lies(tmp_path):
    """A File object whose packed tensor digest does not match its bytes (crafted: every
    object hashes to its id) is named by fsck; the honest one is clean."""
    import numpy as np
    from safetensors.numpy import save_file

    from coralfs.api import Repository
    from coralfs.objects.ids import hash_bytes
    from coralfs.objects.kinds import Tree, TreeEntry

    src = tmp_path / "ck"
    src.mkdir()
    save_file({f"b{i}": np.full(4, i, dtype=np.float32) for i in range(8)}, str(src / "m.safetensors"))
    r = Repository.init(str(tmp_path / "repo"))
    r.commit_paths([str(src)], "honest")
    assert r.fsck().ok
    f = r.read_file(r.tree_of("HEAD").entries["m.safetensors"].file)
    pack_i, pack = next((i, s) for i, s in enumerate(f.segments) if isinstance(s, PackSegment))
    lie = PackedTensor(pack.tensors[0].name, pack.tensors[0].dtype, pack.tensors[0].shape,
                       pack.tensors[0].offset, pack.tensors[0].length, hash_bytes(b"something else"))
    segs = list(f.segments)
    segs[pack_i] = PackSegment(pack.chunks, (lie,) + pack.tensors[1:])
    fid = r.put(File(f.format, segs))
    r.commit(Tree({"m.safetensors": TreeEntry(fid)}), "crafted")
    rep = r.fsck()
    assert any("b0]: packed tensor digest does not match" in p for p in rep.problems), rep.problems
    r.close()
