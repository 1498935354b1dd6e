"""Every codec is a bijection on bits: round trips over all dtypes and special values."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.objects import codecs, dtypes
from coralfs.objects.errors import CorruptObject
from coralfs.objects.ids import hash_bytes

ALL = ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8",
       "U64", "U32", "U16", "U8", "BOOL", "C64", "B3"]

SPECIALS = {
    "F64": [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308],
    "F32": [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1.17549435e-38],
}


def _bits(dtype: str, n: int, seed: int) -> bytes:
    """Arbitrary bit patterns: every pattern is a valid value of some kind (NaNs with
    payloads, subnormals, infinities, negative zero)."""
    w = dtypes.lookup(dtype).width
    return np.random.default_rng(seed).integers(0, 256, n * w, dtype=np.uint8).tobytes()


def _roundtrip(data: bytes, dtype: str, base: bytes | None):
    dt = dtypes.lookup(dtype)
    oid = hash_bytes(data)
    b = codecs.Base(hash_bytes(base), base, 0) if base is not None else None
    frame = codecs.encode(data, oid, width=dt.width, key=dt.key, base=b)
    out = codecs.decode(frame, oid, lambda o: base)
    assert out == data
    return codecs.parse_header(frame, oid)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(ALL), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1),
       mode=st.sampled_from(["none", "related", "unrelated", "same"]))
def test_roundtrip_any_bits_any_dtype(dtype, n, seed, mode):
    data = _bits(dtype, n, seed)
    if mode == "none":
        base = None
    elif mode == "unrelated":
        base = _bits(dtype, n, seed + 1)
    elif mode == "same":
        base = data
    else:
        arr = bytearray(data)
        for i in range(0, len(arr), 7):
            arr[i] ^= 1
        base = bytes(arr)
    _roundtrip(data, dtype, base)


FORCED = [codecs.RAW, codecs.GROUPED, codecs.XOR, codecs.SUB, codecs.SUBS, codecs.SPARSE, codecs.FGROUPED]


def _forceable(codec: int, dtype: str) -> bool:
    dt = dtypes.lookup(dtype)
    if codec in (codecs.SUB, codecs.SUBS, codecs.SPARSE):
        return dt.width in (1, 2, 4, 8)
    if codec == codecs.FGROUPED:
        return dt.key == dtypes.KEY_FLOAT and dt.width in (2, 4, 8)
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(ALL), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1),
       codec=st.sampled_from(FORCED), changed=st.floats(0.0, 1.0), tail=st.integers(0, 7))
def test_every_codec_forced_roundtrips(dtype, n, seed, codec, changed, tail):
    """Each codec, not only the one the estimate picks, over arbitrary bits: a base with a
    random fraction of its elements changed, and lengths that are not whole elements."""
    dt = dtypes.lookup(dtype)
    if not _forceable(codec, dtype):
        return
    rng = np.random.default_rng(seed)
    base = _bits(dtype, n, seed) + bytes(tail % dt.width)
    new = np.frombuffer(base, np.uint8).copy()
    moved = rng.random(len(new)) < changed
    new[moved] = rng.integers(0, 256, int(moved.sum()), dtype=np.uint8)
    data = new.tobytes()
    oid = hash_bytes(data)
    b = codecs.Base(hash_bytes(base), base, 0)
    frame = codecs.encode_as(codec, data, oid, width=dt.width, key=dt.key, base=b, level=1)
    assert codecs.decode(frame, oid, lambda o: base) == data


@pytest.mark.parametrize("codec", [codecs.SPARSE, codecs.SUBS, codecs.FGROUPED])
@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16"])
def test_v2_codecs_keep_special_values(dtype, codec):
    """NaN payloads, infinities, signed zeros and subnormals through the frame v2 codecs."""
    dt = dtypes.lookup(dtype)
    vals = np.array(SPECIALS.get(dtype, [np.nan, np.inf, -np.inf, 0.0, -0.0]), dtype=dt.numpy)
    rng = np.random.default_rng(5)
    base = (rng.standard_normal(70000) * 0.05).astype(dt.numpy)
    new = base.copy()
    new[rng.integers(0, len(new), 500)] *= 1.5
    new[: len(vals)] = vals
    new.view(np.uint8)[-dt.width:] = 0xFF  # a NaN with every payload bit set
    data = new.tobytes()
    oid = hash_bytes(data)
    frame = codecs.encode_as(codec, data, oid, width=dt.width, key=dt.key, level=1,
                             base=codecs.Base(hash_bytes(base.tobytes()), base.tobytes(), 0))
    assert codecs.parse_header(frame, oid).codec == codec
    assert codecs.decode(frame, oid, lambda o: base.tobytes()) == data


def test_sparse_is_chosen_when_few_elements_change():
    import ml_dtypes
    rng = np.random.default_rng(6)
    a = (rng.standard_normal(1 << 19) * 0.05).astype(ml_dtypes.bfloat16)
    u = a.view(np.uint16).copy()
    moved = rng.random(len(u)) < 0.05
    u[moved] += 1
    h = _roundtrip(u.tobytes(), "BF16", a.tobytes())
    assert h.codec == codecs.SPARSE and h.base is not None


def test_frames_name_the_lowest_version_that_knows_their_codec():
    """Frames of the v1 codecs stay version 1 (older coralfs reads them); a v2 codec in a
    version 1 frame is refused as corrupt, and a version newer than this code says to upgrade."""
    data = (np.random.default_rng(8).standard_normal(4096) * 0.05).astype(np.float32).tobytes()
    oid = hash_bytes(data)
    v1 = codecs.encode_as(codecs.GROUPED, data, oid, width=4, key=2)
    v2 = codecs.encode_as(codecs.FGROUPED, data, oid, width=4, key=2)
    assert v1[4] == 1 and v2[4] == 2
    forged = bytearray(v2)
    forged[4] = 1
    forged[codecs.HEADER_SIZE - 8:codecs.HEADER_SIZE] = codecs._CHECK.pack(
        codecs.checksum(bytes(forged[: codecs.HEADER_SIZE - 8])))
    with pytest.raises(CorruptObject, match="unknown codec"):
        codecs.decode(bytes(forged), oid)
    forged[4] = 9
    forged[codecs.HEADER_SIZE - 8:codecs.HEADER_SIZE] = codecs._CHECK.pack(
        codecs.checksum(bytes(forged[: codecs.HEADER_SIZE - 8])))
    with pytest.raises(CorruptObject, match="upgrade coralfs"):
        codecs.decode(bytes(forged), oid)


@pytest.mark.parametrize("codec", [codecs.XOR, codecs.SUB])
@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I8", "U16", "BOOL"])
def test_each_delta_codec_exact(dtype, codec):
    """Force each delta codec (not just the one the estimate picks) over special values."""
    dt = dtypes.lookup(dtype)
    rng = np.random.default_rng(7)
    base = _bits(dtype, 5000, 1)
    new = bytearray(base)
    for i in rng.integers(0, len(new), 2000):
        new[i] = rng.integers(0, 256)
    if dtype in SPECIALS:
        sp = np.array(SPECIALS[dtype], dtype=dt.numpy).tobytes()
        new[: len(sp)] = sp
    nb, bb = np.frombuffer(bytes(new), np.uint8), np.frombuffer(base, np.uint8)
    delta = codecs._delta(codec, nb, bb, dt.width, dt.key)
    assert codecs._undelta(codec, delta, bb, dt.width, dt.key).tobytes() == bytes(new)


def test_nan_payloads_and_signed_zero_survive():
    vals = np.array([0x7FC00001, 0xFFC0ABCD, 0x7F800001, 0x80000000, 0x00000001, 0x7F800000],
                    dtype=np.uint32)
    base = np.array([0x7FC00000, 0x7FC0ABCD, 0x3F800000, 0x00000000, 0x80000001, 0xFF800000],
                    dtype=np.uint32)
    h = _roundtrip(vals.tobytes(), "F32", base.tobytes())
    assert h.decoded_len == 24


def test_bf16_and_fp8_tensors():
    rng = np.random.default_rng(0)
    for dt in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        a = rng.standard_normal(10000).astype(dt)
        b = (a.astype(np.float32) + rng.standard_normal(10000).astype(np.float32) * 0.01).astype(dt)
        name = dtypes.from_numpy(np.dtype(dt)).name
        _roundtrip(b.tobytes(), name, a.tobytes())


def test_zero_d_and_empty():
    _roundtrip(np.float32(3.5).tobytes(), "F32", None)
    _roundtrip(b"", "F32", None)
    _roundtrip(np.float64(-0.0).tobytes(), "F64", np.float64(0.0).tobytes())


def test_related_tensor_becomes_a_small_delta():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(1 << 18) * 0.05).astype(np.float32)
    b = (a + rng.standard_normal(a.shape).astype(np.float32) * 1e-5).astype(np.float32)
    h = _roundtrip(b.tobytes(), "F32", a.tobytes())
    assert h.codec in codecs.DELTA_CODECS


def test_unrelated_base_is_refused():
    rng = np.random.default_rng(2)
    a = (rng.standard_normal(1 << 17) * 0.05).astype(np.float32)
    b = (rng.standard_normal(1 << 17) * 0.05).astype(np.float32)
    h = _roundtrip(b.tobytes(), "F32", a.tobytes())
    # A keyframe (byte-grouped; for floats since frame v2 the sign-rotated FGROUPED).
    assert h.codec in (codecs.GROUPED, codecs.FGROUPED) and h.base is None


def test_incompressible_is_stored_raw():
    data = np.random.default_rng(3).integers(0, 256, 100000, dtype=np.uint8).tobytes()
    assert _roundtrip(data, "U8", None).codec == codecs.RAW


def test_every_flipped_byte_is_detected():
    rng = np.random.default_rng(4)
    base = (rng.standard_normal(4096) * 0.05).astype(np.float32).tobytes()
    data = (np.frombuffer(base, np.float32) * 1.001).astype(np.float32).tobytes()
    oid = hash_bytes(data)
    frame = codecs.encode(data, oid, width=4, key=2, base=codecs.Base(hash_bytes(base), base, 0))
    step = max(1, len(frame) // 400)
    for i in list(range(codecs.HEADER_SIZE)) + list(range(codecs.HEADER_SIZE, len(frame), step)):
        bad = bytearray(frame)
        bad[i] ^= 0x10
        with pytest.raises(CorruptObject) as e:
            codecs.decode(bytes(bad), oid, lambda o: base)
        assert oid.hex() in str(e.value)


def test_golden_frame_bytes():
    """The frame format is pinned: a change here breaks every existing repository."""
    data = np.arange(8, dtype=np.float32).tobytes()
    oid = hash_bytes(data)
    frame = codecs.encode(data, oid, width=4, key=2, level=3)
    assert frame.hex() == GOLDEN_RAW_FRAME
    # Compressed payloads may differ across zstd versions; the header is pinned.
    z = np.zeros(1024, dtype=np.float32).tobytes()
    # encode picks FGROUPED for floats since frame v2: the v1 GROUPED frame is forced.
    frame = codecs.encode_as(codecs.GROUPED, z, hash_bytes(z), width=4, key=2, level=3)
    assert frame[: codecs.HEADER_SIZE].hex() == GOLDEN_GROUPED_HEADER
    assert codecs.decode(frame, hash_bytes(z)) == z
    frame = codecs.encode(z, hash_bytes(z), width=4, key=2, level=3)
    assert frame[: codecs.HEADER_SIZE].hex() == GOLDEN_FGROUPED_HEADER
    assert codecs.decode(frame, hash_bytes(z)) == z


GOLDEN_RAW_FRAME = (
    "4352414c0100040200000000200000000000000032a7ceb805fa4d7e0571cfe42be5c7b95de9afc7"
    "c7ba1286fb7a2ef10a9035f8d6b87d21a3bc83870000000000000000000000000000000000000000"
    "00000000000000000000000021c53a05c008b80e000000000000803f000000400000404000008040"
    "0000a0400000c0400000e040"
)
GOLDEN_GROUPED_HEADER = (
    "4352414c01020402000000000010000000000000ba89c648e16fd793ad7facb2586fc6e966c004d7"
    "d1d16b024f5805ff7cb47c7a85dabd8b48892ca70000000000000000000000000000000000000000"
    "000000000000000000000000994c713888724aad"
)
GOLDEN_FGROUPED_HEADER = (
    "4352414c02060402000000000010000000000000ba89c648e16fd793ad7facb2586fc6e966c004d7"
    "d1d16b024f5805ff7cb47c7a85dabd8b48892ca70000000000000000000000000000000000000000"
    "000000000000000000000000603998eab232a967"
)


@pytest.mark.parametrize("codec", [codecs.SPARSE, codecs.SUBS, codecs.FGROUPED])
def test_every_flipped_byte_of_a_v2_frame_is_detected(codec):
    """Every byte, not a sample: v2 payloads hold many small zstd frames whose reserved
    header bits zstd ignores; the payload checksum catches those too."""
    rng = np.random.default_rng(9)
    base = (rng.standard_normal(3000) * 0.05).astype(np.float32)
    new = base.copy()
    new[rng.integers(0, 3000, 300)] *= np.float32(1.01)
    data, bb = new.tobytes(), base.tobytes()
    oid = hash_bytes(data)
    frame = codecs.encode_as(codec, data, oid, width=4, key=2, base=codecs.Base(hash_bytes(bb), bb, 0))
    assert codecs.parse_header(frame, oid).codec == codec
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x10
        with pytest.raises(CorruptObject):
            codecs.decode(bytes(bad), oid, lambda o: bb)


@pytest.mark.parametrize("density", [0.0005, 0.01, 0.3])
def test_sparse_positions_as_gaps_or_bitmap(density):
    """Few changes store the gaps between changed elements, many a bitmap; both exact."""
    rng = np.random.default_rng(10)
    base = (rng.standard_normal(300000) * 0.05).astype(np.float32)
    new = base.copy()
    moved = np.flatnonzero(rng.random(len(new)) < density)
    new[moved] = np.nextafter(new[moved], np.float32(1))
    new[-1] = -new[-1]  # the last element too: the gaps must reach the end
    data, bb = new.tobytes(), base.tobytes()
    oid = hash_bytes(data)
    frame = codecs.encode_as(codecs.SPARSE, data, oid, width=4, key=2, base=codecs.Base(hash_bytes(bb), bb, 0))
    mode = codecs._SPARSE.unpack_from(frame, codecs.HEADER_SIZE + 8)[1]
    assert (mode == codecs.POS_GAPS) == (density < 0.1)
    assert codecs.decode(frame, oid, lambda o: bb) == data


def _reseal(frame: bytearray) -> bytes:
    """A v2 frame whose payload was altered, with its payload checksum made valid again
    (what a buggy writer, not a flipped bit, would produce)."""
    body = bytes(frame[codecs.HEADER_SIZE + 8:])
    frame[codecs.HEADER_SIZE:codecs.HEADER_SIZE + 8] = codecs._CHECK.pack(codecs.checksum(body))
    return bytes(frame)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codec=st.sampled_from([codecs.SPARSE, codecs.SUBS, codecs.FGROUPED]),
       density=st.sampled_from([0.001, 0.05, 0.5]), edits=st.lists(
           # mostly the structure at the front (counts, modes, sizes), sometimes anywhere
           st.tuples(st.one_of(st.integers(0, 40), st.integers(0, 10**6)), st.integers(0, 255)),
           min_size=1, max_size=4))
def test_malformed_v2_payloads_are_named_corrupt(codec, density, edits):
    """Structurally wrong payloads (counts, sizes, modes, gaps) with a valid checksum raise
    CorruptObject, never another exception, and never return wrong bytes."""
    rng = np.random.default_rng(11)
    base = (rng.standard_normal(40000) * 0.05).astype(np.float32)
    new = base.copy()
    moved = rng.random(len(new)) < density
    new[moved] = np.nextafter(new[moved], np.float32(1))
    data, bb = new.tobytes(), base.tobytes()
    oid = hash_bytes(data)
    frame = bytearray(codecs.encode_as(codec, data, oid, width=4, key=2, base=codecs.Base(hash_bytes(bb), bb, 0)))
    start = codecs.HEADER_SIZE + 8
    for pos, val in edits:
        frame[start + pos % (len(frame) - start)] = val
    try:
        out = codecs.decode(_reseal(frame), oid, lambda o: bb)
    except CorruptObject:
        return
    assert out == data
