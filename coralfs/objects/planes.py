"""Byte planes and element transforms the codecs share (coralfs/objects/codecs.py): zstd
with per-thread contexts, byte grouping, order-preserving keys, zig-zag, XOR/SUB deltas,
planes compressed one by one, the float sign rotation of FGROUPED."""

from __future__ import annotations

import struct
import threading

import zstandard

from .dtypes import KEY_FLOAT, KEY_SIGNED
from .errors import CorruptObject
from .ids import ObjectId, to_hex
from .lazy import LazyMapping, lazy_module

np = lazy_module("numpy")

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


def _unkeys(k: np.ndarray, width: int, key: int, in_place: bool = False) -> np.ndarray:
    """Inverse of :func:`_keys`; ``in_place``: ``k`` (writable, owned) is overwritten and
    returned, with one temporary instead of three (each fresh array of a chunk costs its
    page faults)."""
    bits = 8 * width
    sign = _UINT[width](1 << (bits - 1))
    if key == KEY_SIGNED:
        if in_place:
            k ^= sign
            return k
        return k ^ sign
    if key == KEY_FLOAT:
        spread = (k.view(np.dtype(f"i{width}")) >> (bits - 1)).view(_UINT[width])
        if in_place:
            np.invert(spread, out=spread)
            spread |= sign
            k ^= spread
            return k
        return k ^ (~spread | sign)
    return k


def _zigzag(d: np.ndarray, width: int) -> np.ndarray:
    s = d.view(np.dtype(f"i{width}"))
    return ((s << 1) ^ (s >> (8 * width - 1))).view(_UINT[width])


def _unzigzag(z: np.ndarray, width: int, in_place: bool = False) -> np.ndarray:
    """Inverse of :func:`_zigzag`; ``in_place``: ``z`` (writable, owned) is overwritten
    and returned, with one temporary (measured: a third of the time of the expression)."""
    one = _UINT[width](1)
    if in_place:
        low = z & one
        np.negative(low, out=low)   # 0 or all ones (unsigned wrap-around)
        z >>= one
        z ^= low
        return z
    return (z >> one) ^ (_UINT[width](0) - (z & one))


def _split(buf: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    n = (len(buf) // width) * width
    return buf[:n], buf[n:]


# -- byte planes, each compressed on its own ------------------------------------------------

_PLANE = struct.Struct("<BI")  # mode (0 stored, 1 zstd), stored length


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
