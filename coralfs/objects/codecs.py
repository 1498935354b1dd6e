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

RAW, ZSTD, GROUPED, XOR, SUB, SPARSE, FGROUPED, SUBS = 0, 1, 2, 3, 4, 5, 6, 7
CODEC_NAMES = {RAW: "raw", ZSTD: "zstd", GROUPED: "grouped", XOR: "xor", SUB: "sub",
               SPARSE: "sparse", FGROUPED: "fgrouped", SUBS: "subs"}
DELTA_CODECS = (XOR, SUB, SPARSE, SUBS)
# Codecs whose payload is tensor elements (what optimize and the benchmarks count as tensors).
TENSOR_CODECS = (GROUPED, XOR, SUB, SPARSE, FGROUPED, SUBS)

MAGIC = b"CRAL"
VERSION = 3  # the newest frame version this code reads and writes
# The frame version that introduced each codec: a frame naming a codec newer than its
# version is corrupt.
CODEC_SINCE = {RAW: 1, ZSTD: 1, GROUPED: 1, XOR: 1, SUB: 1, SPARSE: 2, FGROUPED: 2, SUBS: 2}
# The version a frame of each codec is written with: the lowest that knows its layout (v1
# codecs stay v1, readable by any coralfs; SPARSE and SUBS payloads changed in v3, so an
# older coralfs says "upgrade" instead of misreading them).
CODEC_WRITTEN = {**CODEC_SINCE, SPARSE: 3, SUBS: 3}
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


def _unzstd(body, limit: int, oid: ObjectId) -> bytes:
    """zstd-decompress at most ``limit`` bytes; a frame claiming more is corrupt (the
    library would otherwise allocate what a damaged header claims)."""
    try:
        size = zstandard.frame_content_size(body)
    except zstandard.ZstdError as e:
        raise CorruptObject(to_hex(oid), f"zstd: {e}") from None
    if size > limit:
        raise CorruptObject(to_hex(oid), "zstd frame claims more bytes than the object holds")
    return _decompressor().decompress(body, max_output_size=limit)


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
          oid: ObjectId, base: ObjectId | None, payload, flags: int = 0, gen: int = 0) -> bytes:
    head = _HEAD.pack(MAGIC, CODEC_WRITTEN[codec], codec, width, key, depth, flags, gen, data_len, check,
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


# -- byte planes, each compressed on its own ------------------------------------------------

_PLANE = struct.Struct("<BI")  # mode (0 stored, 1 zstd), stored length
_SPARSE = struct.Struct("<QBI")  # changed elements, positions mode, positions stored length
POS_GAPS = 2  # positions mode: gaps between changed elements (modes 0, 1: a raw or zstd bitmap)


_PROBE = 16 << 10


def _squeeze(plane, level: int) -> tuple[int, bytes | memoryview]:
    """(mode, bytes) of one plane: zstd, or the plane itself where zstd does not help
    (the mantissa planes of floats are near-random: storing them skips their decode).
    A large plane whose first 16 KiB do not compress by 1% is stored without trying."""
    if len(plane) > 8 * _PROBE and len(_compressor(level).compress(plane[:_PROBE])) > 0.99 * _PROBE:
        return 0, memoryview(plane).cast("B")
    z = _compressor(level).compress(plane)
    if len(z) < len(plane):
        return 1, z
    return 0, memoryview(plane).cast("B")


def _pack_planes(g: np.ndarray, width: int, level: int) -> bytes:
    """A grouped buffer as ``width`` planes of equal length, each squeezed on its own,
    then the tail (shorter than one element) as it is."""
    n = len(g) // width
    parts = []
    for i in range(width):
        mode, b = _squeeze(g[i * n:(i + 1) * n], level)
        parts += [_PLANE.pack(mode, len(b)), b]
    parts.append(memoryview(g[n * width:]).cast("B"))
    return b"".join(parts)


def _unpack_planes(payload: memoryview, total: int, width: int, oid: ObjectId) -> np.ndarray:
    """Inverse of :func:`_pack_planes` fused with :func:`ungroup`: each plane is decoded
    straight into its strided place in the element-ordered output."""
    n = total // width
    out = np.empty(total, dtype=np.uint8)
    dst = out[: n * width].reshape(n, width)
    pos = 0
    for i in range(width):
        if pos + _PLANE.size > len(payload):
            raise CorruptObject(to_hex(oid), "byte plane header past the end of the frame")
        mode, size = _PLANE.unpack_from(payload, pos)
        pos += _PLANE.size
        body = payload[pos:pos + size]
        pos += size
        if len(body) != size or mode > 1:
            raise CorruptObject(to_hex(oid), "byte plane out of range")
        plane = _unzstd(body, n, oid) if mode == 1 else body
        if len(plane) != n:
            raise CorruptObject(to_hex(oid), "byte plane has the wrong length")
        dst[:, i] = np.frombuffer(plane, dtype=np.uint8)
    tail = payload[pos:]
    if len(tail) != total - n * width:
        raise CorruptObject(to_hex(oid), "byte planes do not add up to the decoded length")
    out[n * width:] = np.frombuffer(tail, dtype=np.uint8)
    return out


def _rotate(buf: np.ndarray, width: int, inverse: bool = False, in_place: bool = False) -> np.ndarray:
    """Float bit patterns rotated left by one (sign to the lowest bit), or back; a tail
    shorter than one element is kept as it is. ``in_place``: ``buf`` (writable) is
    rotated and returned. Written with ``out=`` and one temporary: every fresh 4 MiB
    array costs about 1 ms of page faults here, and the plain expression made four
    (measured: 3.1 ms of an 8.9 ms fp32 keyframe decode; 0.4 ms this way)."""
    n = (len(buf) // width) * width
    out = buf if in_place else buf.copy()
    u = out[:n].view(_UINT[width])
    one, rest = _UINT[width](1), _UINT[width](8 * width - 1)
    first, second = (np.right_shift, np.left_shift) if inverse else (np.left_shift, np.right_shift)
    carried = second(u, rest)
    first(u, one, out=u)
    u |= carried
    return out


def _fgrouped_ok(width: int, key: int) -> bool:
    return key == KEY_FLOAT and width in (2, 4, 8)


SEGMENT_MIN = 4096  # elements: fewer would not pay for a segment's own entropy tables
_COUNT = struct.Struct("<I")
# v3 value segments: kind 0 holds byte planes; kind b (2 or 4) holds b-bit symbols packed
# 8 // b to a byte, the largest symbol marking an escape (the value, less the marker, in
# byte planes after them).
SYMBOL_BITS = (2, 4)
_SYMBOLS_MIN = 64  # values: a shorter segment is stored as byte planes without trying
# v3 SPARSE positions: the elements cut into up to GROUPS_MAX groups of contiguous base
# exponent classes, each group's positions (element order within the group) on its own.
POS_GROUPS = 3
GROUPS_MAX = 3  # a fourth group measured 0.5% smaller bitmaps and 12% slower decoding
_GROUP_BITS = 400  # what one more group's header and zstd frame cost, in bits (measured ~50 bytes)
# The estimated entropy of the grouped bitmaps over one bitmap's under which the encoder
# does not also build the element-order bitmap: on the MiniLM bf16 deltas every chunk
# estimated under 0.95 stored smaller grouped (0.76-0.95 of the element-order bytes).
_GROUPS_SURE = 0.9
_GROUP = struct.Struct("<IIBI")  # elements of the group, changed ones, positions mode, stored length


def _classes(bu: np.ndarray, width: int) -> np.ndarray:
    """The 8 bits after the sign of each element (a float's exponent: bf16, fp32 exactly,
    the top of fp16's and fp64's)."""
    return (bu >> _UINT[width](8 * width - 9)).astype(np.uint8)


_KEY_BITS = 24  # positions below this many bits fit under the class in one uint32 sort key


def _order(bu: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The stable order of base elements by their class (see _classes), and the classes
    in that order; None for bytes."""
    if width == 1:
        return None
    return _sorted(_classes(bu, width))


def _sorted(cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stable sort of ``cls``: (the permutation, the sorted classes)."""
    n = len(cls)
    if n >= 1 << _KEY_BITS:
        perm = np.argsort(cls, kind="stable")
        return perm, cls[perm]
    # The same order as a plain sort of unique keys (class above, position below): half
    # the time of the indirect stable argsort (measured 4.0 against 8.3 ms for the 1 Mi
    # elements of a 4 MiB fp32 chunk, 9.4 against 17 ms for bf16), and the sorted classes
    # come with it instead of a gather.
    key = cls.astype(np.uint32)
    key <<= _KEY_BITS
    key |= np.arange(n, dtype=np.uint32)
    key.sort()
    sorted_cls = (key >> _KEY_BITS).astype(np.uint8)
    key &= (1 << _KEY_BITS) - 1
    return key, sorted_cls


def _cuts(cs: np.ndarray) -> list[int]:
    """Segment bounds of the class-sorted ``cs``: where the class changes, segments of at
    least SEGMENT_MIN elements (smaller classes join their neighbour)."""
    cuts = [0]
    for b in (np.flatnonzero(cs[1:] != cs[:-1]) + 1).tolist():
        if b - cuts[-1] >= SEGMENT_MIN:
            cuts.append(b)
    if len(cuts) > 1 and len(cs) - cuts[-1] < SEGMENT_MIN:
        cuts.pop()
    cuts.append(len(cs))
    return cuts


def _pack_symbols(sym: np.ndarray, bits: int) -> np.ndarray:
    per = 8 // bits
    t = np.zeros(-(-len(sym) // per) * per, dtype=np.uint8)
    t[: len(sym)] = sym
    t = t.reshape(-1, per)
    out = t[:, 0].copy()
    for j in range(1, per):
        out |= t[:, j] << np.uint8(bits * j)
    return out


def _unpack_symbols(packed, bits: int, count: int) -> np.ndarray:
    per = 8 // bits
    p = np.frombuffer(packed, dtype=np.uint8)
    out = np.empty((len(p), per), dtype=np.uint8)
    mask = np.uint8((1 << bits) - 1)
    for j in range(per):
        np.bitwise_and(p >> np.uint8(bits * j), mask, out=out[:, j])
    return out.reshape(-1)[:count]


def _pack_values(s: np.ndarray, width: int, level: int) -> bytes:
    """One v3 segment of differences ``s`` (unsigned, ``width`` bytes): byte planes (kind
    0), or small values as packed symbols with escapes, whichever is smallest. Most bf16
    differences are +-1 ulp with a few larger ones: a byte-wise Huffman code spends ~1.5
    bits on what has ~1.1 bits of entropy; four symbols a byte let it spend ~1.15."""
    planes = None
    tries: tuple[int, ...] = ()
    if len(s) >= _SYMBOLS_MIN:
        # Which layouts to try, from the share of values each symbol width must escape
        # (measured on the MiniLM bf16 and fp32 deltas: under 1 in 16 escaped, the
        # narrower packing wins in 99% of segments; over 1 in 4, it never does).
        esc2, esc4 = (int(np.count_nonzero(s >= (1 << b) - 1)) for b in SYMBOL_BITS)
        if 16 * esc2 <= len(s):
            tries = (2,)
        elif 16 * esc4 <= len(s):
            tries = (2, 4) if 4 * esc2 <= len(s) else (4,)
        else:
            tries = tuple(b for b, e in zip(SYMBOL_BITS, (esc2, esc4)) if 4 * e <= len(s))
            planes = b"\0" + _pack_planes(group(s.view(np.uint8), width), width, level)
    else:
        planes = b"\0" + _pack_planes(group(s.view(np.uint8), width), width, level)
    best = planes
    for bits in tries:
        marker = (1 << bits) - 1
        big = s >= marker
        mode, packed = _squeeze(_pack_symbols(np.minimum(s, marker).astype(np.uint8), bits), level)
        parts = [bytes((bits,)), _PLANE.pack(mode, len(packed)), packed]
        if best is not None and len(packed) >= len(best):
            continue
        if big.any():
            esc = s[big] - _UINT[width](marker)
            parts.append(_pack_planes(group(esc.view(np.uint8), width), width, level))
        cand = b"".join(parts)
        if best is None or len(cand) < len(best):
            best = cand
    return best


def _unpack_values(body: memoryview, count: int, width: int, oid: ObjectId) -> np.ndarray:
    """Inverse of :func:`_pack_values`: ``count`` unsigned values of ``width`` bytes."""
    if len(body) < 1:
        raise CorruptObject(to_hex(oid), "delta segment is empty")
    kind = body[0]
    if kind == 0:
        return _unpack_planes(body[1:], count * width, width, oid).view(_UINT[width])
    if kind not in SYMBOL_BITS or 1 + _PLANE.size > len(body):
        raise CorruptObject(to_hex(oid), "delta segment of an unknown kind")
    mode, size = _PLANE.unpack_from(body, 1)
    pos = 1 + _PLANE.size
    packed = body[pos:pos + size]
    want = -(-count * kind // 8)
    if len(packed) != size or mode > 1:
        raise CorruptObject(to_hex(oid), "packed symbols out of range")
    if mode == 1:
        packed = _unzstd(packed, want, oid)
    if len(packed) != want:
        raise CorruptObject(to_hex(oid), "packed symbols have the wrong length")
    sym = _unpack_symbols(packed, kind, count)
    marker = (1 << kind) - 1
    out = sym.astype(_UINT[width])
    esc = np.flatnonzero(sym == marker)
    rest = body[pos + size:]
    if len(esc):
        big = _unpack_planes(rest, len(esc) * width, width, oid).view(_UINT[width])
        out[esc] = big + _UINT[width](marker)
    elif len(rest):
        raise CorruptObject(to_hex(oid), "delta segment longer than its symbols")
    return out


def _pack_sorted(vals: np.ndarray, bu: np.ndarray, width: int, level: int,
                 cls: np.ndarray | None = None) -> bytes:
    """Zig-zagged differences ``vals`` (one per element of ``bu``, the base elements they
    apply to; ``cls`` their classes if known) in exponent order, as v3 segments."""
    if width == 1:
        cuts = [0, len(vals)]
    else:
        if cls is None:
            cls = _classes(bu, width)
        perm, cs = _sorted(cls)
        vals = vals[perm]
        cuts = _cuts(cs)
    parts = [_COUNT.pack(len(cuts) - 1)]
    for a, b in zip(cuts, cuts[1:]):
        seg = _pack_values(vals[a:b], width, level)
        parts += [_COUNT.pack(b - a), _COUNT.pack(len(seg)), seg]
    return b"".join(parts)


def _unpack_sorted(payload: memoryview, bu: np.ndarray, width: int, oid: ObjectId,
                   version: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`_pack_sorted` (and of its v2 layout, segments of byte planes
    only): the differences in the order of ``bu``, and the bytes read."""
    n = len(bu)
    if len(payload) < _COUNT.size:
        raise CorruptObject(to_hex(oid), "delta segments missing")
    (nseg,) = _COUNT.unpack_from(payload, 0)
    pos = _COUNT.size
    out = np.empty(n, dtype=_UINT[width])
    at = 0
    for _ in range(nseg):
        if pos + 2 * _COUNT.size > len(payload):
            raise CorruptObject(to_hex(oid), "delta segment header past the end of the frame")
        (count,) = _COUNT.unpack_from(payload, pos)
        (size,) = _COUNT.unpack_from(payload, pos + _COUNT.size)
        pos += 2 * _COUNT.size
        if at + count > n or pos + size > len(payload):
            raise CorruptObject(to_hex(oid), "delta segment out of range")
        body = payload[pos:pos + size]
        if version >= 3:
            out[at:at + count] = _unpack_values(body, count, width, oid)
        else:
            out[at:at + count] = _unpack_planes(body, count * width, width, oid).view(_UINT[width])
        at += count
        pos += size
    if at != n:
        raise CorruptObject(to_hex(oid), "delta segments do not cover every element")
    order = _order(bu, width)
    if order is not None:
        sorted_vals, out = out, np.empty(n, dtype=_UINT[width])
        out[order[0]] = sorted_vals
    return out, pos


def _subs_payload(data: np.ndarray, base: np.ndarray, width: int, key: int, level: int) -> bytes:
    body, tail = _split(data, width)
    bbody, btail = _split(base, width)
    u, bu = body.view(_UINT[width]), bbody.view(_UINT[width])
    vals = _zigzag(_keys(u, width, key) - _keys(bu, width, key), width)
    return _pack_sorted(vals, bu, width, level) + (tail ^ btail).tobytes()


def _unsubs(payload: memoryview, base: np.ndarray, h: FrameHeader, oid: ObjectId) -> np.ndarray:
    width = h.width
    bbody, btail = _split(base, width)
    bu = bbody.view(_UINT[width])
    vals, pos = _unpack_sorted(payload, bu, width, oid, h.version)
    tail = payload[pos:]
    if len(tail) != len(btail):
        raise CorruptObject(to_hex(oid), "delta tail has the wrong length")
    k = _keys(bu, width, h.key) + _unzigzag(vals, width)
    return np.concatenate([_unkeys(k, width, h.key).view(np.uint8), btail ^ np.frombuffer(tail, np.uint8)])


def _positions(bits: np.ndarray, idx: np.ndarray, level: int) -> tuple[int, bytes | memoryview]:
    """(mode, bytes) of the set elements of the bool array ``bits`` (``idx`` their
    indices): a bitmap, stored (0) or zstd (1), or, when fewer than one in 8 is set, the
    gaps between them as byte-grouped uint32 (POS_GAPS) if that is smaller."""
    mode, bm = _squeeze(np.packbits(bits, bitorder="little"), level)
    if len(idx) * 8 < len(bits):
        # Few changes (an RL step moves ~1%): the gaps between changed elements cost
        # less than a bitmap (measured 0.0055 against 0.0090 of the bf16 file).
        gaps = np.diff(idx, prepend=-1).astype(np.uint32)
        g = _pack_planes(group(gaps.view(np.uint8), 4), 4, level)
        if len(g) < len(bm):
            return POS_GAPS, g
    return mode, bm


def _indices(body: memoryview, n: int, count: int, mode: int, oid: ObjectId) -> np.ndarray:
    """Inverse of :func:`_positions`: the ``count`` set indices among ``n`` elements."""
    if mode == POS_GAPS:
        gaps = _unpack_planes(body, 4 * count, 4, oid).view(np.uint32)
        if count and (gaps.min() == 0):
            raise CorruptObject(to_hex(oid), "sparse delta gaps out of range")
        idx = np.cumsum(gaps, dtype=np.int64) - 1
        if count and idx[-1] >= n:
            raise CorruptObject(to_hex(oid), "sparse delta gaps run past the chunk")
    elif mode <= 1:
        nbm = (n + 7) // 8
        bm = _unzstd(body, nbm, oid) if mode == 1 else body
        if len(bm) != nbm:
            raise CorruptObject(to_hex(oid), "sparse delta bitmap has the wrong length")
        # unpackbits gives 0/1 bytes: viewed as bool, flatnonzero is ~8x faster.
        bits = np.unpackbits(np.frombuffer(bm, np.uint8), count=n, bitorder="little").view(bool)
        idx = np.flatnonzero(bits)
    else:
        raise CorruptObject(to_hex(oid), "sparse delta positions of an unknown mode")
    if len(idx) != count:
        raise CorruptObject(to_hex(oid), "sparse delta bitmap disagrees with its count")
    return idx


def _group_of(cls: np.ndarray, cuts: list[int] | bytes) -> np.ndarray:
    """Each element's group: how many of the ascending class thresholds ``cuts`` its class reaches."""
    g = np.zeros(len(cls), dtype=np.uint8)
    for t in cuts:
        g += cls >= t
    return g


def _exponent_groups(cls: np.ndarray, changed: np.ndarray) -> tuple[list[int], float]:
    """Class thresholds cutting the elements into at most GROUPS_MAX groups of contiguous
    classes whose bitmaps cost least by their order-0 entropy (n H(changed / n) summed,
    plus _GROUP_BITS a group), estimated on every 8th element ([] when one group is
    best), and the estimated cost of those groups over one group's. An exact dynamic
    program over the classes present (at most 256)."""
    step = 8 if len(cls) >= 1 << 16 else 1
    cs = cls[::step]
    n = np.bincount(cs, minlength=256)
    present = np.flatnonzero(n)
    if len(present) < 2:
        return [], 1.0
    k = np.bincount(cs[changed[::step]], minlength=256)
    cn = np.concatenate(([0], np.cumsum(n[present]))).astype(np.float64)
    ck = np.concatenate(([0], np.cumsum(k[present]))).astype(np.float64)
    tot, hit = cn[None, :] - cn[:, None], ck[None, :] - ck[:, None]  # [i, j]: classes i..j-1
    with np.errstate(divide="ignore", invalid="ignore"):
        p = hit / tot
        ent = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    cost = np.where(tot > 0, np.nan_to_num(ent) * tot * step + _GROUP_BITS, np.inf)
    dp, args = [cost[0]], []
    for _ in range(1, GROUPS_MAX):
        t = dp[-1][:, None] + cost
        args.append(t.argmin(axis=0))
        dp.append(t.min(axis=0))
    last = len(present)
    g = min(range(GROUPS_MAX), key=lambda i: dp[i][last])
    cuts, j = [], last
    for i in range(g, 0, -1):
        j = int(args[i - 1][j])
        cuts.append(int(present[j]))
    return sorted(cuts), float(dp[g][last] / dp[0][last]) if dp[0][last] else 1.0


def _grouped_positions(changed: np.ndarray, cls: np.ndarray, cuts: list[int], level: int) -> bytes:
    """POS_GROUPS: the number of groups, their thresholds, then each group's positions."""
    grp = _group_of(cls, cuts)
    parts = [bytes((len(cuts) + 1, *cuts))]
    for g in range(len(cuts) + 1):
        bits = np.compress(grp == g, changed)  # 15x faster than changed[grp == g] (no branches)
        idx = np.flatnonzero(bits)
        mode, b = _positions(bits, idx, level)
        parts += [_GROUP.pack(len(bits), len(idx), mode, len(b)), b]
    return b"".join(parts)


_DEPOSIT: list = []  # built on first use (numpy is imported lazily)


def _deposit_table() -> np.ndarray:
    """Entry m << 8 | v: the low popcount(m) bits of v placed, in order, at the set bits of m."""
    if not _DEPOSIT:
        bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
        rank = np.cumsum(bits, axis=1) - bits  # set bits of m below each bit
        v = np.arange(256, dtype=np.uint16)
        take = (v[None, :, None] >> rank[:, None, :].astype(np.uint16)) & 1
        table = np.packbits((take & bits[:, None, :]).astype(np.uint8), axis=2, bitorder="little")
        _DEPOSIT[:] = [table.reshape(65536)]
    return _DEPOSIT[0]


def _group_bits(body: memoryview, n: int, count: int, mode: int, oid: ObjectId) -> np.ndarray:
    """A group's positions as its bitmap (little-endian bits, one per member), as uint16
    windows: entry i holds bytes i and i + 1 (what :func:`_deposit` reads)."""
    nbm = (n + 7) // 8
    if mode == POS_GAPS:
        bits = np.zeros(n, dtype=bool)
        bits[_indices(body, n, count, mode, oid)] = True
        bm = np.packbits(bits, bitorder="little")
    elif mode <= 1:
        bm = np.frombuffer(_unzstd(body, nbm, oid) if mode == 1 else body, dtype=np.uint8)
        if len(bm) != nbm:
            raise CorruptObject(to_hex(oid), "sparse delta bitmap has the wrong length")
    else:
        raise CorruptObject(to_hex(oid), "sparse delta positions of an unknown mode")
    w = np.zeros(nbm + 1, dtype=np.uint16)
    w[:nbm] = bm
    if n % 8:
        w[nbm - 1] &= (1 << (n % 8)) - 1  # bits past the group's end are not positions
    if int(np.bitwise_count(w[:nbm]).sum(dtype=np.int64)) != count:
        raise CorruptObject(to_hex(oid), "sparse delta bitmap disagrees with its count")
    w[:nbm] |= w[1:] << np.uint16(8)
    return w


def _deposit(acc: np.ndarray, m: np.ndarray, pc: np.ndarray, w: np.ndarray) -> None:
    """OR into the element-order bitmap ``acc`` a group's bitmap in member order (``w``,
    from :func:`_group_bits`), its members given by the packed bitmap ``m`` (``pc`` the
    popcount of each of its bytes): a table-driven bit deposit, byte by byte. Nothing as
    long as the chunk's elements is built; listing the members with flatnonzero and
    indexing them measured 2x slower."""
    off = np.cumsum(pc, dtype=np.int64 if len(m) >= 1 << 28 else np.int32)  # int32: ~20% faster
    off -= pc
    v = w.take(off >> 3)
    v >>= (off & 7).astype(np.uint16)
    # Bits of v above popcount(m) are never deposited (the table ignores them): keeping
    # the low byte is enough.
    v &= np.uint16(0xFF)
    v |= m.astype(np.uint16) << np.uint16(8)
    acc |= _deposit_table().take(v)


def _grouped_indices(body: memoryview, bu: np.ndarray, width: int, count: int, oid: ObjectId) -> np.ndarray:
    """Inverse of :func:`_grouped_positions`: the changed indices, in element order."""
    ngroups = body[0] if len(body) else 0
    if width == 1 or not 2 <= ngroups <= GROUPS_MAX or len(body) < ngroups:
        raise CorruptObject(to_hex(oid), "sparse delta groups out of range")
    cuts = bytes(body[1:ngroups])
    if any(a >= b for a, b in zip(cuts, cuts[1:])):
        raise CorruptObject(to_hex(oid), "sparse delta group thresholds out of order")
    cls = _classes(bu, width)
    # Packed "class >= threshold" bitmaps (one pass over the elements each); a group's
    # members are one and not the next, computed on bytes.
    above = [np.packbits(cls >= t, bitorder="little") for t in cuts]
    nbytes = (len(bu) + 7) // 8
    everyone = np.full(nbytes, 0xFF, dtype=np.uint8)
    if len(bu) % 8:
        everyone[-1] = (1 << (len(bu) % 8)) - 1
    acc = np.zeros(nbytes, dtype=np.uint8)
    pos = ngroups
    for g in range(ngroups):
        if pos + _GROUP.size > len(body):
            raise CorruptObject(to_hex(oid), "sparse delta group header past the end of its positions")
        n, k, mode, size = _GROUP.unpack_from(body, pos)
        pos += _GROUP.size
        m = above[g - 1] if g else everyone
        if g < ngroups - 1:
            m = m & ~above[g]
        pc = np.bitwise_count(m)
        if n != int(pc.sum(dtype=np.int64)) or k > n or pos + size > len(body):
            raise CorruptObject(to_hex(oid), "sparse delta group does not match its base")
        w = _group_bits(body[pos:pos + size], n, k, mode, oid)
        if k:
            _deposit(acc, m, pc, w)
        pos += size
    if pos != len(body):
        raise CorruptObject(to_hex(oid), "sparse delta positions longer than their groups")
    idx = np.flatnonzero(np.unpackbits(acc, count=len(bu), bitorder="little").view(bool))
    if len(idx) != count:
        raise CorruptObject(to_hex(oid), "sparse delta groups disagree with its count")
    return idx


def _sparse_payload(data: np.ndarray, base: np.ndarray, width: int, key: int, level: int,
                    cuts: list[int] | None = None) -> bytes:
    """The SPARSE payload; its positions in element order or by exponent groups, whichever
    is smaller (``cuts``, thresholds of groups or [] for element order, forces a layout)."""
    body, tail = _split(data, width)
    bbody, btail = _split(base, width)
    u, bu = body.view(_UINT[width]), bbody.view(_UINT[width])
    changed = u != bu
    idx = np.flatnonzero(changed)  # one index pass; take() is faster than three masks
    bc = bu.take(idx)
    vals = _zigzag(_keys(u.take(idx), width, key) - _keys(bc, width, key), width)
    cls = _classes(bu, width) if width > 1 else None
    forced = cuts is not None
    ratio = 1.0
    if cls is not None and not forced:
        cuts, ratio = _exponent_groups(cls, changed)
    mode, pos = POS_GAPS, b""
    if not (cuts and width > 1) or (not forced and ratio > _GROUPS_SURE):
        mode, pos = _positions(changed, idx, level)
    if cls is not None:
        # Whether an element changed depends on its magnitude (in bf16 an update must
        # cross half an ulp): bitmaps of groups of exponents measured 0.0280 -> 0.0214 of
        # the bf16 series against one bitmap in element order.
        if cuts:
            g = _grouped_positions(changed, cls, cuts, level)
            if not pos or len(g) < len(pos):
                mode, pos = POS_GROUPS, g
        cls = cls.take(idx)
    return b"".join((_SPARSE.pack(len(bc), mode, len(pos)), pos, _pack_sorted(vals, bc, width, level, cls),
                     (tail ^ btail).tobytes()))


def _unsparse(payload: memoryview, base: np.ndarray, h: FrameHeader, oid: ObjectId) -> np.ndarray:
    width = h.width
    n_el = h.decoded_len // width
    if len(payload) < _SPARSE.size:
        raise CorruptObject(to_hex(oid), "sparse delta shorter than its header")
    count, mode, size = _SPARSE.unpack_from(payload, 0)
    pos = _SPARSE.size
    body = payload[pos:pos + size]
    if len(body) != size or mode > (POS_GROUPS if h.version >= 3 else POS_GAPS) or count > n_el:
        raise CorruptObject(to_hex(oid), "sparse delta header out of range")
    out = base.copy()
    ou = out[: n_el * width].view(_UINT[width])
    if mode == POS_GROUPS:
        idx = _grouped_indices(body, ou, width, count, oid)
    else:
        idx = _indices(body, n_el, count, mode, oid)
    bc = ou.take(idx)
    z, used = _unpack_sorted(payload[pos + size:], bc, width, oid, h.version)
    tail = payload[pos + size + used:]
    if len(tail) != h.decoded_len - n_el * width:
        raise CorruptObject(to_hex(oid), "delta tail has the wrong length")
    ou[idx] = _unkeys(_keys(bc, width, h.key) + _unzigzag(z, width), width, h.key)
    out[n_el * width:] ^= np.frombuffer(tail, np.uint8)
    return out


# -- encode / decode ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Base:
    """A candidate delta base: its id, decoded bytes and chain depth."""

    oid: ObjectId
    data: bytes
    depth: int


def _payload(codec: int, buf: np.ndarray, bbuf: np.ndarray | None, width: int, key: int,
             level: int) -> bytes:
    """The encoded payload of ``buf`` under ``codec`` (the estimate runs this on samples)."""
    if codec == GROUPED:
        return _compressor(level).compress(group(buf, width))
    if codec == FGROUPED:
        return _pack_planes(group(_rotate(buf, width), width), width, level)
    if codec == SPARSE:
        return _sparse_payload(buf, bbuf, width, key, level)
    if codec == SUBS:
        return _subs_payload(buf, bbuf, width, key, level)
    return _compressor(level).compress(group(_delta(codec, buf, bbuf, width, key), width))


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
        if len(candidates) > 1:
            sel = _sample(buf, width)
            s, bs = buf[sel], bbuf[sel]
            sizes = {c: len(_payload(c, s, bs, width, key, 1)) for c in candidates}
            codec = min(candidates, key=lambda c: (sizes[c], c))
        else:
            codec = keyframe
        return encode_as(codec, data, oid, width=width, key=key, level=level, base=base, gen=gen,
                         structured=structured)
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
    payload = data if codec == RAW else _payload(codec, buf, bbuf, width, key, level)
    use_base, depth = (base.oid, base.depth + 1) if codec in DELTA_CODECS else (None, 0)
    if len(payload) + _CHECK.size >= len(buf) and codec != RAW:
        codec, payload, use_base, depth = RAW, data, None, 0
    if CODEC_SINCE[codec] >= 2:
        # v2 payloads are many small zstd frames and plane headers: a checksum of the
        # payload catches a flipped bit zstd ignores (reserved header bits) before parsing.
        payload = _CHECK.pack(checksum(payload)) + payload
    return _pack(codec, width, key, depth, len(buf), checksum(data), oid, use_base, payload,
                 FLAG_STRUCTURED if structured else 0, gen if use_base is None else 0)


def decode(frame: bytes | memoryview, oid: ObjectId,
           get_base: Callable[[ObjectId], bytes] | None = None,
           header: FrameHeader | None = None) -> bytes:
    """Decode and verify a frame; ``get_base`` returns the decoded bytes of a base id."""
    h = header or parse_header(frame, oid)
    payload = memoryview(frame)[HEADER_SIZE:]  # no copy of the payload
    if CODEC_SINCE[h.codec] >= 2:
        payload = _checked_payload(payload, oid)
    try:
        if h.codec == RAW:
            out = bytes(payload)
        elif h.codec == ZSTD:
            out = _unzstd(payload, h.decoded_len, oid)
        elif h.codec == FGROUPED:
            if h.width not in _UINT:
                raise CorruptObject(to_hex(oid), "fgrouped frame with an unsupported width")
            out = _rotate(_unpack_planes(payload, h.decoded_len, h.width, oid), h.width, inverse=True,
                          in_place=True).tobytes()
        elif h.codec in (SPARSE, SUBS):
            if h.width not in _UINT:
                raise CorruptObject(to_hex(oid), f"{h.codec_name} delta with an unsupported width")
            fn = _unsparse if h.codec == SPARSE else _unsubs
            out = fn(payload, _base_of(h, oid, get_base), h, oid).tobytes()
        else:
            raw = _unzstd(payload, h.decoded_len, oid)
            if len(raw) != h.decoded_len:
                raise CorruptObject(to_hex(oid), "decoded length mismatch")
            t = ungroup(raw, h.width)
            if h.codec == GROUPED:
                out = t.tobytes()
            else:
                if h.codec == SUB and h.width not in _UINT:
                    raise CorruptObject(to_hex(oid), "SUB delta with an unsupported width")
                out = _undelta(h.codec, t, _base_of(h, oid, get_base), h.width, h.key).tobytes()
    except zstandard.ZstdError as e:
        raise CorruptObject(to_hex(oid), f"zstd: {e}") from None
    if len(out) != h.decoded_len or checksum(out) != h.check:
        raise CorruptObject(to_hex(oid), "decoded bytes fail their xxh3 checksum")
    return out


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
    """The entropy-coded streams of a frame, decompressed but not un-transformed (byte
    planes, bitmaps, each on its own): what the benchmark measures order-0 entropy of."""
    h = parse_header(frame, oid)
    payload = memoryview(frame)[HEADER_SIZE:]
    if CODEC_SINCE[h.codec] >= 2:
        payload = _checked_payload(payload, oid)
    d = _decompressor()
    if h.codec in (GROUPED, XOR, SUB, ZSTD):
        return [d.decompress(payload, max_output_size=h.decoded_len)]
    if h.codec == RAW:
        return [bytes(payload)]
    out: list[bytes] = []

    def planes(pos: int, width: int = h.width) -> int:
        for _ in range(width):
            mode, size = _PLANE.unpack_from(payload, pos)
            body = payload[pos + _PLANE.size:pos + _PLANE.size + size]
            out.append(d.decompress(body, max_output_size=h.decoded_len) if mode else bytes(body))
            pos += _PLANE.size + size
        return pos

    if h.codec == FGROUPED:
        planes(0)
        return out

    def positions(pos: int, mode: int, size: int) -> None:
        if mode == POS_GAPS:
            planes(pos, 4)
        else:
            bm = payload[pos:pos + size]
            out.append(d.decompress(bm, max_output_size=h.decoded_len) if mode else bytes(bm))

    pos = 0
    if h.codec == SPARSE:
        _count, mode, size = _SPARSE.unpack_from(payload, 0)
        if mode == POS_GROUPS:
            at = _SPARSE.size + payload[_SPARSE.size]
            for _ in range(payload[_SPARSE.size]):
                _n, _k, gmode, gsize = _GROUP.unpack_from(payload, at)
                positions(at + _GROUP.size, gmode, gsize)
                at += _GROUP.size + gsize
        else:
            positions(_SPARSE.size, mode, size)
        pos = _SPARSE.size + size
    (nseg,) = _COUNT.unpack_from(payload, pos)
    pos += _COUNT.size
    for _ in range(nseg):
        (size,) = _COUNT.unpack_from(payload, pos + _COUNT.size)
        at = pos + 2 * _COUNT.size
        kind = payload[at] if h.version >= 3 else 0
        if h.version < 3:
            planes(at)
        elif kind == 0:
            planes(at + 1)
        else:
            mode, psize = _PLANE.unpack_from(payload, at + 1)
            body = payload[at + 1 + _PLANE.size:at + 1 + _PLANE.size + psize]
            out.append(d.decompress(body, max_output_size=h.decoded_len) if mode else bytes(body))
            if at + 1 + _PLANE.size + psize < pos + 2 * _COUNT.size + size:
                planes(at + 1 + _PLANE.size + psize)
        pos += 2 * _COUNT.size + size
    return out
