"""Lossless codecs and the stored frame.

Every stored object is one *frame*: a fixed, checksummed header followed by the encoded
payload. The header names the codec, the object's own id (so a frame stored under the
wrong name is caught), the base chunk of a delta, the decoded length and the xxh3 of the
decoded bytes, verified on every read.

Codecs (all bijections on bits, so every value round-trips exactly: NaN payloads, -0.0,
infinities, subnormals, any dtype):

- RAW: the bytes as they are (used when nothing compresses).
- ZSTD: plain zstd, for literal bytes.
- GROUPED: elements split into byte planes (ZipNN-style), then zstd.
- XOR: the XOR of the bit patterns with an equally long base chunk, byte-grouped, zstd.
- SUB: the wrap-around difference of order-preserving integer keys, zig-zagged,
  byte-grouped, zstd. Small numeric changes give small integers even across carries.

Added in frame version 2 (frames of the codecs above keep version 1, so repositories
written before stay readable by older coralfs until a v2 codec is used):

- SUBS: SUB differences in the order of their base element's exponent (the 8 bits after
  the sign; a stable sort the decoder repeats from the base), cut into segments of at
  least 4096 elements where the exponent changes, each segment's byte planes compressed
  on their own. How far a weight moves in ulps depends on its magnitude, so each
  segment gets its own entropy table: an order-0 coder conditioned on the exponent.
- SPARSE: a delta listing only the elements that differ from the base: a bitmap of
  changed elements (zstd), then the SUB differences of just those elements laid out as
  in SUBS. Consecutive bf16 checkpoints leave most elements bit-identical; a dense delta
  pays for every unchanged zero.
- FGROUPED: the keyframe codec for floats: the sign bit rotated to the lowest bit (so one
  byte plane holds the exponent, which zstd's Huffman stage codes well, and the sign joins
  the near-random mantissa), byte-grouped, each plane compressed on its own or stored raw.

Frame version 3 changed the layout of SPARSE and SUBS (their version 2 frames still
decode): each segment of differences may hold small values as 2- or 4-bit symbols packed
into bytes, the larger ones as escapes (a byte-wise Huffman code spends at least one bit
a symbol; packed symbols let it approach the entropy), and SPARSE may store its changed
elements' bitmap cut into up to three groups of base exponents (whether a bf16 element
changes at all depends on its magnitude: an update must cross half an ulp).

Frame version 4 lets an FGROUPED plane hold ranks (planes.PLANE_RANKS): the 15 most
frequent byte values of the plane as 4-bit ranks packed two to a byte, the others escaped
to a side stream. The encoder tries it on the top plane (the exponent of bf16 and fp32)
and keeps it where it is smaller than zstd on the plane; only such frames are version 4,
other FGROUPED frames stay version 2.

Frame version 5 lets any squeezed stream of FGROUPED, SPARSE and SUBS (a byte plane, a
bitmap, packed symbols, the parts of a ranked plane) be order-0 rANS (entropy.RANS, mode 4;
coralfs/objects/entropy.py): zstd's Huffman stage spends a whole number of bits, at least
one, on every symbol, which on the skewed streams of deltas is 5-30% over their entropy.
The encoder keeps rANS only where it is at most entropy.WIN of zstd's bytes, and only the
frames holding such a stream are version 5 (others keep the version of their layout).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import xxhash
import zstandard

from . import entropy, planes
from .errors import CorruptObject
from .ids import ZERO_ID, ObjectId, to_hex
from .lazy import lazy_module
from .planes import (
    _PLANE,
    _UINT,
    PLANE_RANKS,
    _compressor,
    _fgrouped_ok,
    _keys,
    _pack_planes,
    _rank_streams,
    _rotate,
    _split,
    _ungroup_into,
    _unkeys,
    _unpack_planes_into,
    _unpack_symbols,
    _unsqueeze,
    _unzigzag,
    _unzstd,
    _zigzag,
    group,
)
from .sparse import _COUNT, _GROUP, _SPARSE, POS_GAPS, POS_GROUPS, _sparse_payload, _subs_payload, _unsparse, _unsubs

np = lazy_module("numpy")  # imported by the first tensor frame, not by `coralfs log`

RAW, ZSTD, GROUPED, XOR, SUB, SPARSE, FGROUPED, SUBS = 0, 1, 2, 3, 4, 5, 6, 7
CODEC_NAMES = {RAW: "raw", ZSTD: "zstd", GROUPED: "grouped", XOR: "xor", SUB: "sub",
               SPARSE: "sparse", FGROUPED: "fgrouped", SUBS: "subs"}
DELTA_CODECS = (XOR, SUB, SPARSE, SUBS)
# Codecs whose payload is tensor elements (what optimize and the benchmarks count as tensors).
TENSOR_CODECS = (GROUPED, XOR, SUB, SPARSE, FGROUPED, SUBS)

MAGIC = b"CRAL"
VERSION = entropy.SINCE  # the newest frame version this code reads and writes
# The frame version that introduced each codec: a frame naming a codec newer than its
# version is corrupt.
CODEC_SINCE = {RAW: 1, ZSTD: 1, GROUPED: 1, XOR: 1, SUB: 1, SPARSE: 2, FGROUPED: 2, SUBS: 2}
# The version a frame of each codec is written with: the lowest that knows its layout (v1
# codecs stay v1, readable by any coralfs; SPARSE and SUBS payloads changed in v3, so an
# older coralfs says "upgrade" instead of misreading them). An FGROUPED frame with a
# ranked plane is version RANKS_SINCE; a frame with an entropy-coded stream entropy.SINCE.
CODEC_WRITTEN = {**CODEC_SINCE, SPARSE: 3, SUBS: 3}
RANKS_SINCE = 4
# magic, version, codec, width, key, depth, flags, gen, decoded_len, xxh3(decoded), oid, base
_HEAD = struct.Struct("<4sBBBBHBBQQ32s32s")
_CHECK = struct.Struct("<Q")
HEADER_SIZE = _HEAD.size + _CHECK.size
FLAG_STRUCTURED = 1  # the frame holds a structured object (tensor, file, tree, commit, tag)

# The largest object a frame may claim to decode to; protects against lying headers.
MAX_DECODED = 1 << 34
_SAMPLE_PIECE = 32 << 10
_SAMPLE_MIN = 256 << 10

def checksum(data) -> int:
    return xxhash.xxh3_64_intdigest(data)


@dataclass(frozen=True, slots=True)
class FrameHeader:
    codec: int
    width: int
    key: int
    depth: int
    decoded_len: int
    check: int
    oid: ObjectId
    base: ObjectId | None
    flags: int = 0
    gen: int = 0  # keyframes: how many older versions of this group chain into it
    version: int = 1  # the frame version (the payload layout of SPARSE and SUBS depends on it)

    @property
    def structured(self) -> bool:
        return bool(self.flags & FLAG_STRUCTURED)

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, f"codec{self.codec}")


def parse_header(frame: bytes | memoryview, oid: ObjectId) -> FrameHeader:
    """Parse and verify a frame header; CorruptObject names ``oid`` on any mismatch."""
    if len(frame) < HEADER_SIZE:
        raise CorruptObject(to_hex(oid), f"frame is {len(frame)} bytes, shorter than its header")
    head = bytes(frame[: _HEAD.size])
    (stored_check,) = _CHECK.unpack_from(frame, _HEAD.size)
    if checksum(head) != stored_check:
        raise CorruptObject(to_hex(oid), "frame header checksum mismatch")
    magic, version, codec, width, key, depth, flags, gen, dlen, check, foid, base = _HEAD.unpack(head)
    if magic != MAGIC:
        raise CorruptObject(to_hex(oid), "bad frame magic")
    if not 1 <= version <= VERSION:
        raise CorruptObject(to_hex(oid), f"unsupported frame version {version} (a newer coralfs wrote it: "
                                         f"upgrade coralfs to read this repository)")
    if codec not in CODEC_NAMES or CODEC_SINCE[codec] > version:
        raise CorruptObject(to_hex(oid), f"unknown codec {codec} in a version {version} frame")
    if foid != oid:
        raise CorruptObject(to_hex(oid), f"frame holds object {to_hex(foid)}, not this one")
    if dlen > MAX_DECODED or width == 0:
        raise CorruptObject(to_hex(oid), "frame header out of range")
    has_base = codec in DELTA_CODECS
    if has_base == (base == ZERO_ID):
        raise CorruptObject(to_hex(oid), "delta base inconsistent with codec")
    return FrameHeader(codec, width, key, depth, dlen, check, ObjectId(foid),
                       ObjectId(base) if has_base else None, flags, gen, version)


def _pack(codec: int, width: int, key: int, depth: int, data_len: int, check: int,
          oid: ObjectId, base: ObjectId | None, payload, flags: int = 0, gen: int = 0,
          version: int | None = None) -> bytes:
    head = _HEAD.pack(MAGIC, version or CODEC_WRITTEN[codec], codec, width, key, depth, flags, gen, data_len, check,
                      oid, base if base is not None else ZERO_ID)
    return b"".join((head, _CHECK.pack(checksum(head)), payload))


def _delta(codec: int, data: np.ndarray, base: np.ndarray, width: int, key: int) -> np.ndarray:
    if codec == XOR:
        return data ^ base
    body, tail = _split(data, width)
    bbody, btail = _split(base, width)
    d = _zigzag(_keys(body, width, key) - _keys(bbody, width, key), width)
    return np.concatenate([d.view(np.uint8), tail ^ btail])


def _undelta(codec: int, delta: np.ndarray, base: np.ndarray, width: int, key: int,
             in_place: bool = False) -> np.ndarray:
    """Inverse of :func:`_delta`; ``in_place``: ``delta`` (writable, owned) is overwritten
    with the decoded bytes and returned."""
    if not in_place:
        delta = delta.copy()
    if codec == XOR:
        delta ^= base
        return delta
    body, tail = _split(delta, width)
    bbody, btail = _split(base, width)
    k = _unzigzag(body.view(_UINT[width]), width, in_place=True)
    k += _keys(bbody, width, key)
    _unkeys(k, width, key, in_place=True)
    tail ^= btail
    return delta


def _sample(buf: np.ndarray, width: int) -> np.ndarray | slice:
    """A few spread slices of a large buffer, aligned to elements, for estimates."""
    if len(buf) < _SAMPLE_MIN:
        return slice(None)
    piece = (_SAMPLE_PIECE // width) * width
    step = ((len(buf) - piece) // 3 // width) * width
    idx = np.concatenate([np.arange(i * step, i * step + piece) for i in range(4)])
    return idx


# -- encode / decode ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Base:
    """A candidate delta base: its id, decoded bytes and chain depth."""

    oid: ObjectId
    data: bytes
    depth: int


def _payload(codec: int, buf: np.ndarray, bbuf: np.ndarray | None, width: int, key: int,
             level: int) -> tuple[bytes, int | None]:
    """The encoded payload of ``buf`` under ``codec`` (the estimate runs this on samples),
    and the frame version it needs if newer than the codec's (RANKS_SINCE for a ranked
    FGROUPED plane, entropy.SINCE for an entropy-coded stream), else None."""
    planes.rans_used(reset=True)
    version = None
    if codec == GROUPED:
        out = _compressor(level).compress(group(buf, width))
    elif codec == FGROUPED:
        # The top plane of the sign-rotated elements is the exponent (bf16, fp32; the top
        # 8 of fp64's 11 bits): tried as ranks, kept where smaller than zstd.
        modes: list[int] = []
        out = _pack_planes(group(buf, width, rotate=True), width, level, ranked=(width - 1,), modes=modes)
        version = RANKS_SINCE if PLANE_RANKS in modes else None
    elif codec == SPARSE:
        out = _sparse_payload(buf, bbuf, width, key, level)
    elif codec == SUBS:
        out = _subs_payload(buf, bbuf, width, key, level)
    else:
        out = _compressor(level).compress(group(_delta(codec, buf, bbuf, width, key), width))
    # A stream entropy-coded anywhere in the payload (also in a candidate that lost, such
    # as a ranked plane stored as zstd: the version then only allows what is not there).
    return out, entropy.SINCE if planes.rans_used(reset=True) else version


def encode(data, oid: ObjectId, *, width: int = 1, key: int = 0, level: int = 3,
           base: Base | None = None, literal: bool = False, structured: bool = False,
           gen: int = 0) -> bytes:
    """Encode ``data`` (the decoded bytes whose id is ``oid``) into a frame.

    Literal bytes get plain zstd. Tensor bytes get a keyframe codec (FGROUPED for floats,
    byte-grouped zstd otherwise), or, when ``base`` is an equally long chunk, the cheapest
    delta (SUBS or SPARSE for floats; XOR, SUB, SUBS or SPARSE for other widths of 1-8
    bytes; XOR for the rest) if a sample says it is smaller than the keyframe. RAW when
    nothing makes it smaller.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(buf)
    if literal or n == 0:
        codec, payload, use_base, depth = ZSTD, _compressor(level).compress(data), None, 0
        check = checksum(data)
    else:
        keyframe = FGROUPED if _fgrouped_ok(width, key) else GROUPED
        candidates = [keyframe]
        if base is not None and len(base.data) == n:
            if width not in _UINT:
                candidates.append(XOR)
            elif keyframe == FGROUPED:
                # Measured on the MiniLM series: for floats SUBS or SPARSE is smaller than
                # XOR and SUB in every chunk; not sampling those two saves ingest time.
                candidates += [SUBS, SPARSE]
            else:
                candidates += [XOR, SUB, SUBS, SPARSE]
        bbuf = np.frombuffer(base.data, dtype=np.uint8) if len(candidates) > 1 else None
        done = None
        if len(candidates) > 1:
            sel = _sample(buf, width)
            s, bs = buf[sel], bbuf[sel]
            tried = {c: _payload(c, s, bs, width, key, 1) for c in candidates}
            codec = min(candidates, key=lambda c: (len(tried[c][0]), c))
            if isinstance(sel, slice) and level == 1:
                # The sample was the whole chunk at the frame's level: the estimate's
                # payload is the frame's (a chunk under _SAMPLE_MIN: biases, LayerNorms).
                done = tried[codec]
        else:
            codec = keyframe
        return _frame(codec, data, buf, bbuf, oid, width, key, level, base, gen, structured, done)
    if len(payload) >= n and codec != RAW:
        codec, payload, use_base, depth = RAW, data, None, 0
    return _pack(codec, width, key, depth, n, check, oid, use_base, payload,
                 FLAG_STRUCTURED if structured else 0, gen if use_base is None else 0)


def encode_as(codec: int, data, oid: ObjectId, *, width: int, key: int, level: int = 3,
              base: Base | None = None, gen: int = 0, structured: bool = False) -> bytes:
    """A tensor frame of ``data`` under ``codec`` (RAW if that does not make it smaller);
    :func:`encode` picks the codec, tests force each one."""
    buf = np.frombuffer(data, dtype=np.uint8)
    bbuf = np.frombuffer(base.data, dtype=np.uint8) if codec in DELTA_CODECS else None
    return _frame(codec, data, buf, bbuf, oid, width, key, level, base, gen, structured)


def _frame(codec: int, data, buf: np.ndarray, bbuf: np.ndarray | None, oid: ObjectId, width: int,
           key: int, level: int, base: Base | None, gen: int, structured: bool,
           done: tuple[bytes, int | None] | None = None) -> bytes:
    """The frame of a tensor chunk under ``codec``; ``done``: its payload already made."""
    payload, version = (data, None) if codec == RAW else done or _payload(codec, buf, bbuf, width, key, level)
    use_base, depth = (base.oid, base.depth + 1) if codec in DELTA_CODECS else (None, 0)
    if len(payload) + _CHECK.size >= len(buf) and codec != RAW:
        codec, payload, use_base, depth, version = RAW, data, None, 0, None
    if CODEC_SINCE[codec] >= 2:
        # v2 payloads are many small zstd frames and plane headers: a checksum of the
        # payload catches a flipped bit zstd ignores (reserved header bits) before parsing.
        payload = _CHECK.pack(checksum(payload)) + payload
    return _pack(codec, width, key, depth, len(buf), checksum(data), oid, use_base, payload,
                 FLAG_STRUCTURED if structured else 0, gen if use_base is None else 0, version)


def decode(frame: bytes | memoryview, oid: ObjectId,
           get_base: Callable[[ObjectId], bytes] | None = None,
           header: FrameHeader | None = None) -> bytes:
    """Decode and verify a frame; ``get_base`` returns the decoded bytes of a base id.

    The result is always ``bytes``. A tensor codec writes its output straight into the
    storage of a new bytes object (:func:`_output`) instead of into a numpy array copied
    by ``.tobytes()`` at the end (4 MiB a chunk on every mount read and clone check;
    measured 1.3 -> 0.4 ms for allocating, filling and handing over 4 MiB). Not a
    read-only memoryview over a private buffer, which would be as cheap: decoded chunks
    go to the shared caches, export, hashing and user code, and a memoryview is not the
    bytes they were written for (no ``count``, ``find``, ``decode``, ``+``; ``in``
    compares ints; not hashable, not picklable). The bytes object is filled before
    anything else holds it, and no writable view of it outlives this call, so a cached
    chunk stays immutable.
    """
    h = header or parse_header(frame, oid)
    payload = memoryview(frame)[HEADER_SIZE:]  # no copy of the payload
    if CODEC_SINCE[h.codec] >= 2:
        payload = _checked_payload(payload, oid)
    try:
        if h.codec == RAW:
            out = bytes(payload)
        elif h.codec == ZSTD:
            out = _unzstd(payload, h.decoded_len, oid)
        else:
            out = _decode_tensor(payload, h, oid, get_base)
    except zstandard.ZstdError as e:
        raise CorruptObject(to_hex(oid), f"zstd: {e}") from None
    if len(out) != h.decoded_len or checksum(out) != h.check:
        raise CorruptObject(to_hex(oid), "decoded bytes fail their xxh3 checksum")
    return out


def _decode_tensor(payload: memoryview, h: FrameHeader, oid: ObjectId,
                   get_base: Callable[[ObjectId], bytes] | None) -> bytes:
    """The decoded bytes of a tensor codec's payload, written into their bytes object."""
    n = h.decoded_len
    if h.codec in (SPARSE, SUBS, FGROUPED, SUB) and h.width not in _UINT:
        what = "SUB delta" if h.codec == SUB else f"{h.codec_name} {'frame' if h.codec == FGROUPED else 'delta'}"
        raise CorruptObject(to_hex(oid), f"{what} with an unsupported width")
    if h.codec in (GROUPED, XOR, SUB):
        raw = _unzstd(payload, n, oid)
        if len(raw) != n:
            raise CorruptObject(to_hex(oid), "decoded length mismatch")
        if h.codec == GROUPED and h.width == 1:
            return raw  # one plane: the zstd output is the chunk
    base = _base_of(h, oid, get_base) if h.codec in DELTA_CODECS else None
    out, arr = _output(n)
    if h.codec == FGROUPED:
        _unpack_planes_into(payload, arr, h.width, oid, ranks=h.version >= RANKS_SINCE,
                            rans=h.version >= entropy.SINCE)
        _rotate(arr, h.width, inverse=True, in_place=True)
    elif h.codec == SPARSE:
        _unsparse(payload, base, h, oid, arr)
    elif h.codec == SUBS:
        _unsubs(payload, base, h, oid, arr)
    else:
        _ungroup_into(raw, arr, h.width)
        if h.codec != GROUPED:
            _undelta(h.codec, arr, base, h.width, h.key, in_place=True)
    return arr.tobytes() if out is None else out


# PyBytes_FromStringAndSize and PyBytes_AsString through ctypes.pythonapi, set on first
# use: [(new, address)], or [None] where there is no such API (not CPython).
_BYTES_API: list = []
_OUTPUT_MIN = 1 << 12  # smaller outputs are copied: their copy costs less than the calls


class _Storage:
    """What numpy reads a bytes object's storage through (the array interface of its
    address), holding the bytes alive as long as the array is."""

    __slots__ = ("__array_interface__", "owner")

    def __init__(self, owner: bytes, address: int, n: int) -> None:
        self.owner = owner
        self.__array_interface__ = {"data": (address, False), "shape": (n,), "typestr": "|u1", "version": 3}


def _output(n: int) -> tuple[bytes | None, np.ndarray]:
    """A new bytes object of ``n`` bytes and a writable uint8 array over its storage, for
    a decoder to fill before the bytes are handed to anyone: what C code does with
    PyBytes_FromStringAndSize(NULL, n). (None, a fresh array) where the C API cannot be
    reached or for small ``n``: the caller then copies the array out with ``tobytes``.
    The array must not outlive the decode (it is the one writable view of the bytes)."""
    if n < _OUTPUT_MIN:
        return None, np.empty(n, dtype=np.uint8)
    if not _BYTES_API:
        try:
            import ctypes
            new, addr = ctypes.pythonapi.PyBytes_FromStringAndSize, ctypes.pythonapi.PyBytes_AsString
        except (ImportError, AttributeError):  # not CPython
            _BYTES_API[:] = [None]
        else:
            new.argtypes, new.restype = (ctypes.c_void_p, ctypes.c_ssize_t), ctypes.py_object
            addr.argtypes, addr.restype = (ctypes.py_object,), ctypes.c_void_p
            _BYTES_API[:] = [(new, addr)]
    api = _BYTES_API[0]
    if api is None:
        return None, np.empty(n, dtype=np.uint8)
    new, addr = api
    out = new(None, n)
    # Not a ctypes array type (c_char * n): ctypes keeps every such type it makes, one for
    # each chunk length it ever sees.
    return out, np.asarray(_Storage(out, addr(out), n))


def _checked_payload(payload: memoryview, oid: ObjectId) -> memoryview:
    if len(payload) < _CHECK.size or _CHECK.unpack_from(payload, 0)[0] != checksum(payload[_CHECK.size:]):
        raise CorruptObject(to_hex(oid), "frame payload checksum mismatch")
    return payload[_CHECK.size:]


def _base_of(h: FrameHeader, oid: ObjectId, get_base: Callable[[ObjectId], bytes] | None) -> np.ndarray:
    if get_base is None:
        raise CorruptObject(to_hex(oid), "delta frame without a base reader")
    base = get_base(h.base)
    if len(base) != h.decoded_len:
        raise CorruptObject(to_hex(oid), "delta base has the wrong length")
    return np.frombuffer(base, dtype=np.uint8)


def transformed(frame: bytes | memoryview, oid: ObjectId) -> list[bytes]:
    """The entropy-coded streams of a frame, decoded but not un-transformed (byte planes,
    bitmaps, packed symbols, each on its own): what the benchmark measures order-0 entropy
    of. Each stream is decoded at its exact length, as :func:`decode` does."""
    h = parse_header(frame, oid)
    payload = memoryview(frame)[HEADER_SIZE:]
    if CODEC_SINCE[h.codec] >= 2:
        payload = _checked_payload(payload, oid)
    if h.codec in (GROUPED, XOR, SUB, ZSTD):
        return [_unzstd(payload, h.decoded_len, oid)]
    if h.codec == RAW:
        return [bytes(payload)]
    out: list[bytes] = []
    rans = h.version >= entropy.SINCE
    # Ranked planes exist in FGROUPED frames from RANKS_SINCE on; anywhere else that mode
    # is corrupt, as decode says.
    ranks = h.codec == FGROUPED and h.version >= RANKS_SINCE

    def stream(mode: int, body, n: int) -> bytes:
        return bytes(_unsqueeze(mode, body, n, oid, rans))

    def plane_streams(pos: int, n_el: int, width: int = h.width) -> int:
        n = n_el
        for _ in range(width):
            mode, size = _PLANE.unpack_from(payload, pos)
            body = payload[pos + _PLANE.size:pos + _PLANE.size + size]
            if mode == PLANE_RANKS and ranks:
                _k, packed, _n, esc = _rank_streams(body, n, oid, rans)
                out.extend((bytes(packed), bytes(esc)))
            elif mode == PLANE_RANKS:
                raise CorruptObject(to_hex(oid), "byte plane out of range")
            else:
                out.append(stream(mode, body, n))
            pos += _PLANE.size + size
        return pos

    if h.codec == FGROUPED:
        plane_streams(0, h.decoded_len // h.width)
        return out

    def positions(pos: int, mode: int, size: int, n: int, count: int) -> None:
        if mode == POS_GAPS:
            plane_streams(pos, count, 4)
        else:
            out.append(stream(mode, payload[pos:pos + size], (n + 7) // 8))

    pos = 0
    n_el = h.decoded_len // h.width
    if h.codec == SPARSE:
        count, mode, size = _SPARSE.unpack_from(payload, 0)
        if mode == POS_GROUPS:
            at = _SPARSE.size + payload[_SPARSE.size]
            for _ in range(payload[_SPARSE.size]):
                n, k, gmode, gsize = _GROUP.unpack_from(payload, at)
                positions(at + _GROUP.size, gmode, gsize, n, k)
                at += _GROUP.size + gsize
        else:
            positions(_SPARSE.size, mode, size, n_el, count)
        pos = _SPARSE.size + size
    (nseg,) = _COUNT.unpack_from(payload, pos)
    pos += _COUNT.size
    for _ in range(nseg):
        count, size = _COUNT.unpack_from(payload, pos)[0], _COUNT.unpack_from(payload, pos + _COUNT.size)[0]
        at = pos + 2 * _COUNT.size
        kind = payload[at] if h.version >= 3 else 0
        if h.version < 3:
            plane_streams(at, count)
        elif kind == 0:
            plane_streams(at + 1, count)
        else:
            mode, psize = _PLANE.unpack_from(payload, at + 1)
            body = payload[at + 1 + _PLANE.size:at + 1 + _PLANE.size + psize]
            packed = stream(mode, body, -(-count * kind // 8))
            out.append(packed)
            escapes = int(np.count_nonzero(_unpack_symbols(packed, kind, count) == (1 << kind) - 1))
            if escapes:
                plane_streams(at + 1 + _PLANE.size + psize, escapes)
        pos += 2 * _COUNT.size + size
    return out
