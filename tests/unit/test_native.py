"""The compiled kernel of the delta order (coralfs/objects/_native.c) is built, and it is the
numpy code it replaces, bit for bit: the same differences in the same exponent order, the
same segment cuts, byte-identical SUBS and SPARSE frames, the same decoded elements (for
every width, key mode and distribution of classes), and golden frames decode on both paths."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.objects import codecs, dtypes, entropy, native, planes, sparse
from coralfs.objects.ids import hash_bytes
from coralfs.objects.planes import _UINT, _keys, _unkeys, _unzigzag, _zigzag

KEYS = [dtypes.KEY_UNSIGNED, dtypes.KEY_SIGNED, dtypes.KEY_FLOAT, 7]  # 7: no key mode, the identity
DELTA_DTYPES = ["F64", "F32", "F16", "BF16", "F8_E4M3", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"]


@contextlib.contextmanager
def numpy_path():
    """sparse.py without the kernel, as on a machine where it is not built."""
    saved = native.kernel
    native.kernel = None
    try:
        yield
    finally:
        native.kernel = saved


def test_the_kernel_is_built_and_used():
    """scripts/setup builds it in place (CI runs that on a clean clone): a checkout that
    tests without it would test only the fallback."""
    from coralfs.objects import _native
    assert native.kernel is _native
    assert os.environ.get("CORALFS_NATIVE", "1") != "0"


def test_coralfs_native_0_selects_the_numpy_code():
    code = "import sys; from coralfs.objects import native; print(native.kernel is None, 'numpy' in sys.modules)"
    env = {**os.environ, "CORALFS_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True", "False"]
    env["CORALFS_NATIVE"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]  # importing the kernel imports no numpy


# -- the kernel against the numpy code ------------------------------------------------------

@st.composite
def elements(draw):
    """(width, base elements, new elements): classes (the 8 bits after the sign) drawn from
    one class, a few skewed ones, all 256, or the exponents of specials (NaN, inf, zero,
    subnormals); the other bits random; a random share of the new elements moved by a
    little or replaced by any bits."""
    width = draw(st.sampled_from([1, 2, 4, 8]))
    n = draw(st.one_of(st.integers(0, 40), st.integers(0, 30000)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dist = draw(st.sampled_from(["one", "few", "all", "specials", "bits"]))
    dt = _UINT[width]
    bu = rng.integers(0, 256, n * width, dtype=np.uint8).view(dt).copy()
    if width > 1 and dist != "bits":
        if dist == "one":
            cls = np.full(n, rng.integers(0, 256), dtype=np.uint64)
        elif dist == "few":
            cls = rng.choice(rng.integers(0, 256, 8), n, p=[0.4, 0.2, 0.15, 0.1, 0.05, 0.05, 0.03, 0.02]).astype(np.uint64)
        elif dist == "all":
            cls = rng.integers(0, 256, n).astype(np.uint64)
        else:
            cls = rng.choice(np.array([0, 255, 0, 255, 1, 127], dtype=np.uint64), n)
        shift = dt(8 * width - 9)
        bu &= ~(dt(0xFF) << shift)
        bu |= cls.astype(dt) << shift
    u = bu.copy()
    moved = rng.random(n) < draw(st.floats(0, 1))
    small = rng.integers(-3, 4, n).astype(np.int64).astype(dt)
    u[moved] += small[moved]
    wild = moved & (rng.random(n) < 0.1)
    u[wild] = rng.integers(0, 256, int(wild.sum()) * width, dtype=np.uint8).view(dt)
    return width, bu, u


def _numpy_order(bu: np.ndarray, width: int):
    """(permutation into exponent order, cuts) as the numpy encoder computes them."""
    if width == 1:
        return np.arange(len(bu)), [0, len(bu)]
    perm, cs = sparse._sorted(sparse._classes(bu, width))
    return perm, sparse._cuts(cs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=elements(), key=st.sampled_from(KEYS))
def test_encode_is_the_numpy_order_and_cuts(case, key):
    width, bu, u = case
    perm, cuts = _numpy_order(bu, width)
    want = _zigzag(_keys(u, width, key) - _keys(bu, width, key), width)[perm]
    got = np.empty_like(bu)
    counts = np.frombuffer(native.kernel.subs_encode(u, bu, got, width, key), dtype=np.int64)
    assert got.tobytes() == want.tobytes()
    assert sparse._counted_cuts(counts) == cuts
    if width > 1:
        assert np.array_equal(counts, np.bincount(sparse._classes(bu, width), minlength=256))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=elements(), key=st.sampled_from(KEYS), seed=st.integers(0, 2**32 - 1))
def test_decode_is_the_numpy_decode_for_any_differences(case, key, seed):
    """Any bits as the ordered differences (not only what an encoder writes): the element
    each one decodes to is what the numpy code makes of it; and encode then decode is exact."""
    width, bu, u = case
    z = np.random.default_rng(seed).integers(0, 256, len(bu) * width, dtype=np.uint8).view(bu.dtype)
    perm, _ = _numpy_order(bu, width)
    placed = np.empty_like(z)
    placed[perm] = z
    want = _unkeys(_unzigzag(placed, width) + _keys(bu, width, key), width, key)
    got = np.empty_like(bu)
    native.kernel.subs_decode(bu, z, got, width, key)
    assert got.tobytes() == want.tobytes()
    ordered = np.empty_like(bu)
    native.kernel.subs_encode(u, bu, ordered, width, key)
    native.kernel.subs_decode(bu, ordered, got, width, key)
    assert got.tobytes() == u.tobytes()


def test_more_elements_than_the_sort_key_holds():
    """Past 1 << _KEY_BITS elements the numpy code takes the argsort: the same order."""
    n = (1 << sparse._KEY_BITS) + 3
    rng = np.random.default_rng(5)
    bu = (rng.integers(100, 130, n).astype(np.uint16) << np.uint16(7)) | rng.integers(0, 128, n).astype(np.uint16)
    u = bu + rng.integers(0, 3, n).astype(np.uint16)
    perm, cuts = _numpy_order(bu, 2)
    got = np.empty_like(bu)
    counts = np.frombuffer(native.kernel.subs_encode(u, bu, got, 2, dtypes.KEY_FLOAT), dtype=np.int64)
    assert np.array_equal(got, _zigzag(_keys(u, 2, 2) - _keys(bu, 2, 2), 2)[perm])
    assert sparse._counted_cuts(counts) == cuts
    back = np.empty_like(bu)
    native.kernel.subs_decode(bu, got, back, 2, dtypes.KEY_FLOAT)
    assert np.array_equal(back, u)


# -- frames: byte-identical on both paths ----------------------------------------------------

def _bits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def _frames(codec: int, data: bytes, base: bytes, dtype: str, cuts=None) -> bytes:
    dt = dtypes.lookup(dtype)
    if cuts is None:
        return codecs.encode_as(codec, data, hash_bytes(data), width=dt.width, key=dt.key, level=1,
                                base=codecs.Base(hash_bytes(base), base, 0))
    planes.rans_used(reset=True)
    payload = sparse._sparse_payload(np.frombuffer(data, np.uint8), np.frombuffer(base, np.uint8), dt.width, dt.key, 1, cuts)
    payload = codecs._CHECK.pack(codecs.checksum(payload)) + payload
    return codecs._pack(codec, dt.width, dt.key, 1, len(data), codecs.checksum(data), hash_bytes(data),
                        hash_bytes(base), payload, version=entropy.SINCE if planes.rans_used(reset=True) else 3)


def _decode_both(frame: bytes, data: bytes, base: bytes) -> None:
    oid = hash_bytes(data)
    assert codecs.decode(frame, oid, lambda o: base) == data
    with numpy_path():
        assert codecs.decode(frame, oid, lambda o: base) == data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(DELTA_DTYPES), n=st.one_of(st.integers(0, 50), st.integers(0, 20000)),
       seed=st.integers(0, 2**32 - 1), changed=st.floats(0, 1), tail=st.integers(0, 7),
       floats=st.booleans(), cuts=st.sampled_from([None, None, [], [120], [0, 255], [100, 125]]))
def test_frames_are_byte_identical_on_both_paths(dtype, n, seed, changed, tail, floats, cuts):
    dt = dtypes.lookup(dtype)
    rng = np.random.default_rng(seed)
    if floats and dt.key == dtypes.KEY_FLOAT and dt.width > 1:
        # Weights: a few exponents, small moves (the multi-segment, packed-symbol layouts).
        b = (rng.standard_normal(n) * 0.05).astype(np.float64).view(np.uint64)
        base = np.ascontiguousarray((b >> np.uint64(64 - 8 * dt.width)).astype(_UINT[dt.width])) if dt.width < 8 else b
        new = base.copy()
        moved = rng.random(n) < changed
        new[moved] += rng.integers(0, 3, int(moved.sum())).astype(new.dtype)
        base, new = base.view(np.uint8), new.view(np.uint8)
    else:
        base = _bits(n * dt.width, seed)
        new = base.copy()
        moved = rng.random(len(new)) < changed
        new[moved] = rng.integers(0, 256, int(moved.sum()), dtype=np.uint8)
    t = tail % dt.width
    base = np.concatenate([base, _bits(t, seed + 1)]).tobytes()
    data = np.concatenate([new, _bits(t, seed + 2)]).tobytes()
    for codec in (codecs.SUBS, codecs.SPARSE):
        forced = cuts if codec == codecs.SPARSE and dt.width > 1 else None
        frame = _frames(codec, data, base, dtype, forced)
        with numpy_path():
            assert _frames(codec, data, base, dtype, forced) == frame
        _decode_both(frame, data, base)


def _golden(name: str) -> list[dict]:
    with gzip.open(os.path.join(os.path.dirname(__file__), "golden", name), "rt") as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["frames-delta-v3.json.gz", "frames-v2.json.gz"])
def test_golden_delta_frames_decode_on_both_paths(name):
    """frames-delta-v3 (made by make_frames_delta_v3.py with the numpy code) and the v2
    frames decode bit-exactly with the kernel and without it; v3 frames re-encoded on
    either path are the same bytes."""
    recs = _golden(name)
    assert {r["codec"] for r in recs} == {"subs", "sparse"}
    for r in recs:
        base = bytes.fromhex(r["base"])
        data = (np.frombuffer(base, np.uint8) ^ np.frombuffer(bytes.fromhex(r["xor"]), np.uint8)).tobytes()
        frame = bytes.fromhex(r["frame"])
        _decode_both(frame, data, base)
        if name == "frames-delta-v3.json.gz" and r["mode"] != sparse.POS_GROUPS:
            codec = codecs.SUBS if r["codec"] == "subs" else codecs.SPARSE
            again = _frames(codec, data, base, r["dtype"])
            with numpy_path():
                assert _frames(codec, data, base, r["dtype"]) == again
            _decode_both(again, data, base)
    if name == "frames-delta-v3.json.gz":
        assert {r["dtype"] for r in recs} >= {"F64", "F32", "F16", "BF16", "I32", "U8"}
        assert sparse.POS_GROUPS in {r["mode"] for r in recs}


# -- bad input: an error, never a crash --------------------------------------------------------

def test_wrong_buffers_are_refused_with_a_clear_error():
    k = native.kernel
    b = np.zeros(8, dtype=np.uint32)
    with pytest.raises(ValueError, match="width 3"):
        k.subs_decode(b, b.copy(), np.empty_like(b), 3, 0)
    with pytest.raises(ValueError, match="not a whole number of 4-byte elements"):
        k.subs_decode(b.view(np.uint8)[:30], bytes(30), bytearray(30), 4, 0)
    with pytest.raises(ValueError, match="ordered differences of 28 bytes for a base of 32"):
        k.subs_decode(b, bytes(28), np.empty_like(b), 4, 0)
    with pytest.raises(ValueError, match="output of 36 bytes for a base of 32"):
        k.subs_decode(b, bytes(32), bytearray(36), 4, 0)
    with pytest.raises(ValueError, match="data of 16 bytes for a base of 32"):
        k.subs_encode(bytes(16), b, np.empty_like(b), 4, 0)
    with pytest.raises(TypeError):
        k.subs_decode(b, bytes(32), bytes(32), 4, 0)  # a read-only output
    with pytest.raises(TypeError):
        k.subs_encode(b, b, np.empty(16, dtype=np.uint16)[::2], 4, 0)  # not contiguous
    with pytest.raises(ValueError, match="overlaps"):
        k.subs_decode(b, bytes(32), b, 4, 0)
    with pytest.raises(ValueError, match="overlaps"):
        buf = bytearray(64)
        k.subs_encode(bytes(32), memoryview(buf)[:32], memoryview(buf)[16:48], 4, 0)
    k.subs_decode(b"", b"", bytearray(), 8, 2)  # nothing to do
    assert np.frombuffer(k.subs_encode(b"", b"", bytearray(), 2, 2), dtype=np.int64).sum() == 0


def test_unaligned_buffers():
    """Slices of a frame may start at any byte: the kernel loads through memcpy."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, 8 * 1001 + 3, dtype=np.uint8)
    bu, u = raw[1:1 + 8000], raw[2:2 + 8000]
    out = np.empty(8003, dtype=np.uint8)[3:]
    native.kernel.subs_encode(u, bu, out, 8, dtypes.KEY_FLOAT)
    perm, _ = _numpy_order(bu.copy().view(np.uint64), 8)
    want = _zigzag(_keys(u.copy().view(np.uint64), 8, 2) - _keys(bu.copy().view(np.uint64), 8, 2), 8)[perm]
    assert out.tobytes() == want.tobytes()
    back = np.empty(8001, dtype=np.uint8)[1:]
    native.kernel.subs_decode(bu, out, back, 8, dtypes.KEY_FLOAT)
    assert back.tobytes() == u.tobytes()


@settings(max_examples=100, deadline=None)
@given(width=st.sampled_from([1, 2, 4, 8]), n=st.integers(0, 5000), seed=st.integers(0, 2**32 - 1))
def test_ungroup_is_the_inverse_of_group(width, n, seed):
    g = planes.group(_bits(n * width, seed), width)
    out = np.empty(n * width, dtype=np.uint8)
    native.kernel.ungroup([g[i * n:(i + 1) * n].tobytes() for i in range(width)], out, width)
    assert out.tobytes() == planes.ungroup(g.tobytes(), width).tobytes() == _bits(n * width, seed).tobytes()


def test_ungroup_refuses_wrong_planes():
    k = native.kernel
    with pytest.raises(ValueError, match="3 planes for 4-byte elements"):
        k.ungroup([bytes(4)] * 3, bytearray(16), 4)
    with pytest.raises(ValueError, match="plane of 5 bytes for 4 elements"):
        k.ungroup([bytes(4), bytes(5)], bytearray(8), 2)
    with pytest.raises(ValueError, match="not a whole number"):
        k.ungroup([bytes(4)] * 2, bytearray(9), 2)
    with pytest.raises(ValueError, match="width 5"):
        k.ungroup([bytes(4)] * 5, bytearray(20), 5)
    with pytest.raises(TypeError, match="sequence"):
        k.ungroup(3, bytearray(8), 2)
    with pytest.raises(TypeError):
        k.ungroup([bytes(4), 7], bytearray(8), 2)
    buf = bytearray(8)
    with pytest.raises(ValueError, match="overlaps"):
        k.ungroup([memoryview(buf)[:4], bytes(4)], buf, 2)


# -- encode passes: byte grouping (with FGROUPED's rotation), SPARSE's group bitmaps -----------

@settings(max_examples=100, deadline=None)
@given(width=st.sampled_from([1, 2, 4, 8]), n=st.integers(0, 5000), tail=st.integers(0, 7),
       seed=st.integers(0, 2**32 - 1), rotate=st.booleans())
def test_group_is_the_numpy_group(width, n, tail, seed, rotate):
    buf = _bits(n * width + tail % width, seed)
    got = planes.group(buf, width, rotate=rotate)
    with numpy_path():
        want = planes.group(planes._rotate(buf, width) if rotate else buf, width)
        assert planes.group(buf, width, rotate=rotate).tobytes() == want.tobytes()
    assert got.tobytes() == want.tobytes()
    assert buf.tobytes() == _bits(n * width + tail % width, seed).tobytes()  # the input is untouched


@settings(max_examples=200, deadline=None)
@given(n=st.one_of(st.integers(0, 200), st.integers(0, 20000)), seed=st.integers(0, 2**32 - 1),
       p=st.floats(0, 1), cuts=st.sampled_from([[], [120], [0], [255], [0, 255], [100, 125], [1, 2, 3, 250]]))
def test_group_bits_are_numpy_packbits_of_each_group(n, seed, p, cuts):
    rng = np.random.default_rng(seed)
    cls = rng.integers(98, 130, n, dtype=np.uint8) if seed % 2 else rng.integers(0, 256, n, dtype=np.uint8)
    changed = rng.random(n) < p
    stride = (n + 7) // 8
    out = np.full((len(cuts) + 1) * stride, 0xAA, dtype=np.uint8)
    counts = np.frombuffer(native.kernel.group_bits(changed, cls, bytes(cuts), out), dtype=np.int64)
    grp = sparse._group_of(cls, cuts)
    for g in range(len(cuts) + 1):
        bits = changed[grp == g]
        assert counts[2 * g] == len(bits) and counts[2 * g + 1] == bits.sum()
        want = np.packbits(bits, bitorder="little")
        assert out[g * stride:g * stride + len(want)].tobytes() == want.tobytes()
    mine = sparse._grouped_positions(changed, cls, cuts, 1)
    with numpy_path():
        assert sparse._grouped_positions(changed, cls, cuts, 1) == mine


def test_encode_passes_refuse_wrong_buffers():
    k = native.kernel
    with pytest.raises(ValueError, match="width 1"):
        k.group(bytes(8), bytearray(8), 1, 0)
    with pytest.raises(ValueError, match="not a whole number"):
        k.group(bytes(9), bytearray(9), 4, 1)
    with pytest.raises(ValueError, match="output of 12 bytes"):
        k.group(bytes(8), bytearray(12), 4, 0)
    buf = bytearray(16)
    with pytest.raises(ValueError, match="overlaps"):
        k.group(memoryview(buf)[:8], memoryview(buf)[4:12], 2, 0)
    with pytest.raises(ValueError, match="7 changed flags for 8 classes"):
        k.group_bits(bytes(7), bytes(8), b"", bytearray(1))
    with pytest.raises(ValueError, match="at most 8 groups"):
        k.group_bits(bytes(8), bytes(8), bytes(range(8)), bytearray(9))
    with pytest.raises(ValueError, match="output of 1 bytes for 2 bitmaps"):
        k.group_bits(bytes(8), bytes(8), b"\x05", bytearray(1))
    assert np.frombuffer(k.group_bits(b"", b"", b"\x01", bytearray()), dtype=np.int64).tolist() == [0, 0, 0, 0]


# -- SPARSE's passes and the ranks of a plane in one kernel call each ---------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=elements(), key=st.sampled_from(KEYS), step=st.sampled_from([1, 3, 8]))
def test_sparse_encode_is_the_numpy_flags_classes_order_and_counts(case, key, step):
    width, bu, u = case
    n = len(bu)
    changed = np.full(n, True)
    cls = np.full(n, 0xAA, dtype=np.uint8)
    vals = np.full(n, 0x5A, dtype=bu.dtype)
    info = np.frombuffer(native.kernel.sparse_encode(u, bu, changed, cls, vals, width, key, step), dtype=np.int64)
    want_changed = u != bu
    want_cls = sparse._classes(bu, width) if width > 1 else np.zeros(n, dtype=np.uint8)
    assert np.array_equal(changed, want_changed) and np.array_equal(cls, want_cls)
    idx = np.flatnonzero(want_changed)
    uc, bc = u[idx], bu[idx]
    perm, cuts = _numpy_order(bc, width)
    count = int(info[0])
    assert count == len(idx)
    assert vals[:count].tobytes() == _zigzag(_keys(uc, width, key) - _keys(bc, width, key), width)[perm].tobytes()
    assert sparse._counted_cuts(info[1:257]) == cuts
    assert np.array_equal(info[1:257], np.bincount(want_cls[idx], minlength=256))
    s = want_cls[::step]
    assert np.array_equal(info[257:513], np.bincount(s, minlength=256))
    assert np.array_equal(info[513:769], np.bincount(s[want_changed[::step]], minlength=256))


@settings(max_examples=200, deadline=None)
@given(n=st.one_of(st.integers(0, 40), st.integers(0, 30000)), seed=st.integers(0, 2**32 - 1),
       spread=st.sampled_from([2, 12, 20, 256]))
def test_rank_plane_is_the_numpy_ranks_and_escapes(n, seed, spread):
    rng = np.random.default_rng(seed)
    plane = (rng.integers(0, spread, n) * 7 % 256).astype(np.uint8)
    rank_of = rng.integers(0, 16, 256).astype(np.uint8)
    packed = np.full((n + 1) // 2, 0xAA, dtype=np.uint8)
    esc = np.full(n, 0x55, dtype=np.uint8)
    count = native.kernel.rank_plane(plane, rank_of, packed, esc)
    want = planes._pack_nibbles(plane, planes._nibble_pairs(rank_of))
    assert packed.tobytes() == want.tobytes()
    assert esc[:count].tobytes() == plane.take(planes._escapes_at(want, n)).tobytes()
    with numpy_path():
        numpy_planes = planes._rank_plane(plane, 1)
    assert planes._rank_plane(plane, 1) == numpy_planes


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(["BF16", "F16", "F32", "F64"]), n=st.integers(0, 40000),
       seed=st.integers(0, 2**32 - 1), force=st.booleans())
def test_fgrouped_frames_are_byte_identical_on_both_paths(dtype, n, seed, force):
    """Weights-like elements (a few exponents: the ranked top plane), ranked or not."""
    dt = dtypes.lookup(dtype)
    rng = np.random.default_rng(seed)
    b = (rng.standard_normal(n) * 0.05).astype(np.float64).view(np.uint64)
    w = dt.width
    buf = (b >> np.uint64(64 - 8 * w)).astype(_UINT[w]).view(np.uint8) if w < 8 else b.view(np.uint8)
    g = planes.group(buf, w, rotate=True)
    got = planes._pack_planes(g, w, 1, ranked=(w - 1,), force=force)
    frame = codecs.encode(buf.tobytes(), hash_bytes(buf.tobytes()), width=w, key=dt.key, level=1)
    with numpy_path():
        assert planes._pack_planes(planes.group(buf, w, rotate=True), w, 1, ranked=(w - 1,), force=force) == got
        assert codecs.encode(buf.tobytes(), hash_bytes(buf.tobytes()), width=w, key=dt.key, level=1) == frame
    assert codecs.decode(frame, hash_bytes(buf.tobytes())) == buf.tobytes()


def test_sparse_and_rank_kernels_refuse_wrong_buffers():
    k = native.kernel
    b = np.zeros(8, dtype=np.uint16)
    with pytest.raises(ValueError, match="7 changed flags and 8 classes for 8 elements"):
        k.sparse_encode(b, b.copy(), bytearray(7), bytearray(8), bytearray(16), 2, 2, 8)
    with pytest.raises(ValueError, match="output of 8 bytes for a base of 16"):
        k.sparse_encode(b, b.copy(), bytearray(8), bytearray(8), bytearray(8), 2, 2, 8)
    with pytest.raises(ValueError, match="step 0"):
        k.sparse_encode(b, b.copy(), bytearray(8), bytearray(8), bytearray(16), 2, 2, 0)
    buf = bytearray(32)
    with pytest.raises(ValueError, match="overlaps"):
        k.sparse_encode(b, b.copy(), memoryview(buf)[:8], memoryview(buf)[4:12], bytearray(16), 2, 2, 1)
    with pytest.raises(ValueError, match="rank table of 255 bytes"):
        k.rank_plane(bytes(4), bytes(255), bytearray(2), bytearray(4))
    with pytest.raises(ValueError, match="outputs of 3 and 4 bytes for a plane of 4"):
        k.rank_plane(bytes(4), bytes(256), bytearray(3), bytearray(4))
    with pytest.raises(ValueError, match="overlaps"):
        k.rank_plane(memoryview(buf)[:4], bytes(256), memoryview(buf)[2:4], bytearray(4))
    assert k.rank_plane(b"", bytes(256), bytearray(), bytearray()) == 0
    info = np.frombuffer(k.sparse_encode(b"", b"", bytearray(), bytearray(), bytearray(), 4, 2, 8), dtype=np.int64)
    assert info.sum() == 0 and len(info) == 769


@settings(max_examples=200, deadline=None)
@given(width=st.sampled_from([1, 2, 4, 8]), n=st.one_of(st.integers(0, 40), st.integers(0, 20000)),
       seed=st.integers(0, 2**32 - 1), top=st.sampled_from([4, 16, 40, 1 << 63]), bits=st.sampled_from(sparse.SYMBOL_BITS))
def test_symbols_and_escapes_are_the_numpy_ones(width, n, seed, top, bits):
    rng = np.random.default_rng(seed)
    dt = _UINT[width]
    s = (rng.integers(0, min(top, 1 << (8 * width - 1)), n, dtype=np.uint64) * (rng.random(n) < 0.9)).astype(dt)
    assert native.kernel.symbol_escapes(s, width) == (int((s >= 3).sum()), int((s >= 15).sum()))
    packed, esc = sparse._symbols(s, width, bits)
    with numpy_path():
        want_packed, want_esc = sparse._symbols(s, width, bits)
        want = sparse._pack_values(s, width, 1)
    assert packed.tobytes() == want_packed.tobytes() and esc.tobytes() == want_esc.tobytes()
    assert sparse._pack_values(s, width, 1) == want


def test_symbol_kernels_refuse_wrong_buffers():
    k = native.kernel
    with pytest.raises(ValueError, match="not a whole number of 4-byte"):
        k.symbol_escapes(bytes(6), 4)
    with pytest.raises(ValueError, match="3-bit symbols"):
        k.pack_symbols(bytes(8), 2, 3, bytearray(2), bytearray(8))
    with pytest.raises(ValueError, match="outputs of 2 and 8 bytes for 4 values"):
        k.pack_symbols(bytes(8), 2, 2, bytearray(2), bytearray(8))
    buf = bytearray(16)
    with pytest.raises(ValueError, match="overlaps"):
        k.pack_symbols(memoryview(buf)[:8], 2, 4, memoryview(buf)[6:8], bytearray(8))
    assert k.pack_symbols(b"", 8, 4, bytearray(), bytearray()) == 0
