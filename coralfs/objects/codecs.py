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
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import xxhash
import zstandard

from .dtypes import KEY_FLOAT, KEY_SIGNED
from .errors import CorruptObject
from .ids import ZERO_ID, ObjectId, to_hex
from .lazy import LazyMapping, lazy_module

np = lazy_module("numpy")  # imported by the first tensor frame, not by `coralfs log`

RAW, ZSTD, GROUPED, XOR, SUB = 0, 1, 2, 3, 4
CODEC_NAMES = {RAW: "raw", ZSTD: "zstd", GROUPED: "grouped", XOR: "xor", SUB: "sub"}
DELTA_CODECS = (XOR, SUB)

MAGIC = b"CRAL"
VERSION = 1
# magic, version, codec, width, key, depth, flags, gen, decoded_len, xxh3(decoded), oid, base
_HEAD = struct.Struct("<4sBBBBHBBQQ32s32s")
_CHECK = struct.Struct("<Q")
HEADER_SIZE = _HEAD.size + _CHECK.size
FLAG_STRUCTURED = 1  # the frame holds a structured object (tensor, file, tree, commit, tag)

# The largest object a frame may claim to decode to; protects against lying headers.
MAX_DECODED = 1 << 34
_SAMPLE_PIECE = 32 << 10
_SAMPLE_MIN = 256 << 10

_UINT = LazyMapping(lambda: {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64})
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "c", None)
    if cache is None:
        cache = _local.c = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


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
    if version != VERSION:
        raise CorruptObject(to_hex(oid), f"unsupported frame version {version}")
    if codec not in CODEC_NAMES:
        raise CorruptObject(to_hex(oid), f"unknown codec {codec}")
    if foid != oid:
        raise CorruptObject(to_hex(oid), f"frame holds object {to_hex(foid)}, not this one")
    if dlen > MAX_DECODED or width == 0:
        raise CorruptObject(to_hex(oid), "frame header out of range")
    has_base = codec in DELTA_CODECS
    if has_base == (base == ZERO_ID):
        raise CorruptObject(to_hex(oid), "delta base inconsistent with codec")
    return FrameHeader(codec, width, key, depth, dlen, check, ObjectId(foid),
                       ObjectId(base) if has_base else None, flags, gen)


def _pack(codec: int, width: int, key: int, depth: int, data_len: int, check: int,
          oid: ObjectId, base: ObjectId | None, payload, flags: int = 0, gen: int = 0) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, codec, width, key, depth, flags, gen, data_len, check,
                      oid, base if base is not None else ZERO_ID)
    return b"".join((head, _CHECK.pack(checksum(head)), payload))


# -- element transforms ------------------------------------------------------------------

def group(buf: np.ndarray, width: int) -> np.ndarray:
    """Split elements into byte planes: all first bytes, then all second bytes, ...
    A tail shorter than one element is appended as is. Returns a uint8 array (zstd reads
    it through the buffer protocol: no copy into a bytes object)."""
    if width == 1:
        return buf
    n = len(buf) // width
    out = np.empty(len(buf), dtype=np.uint8)
    planes = out[: n * width].reshape(width, n)
    src = buf[: n * width].reshape(n, width)
    # Plane by plane: a strided gather per plane is several times faster than .T copies.
    for i in range(width):
        planes[i] = src[:, i]
    out[n * width:] = buf[n * width:]
    return out


def ungroup(data: bytes, width: int) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.uint8)
    if width == 1:
        return arr
    n = len(arr) // width
    out = np.empty(len(arr), dtype=np.uint8)
    dst = out[: n * width].reshape(n, width)
    planes = arr[: n * width].reshape(width, n)
    for i in range(width):
        dst[:, i] = planes[i]
    out[n * width:] = arr[n * width:]
    return out


def _keys(buf: np.ndarray, width: int, key: int) -> np.ndarray:
    """Order-preserving unsigned keys of the elements (a bijection on bits)."""
    u = buf.view(_UINT[width])
    bits = 8 * width
    sign = _UINT[width](1 << (bits - 1))
    if key == KEY_SIGNED:
        return u ^ sign
    if key == KEY_FLOAT:
        # Negative floats: flip every bit; positive: flip the sign bit. The arithmetic
        # shift of the signed view is all ones exactly for negative values.
        spread = (u.view(np.dtype(f"i{width}")) >> (bits - 1)).view(_UINT[width])
        return u ^ (spread | sign)
    return u


def _unkeys(k: np.ndarray, width: int, key: int) -> np.ndarray:
    bits = 8 * width
    sign = _UINT[width](1 << (bits - 1))
    if key == KEY_SIGNED:
        return k ^ sign
    if key == KEY_FLOAT:
        spread = (k.view(np.dtype(f"i{width}")) >> (bits - 1)).view(_UINT[width])
        return k ^ (~spread | sign)
    return k


def _zigzag(d: np.ndarray, width: int) -> np.ndarray:
    s = d.view(np.dtype(f"i{width}"))
    return ((s << 1) ^ (s >> (8 * width - 1))).view(_UINT[width])


def _unzigzag(z: np.ndarray, width: int) -> np.ndarray:
    one = _UINT[width](1)
    return (z >> one) ^ (_UINT[width](0) - (z & one))


def _split(buf: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    n = (len(buf) // width) * width
    return buf[:n], buf[n:]


def _delta(codec: int, data: np.ndarray, base: np.ndarray, width: int, key: int) -> np.ndarray:
    if codec == XOR:
        return data ^ base
    body, tail = _split(data, width)
    bbody, btail = _split(base, width)
    d = _zigzag(_keys(body, width, key) - _keys(bbody, width, key), width)
    return np.concatenate([d.view(np.uint8), tail ^ btail])


def _undelta(codec: int, delta: np.ndarray, base: np.ndarray, width: int, key: int) -> np.ndarray:
    if codec == XOR:
        return delta ^ base
    body, tail = _split(delta, width)
    bbody, btail = _split(base, width)
    k = _keys(bbody, width, key) + _unzigzag(body.view(_UINT[width]), width)
    return np.concatenate([_unkeys(k, width, key).view(np.uint8), tail ^ btail])


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


def encode(data, oid: ObjectId, *, width: int = 1, key: int = 0, level: int = 3,
           base: Base | None = None, literal: bool = False, structured: bool = False,
           gen: int = 0) -> bytes:
    """Encode ``data`` (the decoded bytes whose id is ``oid``) into a frame.

    Literal bytes get plain zstd. Tensor bytes get byte-grouped zstd, or, when ``base`` is
    an equally long chunk, the cheaper of XOR and SUB deltas if a sample says the delta
    is smaller than grouping alone. RAW when nothing makes it smaller.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(buf)
    check = checksum(data)
    if literal or n == 0:
        codec, payload, use_base, depth = ZSTD, _compressor(level).compress(data), None, 0
    else:
        candidates = [GROUPED]
        if base is not None and len(base.data) == n:
            candidates.append(XOR)
            if width in _UINT:
                candidates.append(SUB)
        bbuf = np.frombuffer(base.data, dtype=np.uint8) if len(candidates) > 1 else None
        if len(candidates) > 1:
            sel = _sample(buf, width)
            s, bs = buf[sel], bbuf[sel]
            quick = _compressor(1)
            sizes = {}
            for c in candidates:
                t = s if c == GROUPED else _delta(c, s, bs, width, key)
                sizes[c] = len(quick.compress(group(t, width)))
            codec = min(candidates, key=lambda c: (sizes[c], c))
        else:
            codec = GROUPED
        if codec == GROUPED:
            payload, use_base, depth = _compressor(level).compress(group(buf, width)), None, 0
        else:
            t = _delta(codec, buf, bbuf, width, key)
            payload = _compressor(level).compress(group(t, width))
            use_base, depth = base.oid, base.depth + 1
    if len(payload) >= n and codec != RAW:
        codec, payload, use_base, depth = RAW, data, None, 0
    return _pack(codec, width, key, depth, n, check, oid, use_base, payload,
                 FLAG_STRUCTURED if structured else 0, gen if use_base is None else 0)


def decode(frame: bytes | memoryview, oid: ObjectId,
           get_base: Callable[[ObjectId], bytes] | None = None,
           header: FrameHeader | None = None) -> bytes:
    """Decode and verify a frame; ``get_base`` returns the decoded bytes of a base id."""
    h = header or parse_header(frame, oid)
    payload = memoryview(frame)[HEADER_SIZE:]  # no copy of the payload
    try:
        if h.codec == RAW:
            out = bytes(payload)
        else:
            raw = _decompressor().decompress(payload, max_output_size=h.decoded_len)
            if h.codec == ZSTD:
                out = raw
            else:
                if len(raw) != h.decoded_len:
                    raise CorruptObject(to_hex(oid), "decoded length mismatch")
                t = ungroup(raw, h.width)
                if h.codec == GROUPED:
                    out = t.tobytes()
                else:
                    if get_base is None:
                        raise CorruptObject(to_hex(oid), "delta frame without a base reader")
                    base = get_base(h.base)
                    if len(base) != h.decoded_len:
                        raise CorruptObject(to_hex(oid), "delta base has the wrong length")
                    bbuf = np.frombuffer(base, dtype=np.uint8)
                    if h.codec == SUB and h.width not in _UINT:
                        raise CorruptObject(to_hex(oid), "SUB delta with an unsupported width")
                    out = _undelta(h.codec, t, bbuf, h.width, h.key).tobytes()
    except zstandard.ZstdError as e:
        raise CorruptObject(to_hex(oid), f"zstd: {e}") from None
    if len(out) != h.decoded_len or checksum(out) != h.check:
        raise CorruptObject(to_hex(oid), "decoded bytes fail their xxh3 checksum")
    return out
