"""Every codec is a bijection on bits: round trips over all dtypes and special values."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.objects import codecs, dtypes, entropy, planes, sparse
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


def _changed_bits(dtype: str, n: int, seed: int, changed: float, tail: int) -> tuple[bytes, bytes]:
    """(new, base): arbitrary bits, a random fraction of the new bytes changed, and a
    tail shorter than one element."""
    rng = np.random.default_rng(seed)
    base = _bits(dtype, n, seed) + bytes(tail % dtypes.lookup(dtype).width)
    new = np.frombuffer(base, np.uint8).copy()
    moved = rng.random(len(new)) < changed
    new[moved] = rng.integers(0, 256, int(moved.sum()), dtype=np.uint8)
    return new.tobytes(), base


FORCED = [codecs.RAW, codecs.GROUPED, codecs.XOR, codecs.SUB, codecs.SUBS, codecs.SPARSE, codecs.FGROUPED]


def _relabel(frame: bytes | bytearray, version: int) -> bytes:
    """``frame`` labelled with another frame version, its header checksum made valid again."""
    forged = bytearray(frame)
    forged[4] = version
    forged[codecs.HEADER_SIZE - 8:codecs.HEADER_SIZE] = codecs._CHECK.pack(
        codecs.checksum(bytes(forged[: codecs.HEADER_SIZE - 8])))
    return bytes(forged)


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
    data, base = _changed_bits(dtype, n, seed, changed, tail)
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
    # Repeating weights: zstd's matches beat ranks on the exponent plane, so FGROUPED stays v2.
    data = np.tile((np.random.default_rng(8).standard_normal(64) * 0.05).astype(np.float32), 64).tobytes()
    oid = hash_bytes(data)
    v1 = codecs.encode_as(codecs.GROUPED, data, oid, width=4, key=2)
    v2 = codecs.encode_as(codecs.FGROUPED, data, oid, width=4, key=2)
    assert v1[4] == 1 and v2[4] == 2
    forged = _relabel(v2, 1)
    with pytest.raises(CorruptObject, match="unknown codec"):
        codecs.decode(bytes(forged), oid)
    forged = _relabel(forged, 9)
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
    # A writer without the entropy coder makes the version 2 FGROUPED frame; with it the
    # planes of zeros are entropy-coded (smaller than zstd's frames) and the frame is v5.
    saved, entropy.kernel = entropy.kernel, None
    try:
        frame = codecs.encode(z, hash_bytes(z), width=4, key=2, level=3)
    finally:
        entropy.kernel = saved
    assert frame[: codecs.HEADER_SIZE].hex() == GOLDEN_FGROUPED_HEADER
    assert codecs.decode(frame, hash_bytes(z)) == z
    frame = codecs.encode(z, hash_bytes(z), width=4, key=2, level=3)
    assert frame[: codecs.HEADER_SIZE].hex() == GOLDEN_FGROUPED_V5_HEADER
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
GOLDEN_FGROUPED_V5_HEADER = (
    "4352414c05060402000000000010000000000000ba89c648e16fd793ad7facb2586fc6e966c004d7"
    "d1d16b024f5805ff7cb47c7a85dabd8b48892ca70000000000000000000000000000000000000000"
    "00000000000000000000000028f11577a3735836"
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
    """Few changes store the gaps between changed elements, many a bitmap; both exact.
    With the entropy coder the bitmap may win at any density (an entropy-coded bitmap is
    near its entropy); the frame is then no larger."""
    rng = np.random.default_rng(10)
    base = (rng.standard_normal(300000) * 0.05).astype(np.float32)
    new = base.copy()
    moved = np.flatnonzero(rng.random(len(new)) < density)
    new[moved] = np.nextafter(new[moved], np.float32(1))
    new[-1] = -new[-1]  # the last element too: the gaps must reach the end
    data, bb = new.tobytes(), base.tobytes()
    oid = hash_bytes(data)
    saved, entropy.kernel = entropy.kernel, None
    try:
        frame = codecs.encode_as(codecs.SPARSE, data, oid, width=4, key=2, base=codecs.Base(hash_bytes(bb), bb, 0))
    finally:
        entropy.kernel = saved
    mode = sparse._SPARSE.unpack_from(frame, codecs.HEADER_SIZE + 8)[1]
    assert (mode == sparse.POS_GAPS) == (density < 0.1)
    assert codecs.decode(frame, oid, lambda o: bb) == data
    coded = codecs.encode_as(codecs.SPARSE, data, oid, width=4, key=2, base=codecs.Base(hash_bytes(bb), bb, 0))
    assert len(coded) <= len(frame) and codecs.decode(coded, oid, lambda o: bb) == data


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


# -- frame v3: SPARSE positions by exponent groups, packed small differences ---------------

def _exponent_sensitive(n: int, seed: int) -> tuple[bytes, bytes]:
    """(new, base) bf16 like consecutive checkpoints: small weights change often and by
    several ulps, large ones rarely and by one (an update must cross half an ulp)."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(n) * 0.05).astype(ml_dtypes.bfloat16)
    mag = np.abs(base.astype(np.float32))
    p = np.where(mag < 0.01, 0.45, np.where(mag < 0.04, 0.15, 0.03))
    moved = rng.random(n) < p
    step = np.where(rng.random(n) < 0.9, 1, rng.integers(2, 40, n)) * rng.choice([-1, 1], n)
    u = base.view(np.uint16).copy()
    u[moved] = (u[moved].astype(np.int64) + step[moved]).astype(np.uint16)
    return u.tobytes(), base.tobytes()


def _sparse_frame(data: bytes, base: bytes, dtype: str, cuts: list[int] | None) -> bytes:
    """A SPARSE frame as encode_as writes it, its positions layout forced by ``cuts``."""
    dt = dtypes.lookup(dtype)
    planes.rans_used(reset=True)
    payload = sparse._sparse_payload(np.frombuffer(data, np.uint8), np.frombuffer(base, np.uint8),
                                     dt.width, dt.key, 1, cuts)
    payload = codecs._CHECK.pack(codecs.checksum(payload)) + payload
    return codecs._pack(codecs.SPARSE, dt.width, dt.key, 1, len(data), codecs.checksum(data),
                        hash_bytes(data), hash_bytes(base), payload, version=coded_version(3))


def coded_version(layout: int) -> int:
    """The version of a frame whose payload a test just made (after planes.rans_used was
    reset): entropy.SINCE if a stream of it was entropy-coded, else ``layout``."""
    return entropy.SINCE if planes.rans_used(reset=True) else layout


@pytest.fixture
def no_entropy_coder():
    """A writer without the compiled entropy coder: the layouts frame versions 3 and 4
    chose (the coder changes which layout is smallest)."""
    saved, entropy.kernel = entropy.kernel, None
    try:
        yield
    finally:
        entropy.kernel = saved


def _positions_mode(frame: bytes) -> int:
    return sparse._SPARSE.unpack_from(frame, codecs.HEADER_SIZE + 8)[1]


def test_sparse_bitmap_by_exponent_groups_when_changes_depend_on_magnitude(no_entropy_coder):
    """The encoder keeps the grouped bitmap when it is smaller, and it is: the frame beats
    the same delta with its bitmap in element order; bit-exact."""
    data, base = _exponent_sensitive(1 << 18, 1)
    oid = hash_bytes(data)
    frame = codecs.encode_as(codecs.SPARSE, data, oid, width=2, key=dtypes.KEY_FLOAT,
                             base=codecs.Base(hash_bytes(base), base, 0))
    assert frame[4] == 3 and _positions_mode(frame) == sparse.POS_GROUPS
    assert codecs.decode(frame, oid, lambda o: base) == data
    element_order = _sparse_frame(data, base, "BF16", [])
    assert _positions_mode(element_order) in (0, 1, sparse.POS_GAPS)
    assert codecs.decode(element_order, oid, lambda o: base) == data
    assert len(frame) < 0.95 * len(element_order)


def test_small_differences_are_stored_as_packed_symbols(no_entropy_coder):
    """+-1 ulp with a few larger moves: segments of 2- or 4-bit symbols with escapes."""
    data, base = _exponent_sensitive(1 << 16, 2)
    oid = hash_bytes(data)
    for codec in (codecs.SPARSE, codecs.SUBS):
        frame = codecs.encode_as(codec, data, oid, width=2, key=dtypes.KEY_FLOAT,
                                 base=codecs.Base(hash_bytes(base), base, 0))
        kinds = set()
        orig = sparse._unpack_values  # the SUBS / SPARSE layouts live in objects/sparse.py

        def spy(body, *args):
            kinds.add(body[0])
            return orig(body, *args)
        sparse._unpack_values = spy
        try:
            assert codecs.decode(frame, oid, lambda o: base) == data
        finally:
            sparse._unpack_values = orig
        assert kinds & set(sparse.SYMBOL_BITS), (codec, kinds)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.sampled_from([1, 2, 4, 8]), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1),
       small=st.floats(0.0, 1.0), top=st.sampled_from([2, 3, 4, 15, 16, 300, 2**31]))
def test_value_segments_roundtrip(width, n, seed, small, top):
    """Every segment layout (byte planes, 2- and 4-bit symbols with escapes) is exact for
    any mix of small and large values of every width."""
    rng = np.random.default_rng(seed)
    dt = planes._UINT[width]
    big = rng.integers(0, 256, n * width, dtype=np.uint8).view(dt)
    s = np.where(rng.random(n) < small, rng.integers(0, min(top, 2**63), n).astype(dt), big).astype(dt)
    oid = hash_bytes(s.tobytes())
    seg = sparse._pack_values(s, width, 1)
    assert sparse._unpack_values(memoryview(seg), n, width, oid, True).tobytes() == s.tobytes()
    for bits in sparse.SYMBOL_BITS:  # each packing forced, whatever the sizes say
        marker = (1 << bits) - 1
        mode, packed = planes._squeeze(planes._pack_symbols(np.minimum(s, marker).astype(np.uint8), bits), 1)
        forced = bytes((bits,)) + planes._PLANE.pack(mode, len(packed)) + bytes(packed)
        if (s >= marker).any():
            esc = (s[s >= marker] - dt(marker)).view(np.uint8)
            forced += planes._pack_planes(planes.group(esc, width), width, 1)
        assert sparse._unpack_values(memoryview(forced), n, width, oid, True).tobytes() == s.tobytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(["F64", "F32", "F16", "BF16", "I32", "U16", "I64"]), n=st.integers(0, 5000),
       seed=st.integers(0, 2**32 - 1), changed=st.floats(0.0, 1.0), tail=st.integers(0, 7),
       cuts=st.lists(st.integers(0, 255), min_size=1, max_size=sparse.GROUPS_MAX - 1, unique=True))
def test_sparse_with_forced_exponent_groups_roundtrips(dtype, n, seed, changed, tail, cuts):
    """POS_GROUPS forced with arbitrary thresholds (empty groups, one group holding all)
    over arbitrary bits: exact, also through encode's own choice on the same data."""
    data, base = _changed_bits(dtype, n, seed, changed, tail)
    frame = _sparse_frame(data, base, dtype, sorted(cuts))
    assert _positions_mode(frame) == sparse.POS_GROUPS
    assert codecs.decode(frame, hash_bytes(data), lambda o: base) == data
    _roundtrip(data, dtype, base)


def test_golden_v2_frames_still_decode():
    """Frames written by frame format v2 (before SPARSE and SUBS changed layout) decode
    bit-exactly: tests/unit/golden/frames-v2.json.gz, made by make_frames_v2.py."""
    import gzip
    import json
    import os
    with gzip.open(os.path.join(os.path.dirname(__file__), "golden", "frames-v2.json.gz"), "rt") as f:
        recs = json.load(f)
    assert {(r["codec"], r["mode"]) for r in recs} >= {("sparse", sparse.POS_GAPS), ("subs", None)}
    for r in recs:
        base = bytes.fromhex(r["base"])
        data = (np.frombuffer(base, np.uint8) ^ np.frombuffer(bytes.fromhex(r["xor"]), np.uint8)).tobytes()
        frame = bytes.fromhex(r["frame"])
        h = codecs.parse_header(frame, hash_bytes(data))
        assert h.version == 2 and h.codec_name == r["codec"]
        assert codecs.decode(frame, hash_bytes(data), lambda o: base) == data


def test_v3_frames_ask_an_older_reader_to_upgrade(monkeypatch, no_entropy_coder):
    """SPARSE and SUBS frames are version 3: a reader that knows only version 2 (what an
    older coralfs checks) says "upgrade coralfs", not corrupt; the other codecs keep
    their versions; a v3 positions mode in a frame labelled version 2 is corrupt."""
    data, base = _exponent_sensitive(1 << 16, 3)
    oid = hash_bytes(data)
    b = codecs.Base(hash_bytes(base), base, 0)
    frames = {c: codecs.encode_as(c, data, oid, width=2, key=dtypes.KEY_FLOAT, base=b)
              for c in (codecs.SPARSE, codecs.SUBS, codecs.FGROUPED, codecs.SUB)}
    # (FGROUPED of these weights stores its exponent plane as ranks: version 4)
    assert {c: f[4] for c, f in frames.items()} == {codecs.SPARSE: 3, codecs.SUBS: 3, codecs.FGROUPED: 4,
                                                    codecs.SUB: 1}
    sparse_frame = frames[codecs.SPARSE]
    assert _positions_mode(sparse_frame) == sparse.POS_GROUPS
    with monkeypatch.context() as m:
        m.setattr(codecs, "VERSION", 2)
        for c in (codecs.SPARSE, codecs.SUBS):
            with pytest.raises(CorruptObject, match="upgrade coralfs"):
                codecs.decode(frames[c], oid, lambda o: base)
        assert codecs.decode(frames[codecs.SUB], oid, lambda o: base) == data
    forged = _relabel(sparse_frame, 2)
    with pytest.raises(CorruptObject, match="out of range"):
        codecs.decode(bytes(forged), oid, lambda o: base)


def _grouped_frame() -> tuple[bytes, bytes, bytes]:
    data, base = _exponent_sensitive(6000, 4)
    frame = _sparse_frame(data, base, "BF16", [119, 121])
    assert _positions_mode(frame) == sparse.POS_GROUPS
    return frame, data, base


def test_every_flipped_byte_of_a_grouped_sparse_frame_is_detected():
    frame, data, base = _grouped_frame()
    oid = hash_bytes(data)
    assert codecs.decode(frame, oid, lambda o: base) == data
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x10
        with pytest.raises(CorruptObject):
            codecs.decode(bytes(bad), oid, lambda o: base)


def test_truncated_grouped_sparse_frames_are_corrupt():
    """A payload cut anywhere (its checksum made valid again) raises, never decodes."""
    frame, data, base = _grouped_frame()
    oid = hash_bytes(data)
    start = codecs.HEADER_SIZE + 8
    for cut in range(start, len(frame)):
        with pytest.raises(CorruptObject):
            codecs.decode(_reseal(bytearray(frame[:cut])), oid, lambda o: base)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.one_of(st.integers(0, 120), st.integers(0, 10**6)), st.integers(0, 255)),
                      min_size=1, max_size=4),
       codec=st.sampled_from([codecs.SPARSE, codecs.SUBS]))
def test_malformed_v3_payloads_are_named_corrupt(edits, codec):
    """Structurally wrong v3 payloads (group counts and thresholds, group sizes, segment
    kinds, packed symbol lengths, escapes) with a valid checksum raise CorruptObject, never
    another exception, and never return wrong bytes."""
    frame, data, base = _grouped_frame()
    if codec == codecs.SUBS:
        frame = codecs.encode_as(codecs.SUBS, data, hash_bytes(data), width=2, key=dtypes.KEY_FLOAT,
                                 base=codecs.Base(hash_bytes(base), base, 0))
    frame = bytearray(frame)
    start = codecs.HEADER_SIZE + 8
    for pos, val in edits:
        frame[start + pos % (len(frame) - start)] = val
    try:
        out = codecs.decode(_reseal(frame), hash_bytes(data), lambda o: base)
    except CorruptObject:
        return
    assert out == data


def test_golden_fgrouped_v2_frames_still_decode():
    """FGROUPED keyframes written before the exponent plane could be stored as ranks
    (frame version 2) decode bit-exactly: tests/unit/golden/frames-fgrouped-v2.json.gz,
    made by make_frames_fgrouped.py."""
    import gzip
    import json
    import os
    with gzip.open(os.path.join(os.path.dirname(__file__), "golden", "frames-fgrouped-v2.json.gz"), "rt") as f:
        recs = json.load(f)
    assert {r["dtype"] for r in recs} == {"BF16", "F32", "F16", "F64"}
    for r in recs:
        data, frame = bytes.fromhex(r["data"]), bytes.fromhex(r["frame"])
        h = codecs.parse_header(frame, hash_bytes(data))
        assert h.version == 2 and h.codec == codecs.FGROUPED
        assert codecs.decode(frame, hash_bytes(data)) == data


# -- frame v4: FGROUPED planes as ranks -------------------------------------------------------

FLOATS = ["F64", "F32", "F16", "BF16"]


def _ranked_frame(data: bytes, dtype: str, ranked: tuple[int, ...] | None = None) -> bytes:
    """An FGROUPED frame as encode_as writes it, the planes numbered in ``ranked`` (all by
    default) forced to ranks whatever the sizes say."""
    dt = dtypes.lookup(dtype)
    g = planes.group(planes._rotate(np.frombuffer(data, np.uint8), dt.width), dt.width)
    planes.rans_used(reset=True)
    payload = planes._pack_planes(g, dt.width, 1, ranked=tuple(range(dt.width)) if ranked is None else ranked,
                                  force=True)
    payload = codecs._CHECK.pack(codecs.checksum(payload)) + payload
    return codecs._pack(codecs.FGROUPED, dt.width, dt.key, 0, len(data), codecs.checksum(data),
                        hash_bytes(data), None, payload, version=coded_version(codecs.RANKS_SINCE))


def _float_values(dtype: str, n: int, seed: int, kind: str, tail: int) -> bytes:
    """Float elements of one kind: arbitrary bits (any number of distinct exponents), one
    value, a few exponents, weights, or weights with NaN payloads and infinities."""
    dt = dtypes.lookup(dtype)
    rng = np.random.default_rng(seed)
    if kind == "bits":
        a = np.frombuffer(_bits(dtype, n, seed), dt.numpy)
    elif kind == "same":
        a = np.full(n, rng.standard_normal(), dtype=dt.numpy)
    elif kind == "few":
        a = rng.choice(np.array([0.5, -0.25, 3.0, 1e-3], dtype=dt.numpy), n)
    else:
        a = (rng.standard_normal(n) * 0.05).astype(dt.numpy)
    if kind == "special" and n:
        u = a.view(planes._UINT[dt.width]).copy()
        sp = np.array(SPECIALS.get(dtype, [np.nan, np.inf, -np.inf, 0.0, -0.0]), dtype=dt.numpy)
        u[rng.integers(0, n, min(n, 40))] = rng.choice(sp.view(planes._UINT[dt.width]), min(n, 40))
        u[:: max(1, n // 7)] = np.iinfo(planes._UINT[dt.width]).max  # NaNs with every payload bit set
        a = u.view(dt.numpy)
    return a.tobytes() + bytes(range(tail % dt.width))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(FLOATS), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["bits", "same", "few", "weights", "special"]), tail=st.integers(0, 7))
def test_fgrouped_ranked_planes_roundtrip(dtype, n, seed, kind, tail):
    """Every plane forced to ranks (over 15 distinct values, one value, tiny chunks, NaN
    and infinity payloads, tails): exact; and encode's own choice on the same data too."""
    data = _float_values(dtype, n, seed, kind, tail)
    frame = _ranked_frame(data, dtype)
    oid = hash_bytes(data)
    if len(data) >= dtypes.lookup(dtype).width:
        assert set(planes._plane_modes(memoryview(frame)[codecs.HEADER_SIZE + 8:], dtypes.lookup(dtype).width)) == {
            planes.PLANE_RANKS}
    assert codecs.decode(frame, oid) == data
    dt = dtypes.lookup(dtype)
    chosen = codecs.encode_as(codecs.FGROUPED, data, oid, width=dt.width, key=dt.key, level=1)
    assert codecs.decode(chosen, oid) == data
    _roundtrip(data, dtype, None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 5000), seed=st.integers(0, 2**32 - 1), distinct=st.integers(1, 256))
def test_packed_ranks_are_packed_symbols(n, seed, distinct):
    """The rank packing and _pack_symbols write the layout (symbols two or four to a
    byte, the first in the low bits, missing ones 0), and the escapes are found where
    rank 15 is, odd lengths included."""
    rng = np.random.default_rng(seed)
    plane = rng.integers(0, distinct, n).astype(np.uint8)
    rank_of = rng.integers(0, 16, 256).astype(np.uint8)

    def layout(sym, bits):
        per = 8 // bits
        t = np.zeros(-(-len(sym) // per) * per, dtype=np.uint8)
        t[:len(sym)] = sym
        return sum(t[j::per] << np.uint8(bits * j) for j in range(per)).astype(np.uint8).tobytes()

    packed = planes._pack_nibbles(plane, planes._nibble_pairs(rank_of))
    assert packed.tobytes() == planes._pack_symbols(rank_of[plane], 4).tobytes() == layout(rank_of[plane], 4)
    assert planes._unpack_symbols(packed.tobytes(), 4, n).tolist() == rank_of[plane].tolist()
    two = rank_of[plane] & np.uint8(3)
    assert planes._pack_symbols(two, 2).tobytes() == layout(two, 2)
    assert planes._escapes_at(packed, n).tolist() == np.flatnonzero(rank_of[plane] == planes.RANKS).tolist()


@pytest.mark.parametrize("dtype", ["BF16", "F32"])
def test_keyframe_exponent_plane_stored_as_ranks_where_smaller(dtype, no_entropy_coder):
    """Weights: the exponent plane as ranks, smaller than zstd's plane, frame version 4;
    arbitrary bits: zstd (or stored) planes, frame version 2."""
    dt = dtypes.lookup(dtype)
    data = (np.random.default_rng(12).standard_normal(1 << 20) * 0.05).astype(dt.numpy).tobytes()
    oid = hash_bytes(data)
    frame = codecs.encode(data, oid, width=dt.width, key=dt.key, level=1)
    h = codecs.parse_header(frame, oid)
    assert h.codec == codecs.FGROUPED and h.version == codecs.RANKS_SINCE == 4
    modes = planes._plane_modes(memoryview(frame)[codecs.HEADER_SIZE + 8:], dt.width)
    assert modes[-1] == planes.PLANE_RANKS and planes.PLANE_RANKS not in modes[:-1]
    assert codecs.decode(frame, oid) == data
    g = planes.group(planes._rotate(np.frombuffer(data, np.uint8), dt.width), dt.width)
    plain = planes._pack_planes(g, dt.width, 1)
    assert len(frame) - codecs.HEADER_SIZE - 8 < 0.99 * len(plain)
    mixed = _float_values(dtype, 3000, 5, "bits", 0) + (np.zeros(3000, dt.numpy)).tobytes()
    h = codecs.parse_header(codecs.encode(mixed, hash_bytes(mixed), width=dt.width, key=dt.key), hash_bytes(mixed))
    assert h.codec == codecs.FGROUPED and h.version == 2


def test_ranked_frames_ask_an_older_reader_to_upgrade(monkeypatch, no_entropy_coder):
    """A ranked FGROUPED frame is version 4: a reader of versions up to 3 says "upgrade
    coralfs"; the ranks mode in a frame labelled version 2 (or in a SPARSE / SUBS plane)
    is corrupt."""
    data = _float_values("BF16", 5000, 3, "weights", 0)
    oid = hash_bytes(data)
    frame = _ranked_frame(data, "BF16", (1,))
    assert frame[4] == 4 and codecs.decode(frame, oid) == data
    with monkeypatch.context() as m:
        m.setattr(codecs, "VERSION", 3)
        with pytest.raises(CorruptObject, match="upgrade coralfs"):
            codecs.decode(frame, oid)
    forged = _relabel(frame, 2)
    with pytest.raises(CorruptObject, match="out of range"):
        codecs.decode(bytes(forged), oid)
    assert len(codecs.transformed(frame, oid)) == 3  # a plane, then the ranks and their escapes
    with pytest.raises(CorruptObject, match="byte plane out of range"):
        codecs.transformed(forged, oid)  # the benchmarks' reader refuses it too
    g = planes.group(np.frombuffer(data, np.uint8), 2)
    with pytest.raises(CorruptObject, match="out of range"):
        planes._unpack_planes(memoryview(planes._pack_planes(g, 2, 1, ranked=(1,), force=True)), len(data), 2, oid, rans=True)


def _ranked_weights_frame() -> tuple[bytes, bytes]:
    data = _float_values("BF16", 3000, 7, "special", 1)
    rng = np.random.default_rng(7)
    u = np.frombuffer(data[:-1], np.uint16).copy()
    u[rng.integers(0, len(u), 30)] = rng.integers(0, 1 << 16, 30).astype(np.uint16)  # escapes
    data = u.tobytes() + data[-1:]
    frame = _ranked_frame(data, "BF16")
    assert codecs.decode(frame, hash_bytes(data)) == data
    return frame, data


def test_every_flipped_byte_of_a_ranked_frame_is_detected():
    frame, data = _ranked_weights_frame()
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x10
        with pytest.raises(CorruptObject):
            codecs.decode(bytes(bad), hash_bytes(data))


def test_truncated_ranked_frames_are_corrupt():
    frame, data = _ranked_weights_frame()
    for cut in range(codecs.HEADER_SIZE + 8, len(frame)):
        with pytest.raises(CorruptObject):
            codecs.decode(_reseal(bytearray(frame[:cut])), hash_bytes(data))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.one_of(st.integers(0, 60), st.integers(0, 10**6)), st.integers(0, 255)),
                      min_size=1, max_size=4))
def test_malformed_ranked_payloads_are_named_corrupt(edits):
    """Structurally wrong ranked planes (ranked value counts, escape counts, stream modes
    and lengths, packed ranks) with a valid checksum raise CorruptObject, never another
    exception, and never return wrong bytes."""
    frame, data = _ranked_weights_frame()
    frame = bytearray(frame)
    start = codecs.HEADER_SIZE + 8
    for pos, val in edits:
        frame[start + pos % (len(frame) - start)] = val
    try:
        out = codecs.decode(_reseal(frame), hash_bytes(data))
    except CorruptObject:
        return
    assert out == data


def test_a_ranked_plane_past_the_scratch_bound_is_not_kept_by_the_thread(monkeypatch):
    data = _float_values("BF16", 1 << 14, 3, "weights", 0)
    frame = _ranked_frame(data, "BF16", (1,))
    monkeypatch.setattr(planes, "SCRATCH_KEEP", 1 << 10)
    monkeypatch.delattr(planes._local, "scratch", raising=False)
    assert codecs.decode(frame, hash_bytes(data)) == data
    assert getattr(planes._local, "scratch", None) is None
    small = _float_values("BF16", 1000, 4, "weights", 0)
    assert codecs.decode(_ranked_frame(small, "BF16", (1,)), hash_bytes(small)) == small
    assert len(planes._local.scratch) >= 250
