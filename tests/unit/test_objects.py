"""Object kinds: canonical bytes pinned by golden tests, validation of bad content."""

from __future__ import annotations

import pytest

from coralfs.objects.ids import ObjectId
from coralfs.objects.kinds import (BytesSegment, Commit, File, InvalidObject, Tag, Tensor, TensorSegment,
                                   Tree, TreeEntry, parse_object)
from coralfs.objects.wire import WireError

A = ObjectId(bytes(range(32)))
B = ObjectId(bytes(range(32, 64)))


def samples():
    return {
        "tensor": Tensor("F32", (2, 3), 16, [A, B]),
        "file": File("safetensors", [BytesSegment(((A, 10),)), TensorSegment("w", B, 24)]),
        "tree": Tree({"b/model.safetensors": TreeEntry(A), "a.json": TreeEntry(B, 0o755)}),
        "commit": Commit(A, [B], "ada <ada@x>", 1700000000, "step 500", {"metrics": {"loss": 0.5}}),
        "tag": Tag(A, "v1.2.0", "ada", 1700000001, "release"),
    }


GOLDEN = {
    "tensor": "43524f0101030046333202020000000000000003000000000000001000000000000000020000000001"
              "02030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a"
              "2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
}


@pytest.mark.parametrize("kind", ["tensor", "file", "tree", "commit", "tag"])
def test_roundtrip_and_canonical(kind):
    obj = samples()[kind]
    data = obj.to_bytes()
    back = parse_object(data)
    assert back.to_bytes() == data
    assert back.id == obj.id
    assert data[:3] == b"CRO" and data[4] == 1


def test_golden_bytes():
    """Formats are pinned: a change here breaks every existing repository."""
    s = samples()
    assert s["tensor"].to_bytes().hex() == GOLDEN["tensor"]
    assert s["commit"].to_bytes() == (
        b'CRO\x04\x01{"author":"ada <ada@x>","message":"step 500","metadata":{"metrics":{"loss":0.5}},'
        b'"parents":["' + B.hex().encode() + b'"],"time":1700000000,"tree":"' + A.hex().encode() + b'"}')
    assert s["tag"].to_bytes() == (
        b'CRO\x05\x01{"message":"release","name":"v1.2.0","tagger":"ada","target":"' + A.hex().encode()
        + b'","time":1700000001}')
    tree = s["tree"].to_bytes()
    assert tree[:9] == b"CRO\x03\x01\x02\x00\x00\x00"
    assert tree[9:11] == b"\x06\x00" and tree[11:17] == b"a.json"  # sorted by path
    f = s["file"].to_bytes()
    assert f[:5] == b"CRO\x02\x01" and f[5:7] == b"\x0b\x00" and f[7:18] == b"safetensors"


def test_tree_order_independent_of_insertion():
    t1 = Tree({"a": TreeEntry(A), "b": TreeEntry(B)})
    t2 = Tree({"b": TreeEntry(B), "a": TreeEntry(A)})
    assert t1.to_bytes() == t2.to_bytes()


@pytest.mark.parametrize("path", ["", "/abs", "a/../b", "a//b", "./a", "a/.", "x\0y", ".coral/x", "a\\b"])
def test_bad_paths_rejected(path):
    with pytest.raises(InvalidObject):
        Tree({path: TreeEntry(A)})


def test_file_and_directory_clash():
    with pytest.raises(InvalidObject):
        Tree({"a": TreeEntry(A), "a/b": TreeEntry(B)})


def test_tensor_validation():
    with pytest.raises(InvalidObject):
        Tensor("F32", (2, 3), 16, [A])  # 24 bytes need 2 chunks of 16
    with pytest.raises(InvalidObject):
        Tensor("F32", (2,), 6, [A, B])  # chunk size not a multiple of the width
    with pytest.raises(InvalidObject):
        Tensor("Q7", (2,), 8, [A])
    assert Tensor("F32", (0,), 16, []).nbytes == 0
    assert Tensor("F64", (), 8, [A]).nbytes == 8


def test_nonfinite_metadata_rejected():
    with pytest.raises(InvalidObject):
        Commit(A, [], "a", 0, "m", {"loss": float("nan")})


@pytest.mark.parametrize("kind", ["tensor", "file", "tree", "commit", "tag"])
def test_truncated_or_extended_bytes_rejected(kind):
    data = samples()[kind].to_bytes()
    for bad in (data[:-1], data + b"x", data[:5]):
        with pytest.raises(WireError):
            parse_object(bad)


def test_from_bytes_parses_its_own_kind_only():
    objs = samples()
    for name, obj in objs.items():
        cls = type(obj)
        assert cls.from_bytes(obj.to_bytes()) == obj
        other = next(o for n, o in objs.items() if n != name)
        with pytest.raises(WireError, match=f"not a {cls.type_name}"):
            cls.from_bytes(other.to_bytes())
    with pytest.raises(WireError):
        Tree.from_bytes(b"CRO\x03")
