"""What codecs.decode hands back: bytes of every codec, written in place into their own
bytes object (no copy at the end), never sharing storage with a thread's scratch buffer
or with another result; ranked planes decoded without a copy; the one decoder of SUBS and
SPARSE differences the same with the compiled kernel and without."""

from __future__ import annotations

import contextlib
import sys

import ml_dtypes
import numpy as np
import pytest

from coralfs.objects import codecs, dtypes, entropy, native, planes, sparse
from coralfs.objects.ids import hash_bytes


@contextlib.contextmanager
def kernel(on: bool):
    saved = native.kernel
    if not on:
        native.kernel = None
    try:
        yield
    finally:
        native.kernel = saved


PATHS = [True, False] if native.kernel is not None else [False]


def _weights(n: int, seed: int, dtype=np.float32, tail: bytes = b"") -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 0.05).astype(dtype).tobytes() + tail


def _moved(data: bytes, width: int, seed: int, share: float) -> bytes:
    """``data`` with a share of its elements moved by a few ulps (a next checkpoint)."""
    rng = np.random.default_rng(seed)
    n = len(data) // width
    u = np.frombuffer(data[: n * width], planes._UINT[width]).copy()
    hit = rng.random(n) < share
    u[hit] += rng.integers(1, 5, int(hit.sum())).astype(u.dtype)
    return u.tobytes() + data[n * width:]


def _frames():
    """(name, frame, data, base bytes or None) of every codec, large enough to take the
    in-place output (over codecs._OUTPUT_MIN) and with a tail shorter than an element."""
    f32 = dtypes.lookup("F32")
    bf16 = dtypes.lookup("BF16")
    i32 = dtypes.lookup("I32")
    base = _weights(1 << 15, 1, tail=b"\x01\x02")
    new = _moved(base, 4, 2, 0.3)
    bbase = _weights(1 << 15, 3, ml_dtypes.bfloat16, tail=b"\x07")
    bnew = _moved(bbase, 2, 4, 0.02)
    ints = np.random.default_rng(5).integers(-1000, 1000, 1 << 14).astype(np.int32).tobytes()
    ints2 = _moved(ints, 4, 6, 0.5)
    out = []
    for codec, d, b, dt in [(codecs.FGROUPED, new, None, f32), (codecs.SUBS, new, base, f32),
                            (codecs.SPARSE, bnew, bbase, bf16), (codecs.SUBS, bnew, bbase, bf16),
                            (codecs.GROUPED, ints, None, i32), (codecs.XOR, ints2, ints, i32),
                            (codecs.SUB, ints2, ints, i32), (codecs.SPARSE, ints2, ints, i32)]:
        cb = codecs.Base(hash_bytes(b), b, 0) if b is not None else None
        frame = codecs.encode_as(codec, d, hash_bytes(d), width=dt.width, key=dt.key, base=cb)
        assert codecs.parse_header(frame, hash_bytes(d)).codec == codec
        out.append((codecs.CODEC_NAMES[codec], frame, d, b))
    text = b"coralfs " * 4000
    out.append(("zstd", codecs.encode(text, hash_bytes(text), literal=True), text, None))
    one = bytes(range(256)) * 64
    out.append(("grouped-1", codecs.encode_as(codecs.GROUPED, one, hash_bytes(one), width=1, key=0), one, None))
    out.append(("ranked", _all_ranked(bnew), bnew, None))
    return out


def _all_ranked(data: bytes) -> bytes:
    """An FGROUPED frame of bf16 ``data`` with both planes ranked (the encoder ranks only the
    top one): two ranked planes in one frame."""
    g = planes.group(planes._rotate(np.frombuffer(data, np.uint8), 2), 2)
    planes.rans_used(reset=True)
    payload = planes._pack_planes(g, 2, 1, ranked=(0, 1), force=True)
    version = entropy.SINCE if planes.rans_used(reset=True) else codecs.RANKS_SINCE
    assert planes._plane_modes(payload, 2) == [planes.PLANE_RANKS] * 2
    payload = codecs._CHECK.pack(codecs.checksum(payload)) + payload
    return codecs._pack(codecs.FGROUPED, 2, dtypes.KEY_FLOAT, 0, len(data), codecs.checksum(data),
                        hash_bytes(data), None, payload, version=version)


FRAMES = _frames()


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("name,frame,data,base", FRAMES, ids=[f[0] for f in FRAMES])
def test_every_codec_decodes_to_bytes_exactly(on, name, frame, data, base):
    with kernel(on):
        out = codecs.decode(frame, hash_bytes(data), lambda oid: base)
    assert type(out) is bytes
    assert out == data and hash_bytes(out) == hash_bytes(data)
    hash(out)  # a dict key, like any bytes
    assert sys.getrefcount(out) == 2  # nothing else holds it (the argument of getrefcount)


@pytest.mark.parametrize("on", PATHS)
def test_results_share_no_storage(on):
    """Each result is its own bytes object: decoding the next frame (the thread's scratch
    reused, another chunk's planes) leaves every earlier result as it was."""
    with kernel(on):
        results = [(codecs.decode(f, hash_bytes(d), lambda oid, b=b: b), d) for _n, f, d, b in FRAMES * 2]
    for out, data in results:
        assert out == data
    addrs = {np.frombuffer(out, np.uint8).ctypes.data for out, _ in results}
    assert len(addrs) == len(results)
    scratch = getattr(planes._local, "scratch", None)
    if scratch is not None:
        lo, hi = scratch.ctypes.data, scratch.ctypes.data + scratch.nbytes
        assert not any(lo <= a < hi for a in addrs)


def test_without_the_c_api_the_output_is_copied_out(monkeypatch):
    """Where ctypes.pythonapi is missing (not CPython) decode copies an array out, as before."""
    monkeypatch.setattr(codecs, "_BYTES_API", [None])
    for _name, frame, data, base in FRAMES:
        out = codecs.decode(frame, hash_bytes(data), lambda oid, b=base: b)
        assert type(out) is bytes and out == data


def test_small_outputs_are_copied_out():
    data = _weights(100, 9)
    out = codecs.decode(codecs.encode_as(codecs.FGROUPED, data, hash_bytes(data), width=4, key=dtypes.KEY_FLOAT),
                        hash_bytes(data))
    assert type(out) is bytes and out == data


def test_a_failed_decode_hands_back_nothing_half_written():
    _name, frame, data, base = FRAMES[1]  # SUBS
    wrong = _moved(base, 4, 11, 0.5)
    with pytest.raises(codecs.CorruptObject):
        codecs.decode(frame, hash_bytes(data), lambda oid: wrong)


@pytest.mark.parametrize("on", PATHS)
def test_two_ranked_planes_decode_without_sharing_the_scratch(on):
    """The first ranked plane of a frame decodes into the thread's scratch, a second into
    its own buffer: both are exact when the planes are interleaved."""
    data = FRAMES[-1][2]
    with kernel(on):
        frame = _all_ranked(data)
        planes._local.__dict__.pop("scratch", None)
        assert codecs.decode(frame, hash_bytes(data)) == data
        assert codecs.decode(frame, hash_bytes(data)) == data  # with the scratch kept


def test_unrank_plane_own_buffer_is_not_the_scratch():
    g = np.frombuffer(bytes(range(16)) * 500, np.uint8)
    body = memoryview(planes._rank_plane(g, 1))
    a = planes._unrank_plane(body, len(g), b"x" * 32, rans=True)
    b = planes._unrank_plane(body, len(g), b"x" * 32, own=True, rans=True)
    assert a.tobytes() == b.tobytes() == g.tobytes()
    assert not np.shares_memory(a, b)
    assert np.shares_memory(a, planes._local.scratch)


@pytest.mark.parametrize("width,key", [(1, dtypes.KEY_UNSIGNED), (2, dtypes.KEY_FLOAT), (4, dtypes.KEY_FLOAT),
                                       (4, dtypes.KEY_SIGNED), (8, dtypes.KEY_FLOAT)])
def test_apply_segments_is_one_decoder_for_both_paths(width, key):
    """sparse._apply_segments gives the same elements with the kernel and with numpy, and
    they are the inverse of the encoder's differences."""
    rng = np.random.default_rng(width * 10 + key)
    n = 20000
    ut = planes._UINT[width]
    bu = rng.integers(0, 1 << min(63, 8 * width), n, dtype=np.uint64).astype(ut)
    u = (bu + rng.integers(0, 3, n).astype(ut)).astype(ut)
    payload = memoryview(sparse._pack_delta(u, bu, width, key, 1) + b"tail")
    got = []
    for on in PATHS:
        with kernel(on):
            out = np.empty(n, dtype=ut)
            used = sparse._apply_segments(payload, bu, out, width, key, b"x" * 32, codecs.VERSION)
        assert bytes(payload[used:]) == b"tail"
        got.append(out.tobytes())
    assert all(g == u.tobytes() for g in got)
