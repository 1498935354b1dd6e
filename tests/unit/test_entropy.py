"""The order-0 rANS stage (coralfs/objects/_entropy.c, coralfs/objects/entropy.py, frame
version 5): the compiled coder is built; its streams round-trip for every length and
distribution and decode to the same bytes in the numpy fallback; a damaged stream is
refused on both paths; frames use it only where it wins, are version 5 only then, and
decode with and without the compiled code; a version 4 frame holding such a stream is
corrupt."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.objects import codecs, dtypes, entropy, native, planes, sparse
from coralfs.objects.errors import CorruptObject
from coralfs.objects.ids import hash_bytes

BF16 = dtypes.lookup("BF16")


@contextlib.contextmanager
def without(*modules):
    """The modules' compiled kernels off, as on a machine where they are not built."""
    saved = [m.kernel for m in modules]
    for m in modules:
        m.kernel = None
    try:
        yield
    finally:
        for m, k in zip(modules, saved):
            m.kernel = k


def _roundtrip(src: bytes) -> bytes:
    enc = entropy.kernel.encode(src, 2 * len(src) + 4096)
    assert enc is not None
    assert entropy.kernel.decode(enc, len(src)) == src
    assert entropy._decode_numpy(memoryview(enc), len(src)) == src
    return enc


def _entropy_bytes(src: bytes) -> float:
    c = np.bincount(np.frombuffer(src, np.uint8), minlength=256)
    p = c[c > 0] / len(src)
    return float(-(c[c > 0] * np.log2(p)).sum() / 8)


def test_the_coder_is_built_and_used():
    """scripts/setup builds it in place (CI runs that on a clean clone)."""
    from coralfs.objects import _entropy
    assert entropy.kernel is _entropy


def test_coralfs_native_0_selects_the_numpy_decoder():
    code = "from coralfs.objects import entropy; print(entropy.kernel is None)"
    env = {**os.environ, "CORALFS_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.one_of(st.integers(1, 40), st.integers(1, 4200), st.integers(1, 70000),
                   st.sampled_from([4095, 4096, 65535, 65536, 65537, 262144 + 3])),
       k=st.integers(1, 256), skew=st.floats(0.0, 3.0), seed=st.integers(0, 2**32 - 1))
def test_streams_round_trip_on_both_paths(n, k, skew, seed):
    """Any length (the narrow coder under 4,096 bytes, tails shorter than a group of
    lanes, one lane to eight), any number of symbols (listed, as a map, all 256), flat
    to very skewed."""
    rng = np.random.default_rng(seed)
    alphabet = rng.choice(256, size=k, replace=False).astype(np.uint8)
    w = np.exp(-skew * np.arange(k))
    src = rng.choice(alphabet, size=n, p=w / w.sum()).tobytes()
    _roundtrip(src)


def test_one_symbol_and_every_symbol():
    for src in (b"\x07" * 100000, b"\x00", bytes(range(256)) * 300, b"\xff" * 64):
        _roundtrip(src)


def test_within_a_fraction_of_a_percent_of_the_order0_entropy():
    """The point of the stage: on a skewed stream (a sparse bitmap, the high bytes of
    small differences) the coded size is the order-0 entropy plus a small header;
    zstd's Huffman stage is well over it."""
    rng = np.random.default_rng(5)
    bitmap = np.packbits(rng.random(8 << 20) < 0.01, bitorder="little").tobytes()
    diffs = np.minimum(rng.geometric(0.6, 1 << 20), 255).astype(np.uint8).tobytes()
    for src in (bitmap, diffs):
        enc = _roundtrip(src)
        h = _entropy_bytes(src)
        assert len(enc) < h * 1.003 + 200
        assert len(planes._compressor(3).compress(src)) > h * 1.03


def test_a_small_streams_table_costs_a_few_bytes():
    """A delta frame holds many streams of a few hundred bytes (the bitmap of a small
    tensor, its packed differences): their frequency table is gamma codes at the scale
    (down to 2^4) that makes table and body smallest, and they use the narrow coder (a
    4-byte state, bytes of renormalization), so such a stream costs its order-0 entropy
    plus 2 bytes, the state and about a byte a symbol of table (the first version 5
    coder: 2-3 bytes a symbol, 3 more, an 8-byte state and words)."""
    rng = np.random.default_rng(9)
    for n, share in ((48, 0.01), (100, 0.02), (300, 0.01), (1000, 0.05), (4000, 0.003)):
        src = np.packbits(rng.random(8 * n) < share, bitorder="little").tobytes()
        enc = _roundtrip(src)
        k = len(set(src))
        assert len(enc) <= _entropy_bytes(src) + 8 + k, (n, k, len(enc))
    for k in (3, 40, 200, 256):  # small and large alphabets, listed or as a presence map
        src = rng.integers(0, k, 3000, dtype=np.uint8).tobytes() + bytes([255]) * (k == 256)
        enc = _roundtrip(src)
        assert len(enc) <= _entropy_bytes(src) + 8 + 0.8 * k, (k, len(enc))


def test_encode_declines_what_it_cannot_win():
    rng = np.random.default_rng(1)
    flat = rng.integers(0, 256, 100000, dtype=np.uint8).tobytes()
    assert entropy.kernel.encode(flat, len(flat)) is None  # near-random: no saving
    skewed = (rng.random(100000) < 0.02).astype(np.uint8).tobytes()
    enc = entropy.kernel.encode(skewed, 100000)
    assert enc is not None and entropy.kernel.encode(skewed, len(enc)) is None  # the limit is strict
    assert entropy.kernel.encode(b"", 10) is None
    assert entropy.encode(skewed[:entropy.MIN_STREAM - 1], 10**6) is None  # too short to try
    assert len(entropy.encode(skewed, 100000)) <= entropy.WIN * 100000


def _damaged(enc: bytes) -> list[tuple[str, bytes]]:
    head = entropy._header(memoryview(enc))[3]
    out = [("truncated", enc[:-4]), ("extra word", enc + b"\0\0\0\0"), ("odd tail", enc + b"\0"),
           ("scale 17", bytes((enc[0] & 0xF0 | 13,)) + enc[1:]), ("high bit", bytes((enc[0] | 0x80,)) + enc[1:]),
           ("narrow", bytes((enc[0] ^ 0x40,)) + enc[1:]),
           ("header only", enc[:head]), ("one byte", enc[:1]), ("empty", b"")]
    state = bytearray(enc)
    state[-5] ^= 0x10  # a bit in the last renormalization word
    out.append(("flipped word", bytes(state)))
    return out


def test_damaged_streams_are_refused_on_both_paths():
    rng = np.random.default_rng(2)
    src = (rng.random(200000) < 0.05).astype(np.uint8).tobytes()
    enc = _roundtrip(src)
    scale, lanes, f, head = entropy._header(memoryview(enc))
    assert (enc[1] + 1, lanes, head) == (2, 4, 4)  # two symbols, four lanes, a 4-byte header
    assert f.sum() == 1 << scale and f[0] > f[1] > 0
    cases = _damaged(enc)
    # The symbols' distances, the implied frequency's index, a frequency, the padding.
    cases += [(f"table bit {b}", enc[:2] + (int.from_bytes(enc[2:head], "little") ^ 1 << b).to_bytes(head - 2, "little")
               + enc[head:]) for b in range(8 * (head - 2))]
    for _what, bad in cases:
        for decoder in (lambda b: entropy.kernel.decode(b, len(src)), lambda b: entropy._decode_numpy(memoryview(b), len(src))):
            with pytest.raises(ValueError):
                decoder(bad)
    for wrong in (len(src) - 1, len(src) + 1, 0):
        with pytest.raises(ValueError):
            entropy.kernel.decode(enc, wrong)
        with pytest.raises(ValueError):
            entropy._decode_numpy(memoryview(enc), wrong)
    with pytest.raises(CorruptObject, match="damaged"):
        entropy.decode(enc[:-4], len(src), hash_bytes(src))


def test_both_decoders_agree_on_arbitrary_bytes():
    """Random headers and bodies, and real streams with a random byte changed: the compiled
    and the numpy decoder both refuse them, or both give the same bytes."""
    rng = np.random.default_rng(11)
    decoded = 0
    for i in range(3000):
        if i % 3 == 0:  # a real stream, one byte changed
            src = np.minimum(rng.geometric(0.5, int(rng.integers(64, 400))), 255).astype(np.uint8).tobytes()
            body = np.frombuffer(entropy.kernel.encode(src, 10**6), np.uint8).copy()
            body[rng.integers(0, len(body))] ^= rng.integers(1, 256)
            n = len(src)
        else:
            body = rng.integers(0, 256, int(rng.integers(0, 48)), dtype=np.uint8)
            if i % 3 == 1 and len(body) > 2:
                body[0] &= 0x1F  # a valid scale and lanes byte
                body[1] = rng.integers(0, 4)  # a few symbols
            n = int(rng.integers(0, 6))
        got = []
        for dec in (entropy.kernel.decode, lambda b, k: entropy._decode_numpy(memoryview(b), k)):
            try:
                got.append(dec(bytes(body), n))
            except ValueError:
                got.append(None)
        assert got[0] == got[1], (body.tobytes().hex(), n)
        decoded += got[0] is not None
    assert decoded < 30  # a changed byte is almost always caught by the stream itself


# -- frames -------------------------------------------------------------------------------------

def _weights(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.05).astype(np.float32)


def _bf16(x: np.ndarray) -> bytes:
    return (x.view(np.uint32) >> np.uint32(16)).astype(np.uint16).tobytes()


def _step(n: int, share: float, seed: int) -> tuple[bytes, bytes]:
    """A bf16 chunk and its next RL step: ``share`` of the elements moved by an ulp or two."""
    rng = np.random.default_rng(seed)
    base = np.frombuffer(_bf16(_weights(n, seed)), np.uint16)
    new = base.copy()
    moved = rng.random(n) < share
    new[moved] += rng.integers(1, 3, int(moved.sum())).astype(np.uint16)
    return base.tobytes(), new.tobytes()


def _frame(data: bytes, base: bytes | None = None) -> bytes:
    b = codecs.Base(hash_bytes(base), base, 0) if base is not None else None
    return codecs.encode(data, hash_bytes(data), width=BF16.width, key=BF16.key, level=3, base=b)


def _decode_everywhere(frame: bytes, data: bytes, base: bytes | None = None) -> None:
    oid = hash_bytes(data)
    assert codecs.decode(frame, oid, lambda o: base) == data
    with without(entropy):
        assert codecs.decode(frame, oid, lambda o: base) == data
    with without(entropy, native):
        assert codecs.decode(frame, oid, lambda o: base) == data


def _version(frame: bytes) -> int:
    return frame[4]


def test_a_sparse_step_is_version_5_smaller_and_decodes_everywhere():
    base, data = _step(1 << 20, 0.01, 3)
    frame = _frame(data, base)
    h = codecs.parse_header(frame, hash_bytes(data))
    assert h.codec == codecs.SPARSE and _version(frame) == entropy.SINCE
    _decode_everywhere(frame, data, base)
    with without(entropy):
        before = _frame(data, base)  # a writer without the coder: the frame as version 3 wrote it
    assert _version(before) == 3
    assert len(frame) < 0.97 * len(before)
    _decode_everywhere(before, data, base)
    # The benchmark's view: the frame's decoded streams, whose order-0 entropy the frame
    # is within 2% of (the layouts may differ from the version 3 frame's: the encoder
    # weighs them by their coded sizes).
    got = codecs.transformed(frame, h.oid)
    h0 = sum(map(_entropy_bytes, got))
    assert h0 < len(frame) < 1.02 * h0 + 400
    assert len(before) > 1.05 * sum(map(_entropy_bytes, codecs.transformed(before, h.oid)))


def test_a_small_tensors_step_costs_a_few_dozen_bytes(monkeypatch):
    """An RL step of a 384-element bf16 tensor (a LayerNorm weight: 3-5 elements moved):
    a segment that short with escapes also tries 4-bit symbols, whose coded stream needs
    no escape planes, and its streams take the narrow coder: ~40 bytes of payload (the
    2-bit symbols with their escapes took 51-57)."""
    sizes = []
    for seed in range(5):
        base, data = _step(384, 0.01, seed)
        frame = _frame(data, base)
        _decode_everywhere(frame, data, base)
        with monkeypatch.context() as m:
            m.setattr(sparse, "_BOTH_BELOW", 0)
            two = _frame(data, base)
        sizes.append((len(frame) - codecs.HEADER_SIZE, len(two) - codecs.HEADER_SIZE))
    assert all(a <= 42 and a <= b for a, b in sizes), sizes
    assert sum(b - a for a, b in sizes) >= 40, sizes


def _fgrouped_modes(payload, width: int) -> set[int]:
    """The modes of an FGROUPED payload's planes and of the parts of its ranked planes."""
    modes, pos = set(), 0
    for _ in range(width):
        mode, size = planes._PLANE.unpack_from(payload, pos)
        modes.add(mode)
        if mode == planes.PLANE_RANKS:
            body = payload[pos + planes._PLANE.size:pos + planes._PLANE.size + size]
            at = 1 + body[0] + 4
            for _ in range(2):
                m, sz = planes._PLANE.unpack_from(body, at)
                modes.add(m)
                at += planes._PLANE.size + sz
        pos += planes._PLANE.size + size
    return modes


def test_keyframes_and_dense_deltas_are_version_5_only_where_a_stream_is_coded():
    x = _weights(1 << 20, 4)
    for data in (_bf16(x), x.tobytes()):
        width = 2 if len(data) == 1 << 21 else 4
        oid = hash_bytes(data)
        frame = codecs.encode(data, oid, width=width, key=dtypes.KEY_FLOAT, level=3)
        modes = _fgrouped_modes(memoryview(frame)[codecs.HEADER_SIZE + 8:], width)
        assert _version(frame) == (entropy.SINCE if entropy.RANS in modes else 4 if planes.PLANE_RANKS in modes else 2)
        _decode_everywhere(frame, data)
    base, data = _step(1 << 20, 0.5, 6)
    for codec in (codecs.SUBS, codecs.SPARSE):
        frame = codecs.encode_as(codec, data, hash_bytes(data), width=2, key=dtypes.KEY_FLOAT, level=3,
                                 base=codecs.Base(hash_bytes(base), base, 0))
        assert codecs.parse_header(frame, hash_bytes(data)).codec == codec
        _decode_everywhere(frame, data, base)
    rnd = np.random.default_rng(7).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    frame = codecs.encode(rnd, hash_bytes(rnd), width=1, key=0, level=3)
    assert _version(frame) == 1  # nothing squeezed: RAW


def test_sparse_payload_layouts_with_coded_streams_decode_everywhere():
    """Every positions layout (bitmap, gaps, exponent groups) and value segment kind, as
    the encoder writes them with the coder, decodes on every path."""
    for share, cuts in ((0.01, None), (0.002, []), (0.05, [120]), (0.2, [100, 125])):
        base, data = _step(300000, share, 8)
        dt = BF16
        pl = sparse._sparse_payload(np.frombuffer(data, np.uint8), np.frombuffer(base, np.uint8), dt.width, dt.key, 3, cuts)
        used = planes.rans_used(reset=True)
        pl = codecs._CHECK.pack(codecs.checksum(pl)) + pl
        frame = codecs._pack(codecs.SPARSE, dt.width, dt.key, 1, len(data), codecs.checksum(data), hash_bytes(data),
                             hash_bytes(base), pl, version=entropy.SINCE if used else 3)
        _decode_everywhere(frame, data, base)


def _with_version(frame: bytes, version: int) -> bytes:
    head = bytearray(frame[:codecs._HEAD.size])
    head[4] = version
    check = struct.pack("<Q", codecs.checksum(bytes(head)))
    return bytes(head) + check + frame[codecs.HEADER_SIZE:]


def test_a_coded_stream_in_an_older_version_frame_is_corrupt():
    """Version 5 is what allows mode 4: a frame relabelled version 4 (or 3) names a mode
    its version does not have, and is refused on every path, never misread."""
    base, data = _step(1 << 20, 0.01, 3)
    frame = _frame(data, base)
    assert _version(frame) == entropy.SINCE
    for v in (3, 4):
        forged = _with_version(frame, v)
        for mods in ((), (entropy,), (entropy, native)):
            with without(*mods), pytest.raises(CorruptObject):
                codecs.decode(forged, hash_bytes(data), lambda o: base)
    with pytest.raises(CorruptObject, match="version 6"):
        codecs.decode(_with_version(frame, 6), hash_bytes(data), lambda o: base)


def test_a_damaged_coded_stream_in_a_frame_is_named_corrupt():
    """The frame's payload checksum catches a flipped bit first; a payload re-checksummed
    around a damaged stream is refused by the stream's own checks or the decoded xxh3."""
    base, data = _step(1 << 20, 0.01, 3)
    frame = bytearray(_frame(data, base))
    with pytest.raises(CorruptObject, match="checksum"):
        bad = bytearray(frame)
        bad[-100] ^= 1
        codecs.decode(bytes(bad), hash_bytes(data), lambda o: base)
    pl = bytearray(frame[codecs.HEADER_SIZE + 8:])
    for at in (40, len(pl) // 2, len(pl) - 10):
        damaged = bytearray(pl)
        damaged[at] ^= 0x04
        forged = bytes(frame[:codecs.HEADER_SIZE]) + codecs._CHECK.pack(codecs.checksum(bytes(damaged))) + bytes(damaged)
        for mods in ((), (entropy,), (entropy, native)):
            with without(*mods), pytest.raises(CorruptObject):
                codecs.decode(forged, hash_bytes(data), lambda o: base)


def test_golden_version_5_frames_decode_everywhere():
    """frames-v5 (made once by golden/make_frames_v5.py): keyframes and every delta layout
    with coded streams, for four float dtypes, decode bit-exactly with the compiled coder,
    its numpy decoder and without the delta kernel, as long as the format is read."""
    with gzip.open(os.path.join(os.path.dirname(__file__), "golden", "frames-v5.json.gz"), "rt") as f:
        recs = json.load(f)
    assert {r["codec"] for r in recs} == {"fgrouped", "sparse", "subs"}
    assert {r["dtype"] for r in recs} == {"BF16", "F16", "F32", "F64"}
    assert sparse.POS_GROUPS in {r["mode"] for r in recs}
    for r in recs:
        frame = bytes.fromhex(r["frame"])
        assert _version(frame) == entropy.SINCE
        base = bytes.fromhex(r["base"]) or None
        xor = np.frombuffer(bytes.fromhex(r["xor"]), np.uint8)
        data = (xor ^ np.frombuffer(base, np.uint8)).tobytes() if base else xor.tobytes()
        _decode_everywhere(frame, data, base)
