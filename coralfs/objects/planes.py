"""Byte planes and element transforms the codecs share (coralfs/objects/codecs.py): zstd
with per-thread contexts, byte grouping, order-preserving keys, zig-zag, XOR/SUB deltas,
planes compressed one by one, the float sign rotation of FGROUPED."""

from __future__ import annotations

import struct
import threading

import zstandard

from . import entropy, native
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

def group(buf: np.ndarray, width: int, rotate: bool = False) -> np.ndarray:
    """Split elements into byte planes: all first bytes, then all second bytes, ...
    A tail shorter than one element is appended as is. Returns a uint8 array (zstd reads
    it through the buffer protocol: no copy into a bytes object). ``rotate``: the planes
    of :func:`_rotate` of the elements (FGROUPED). The compiled kernel does either in one
    pass (measured 0.35 against 2.4 ms for a 4 MiB bf16 chunk rotated)."""
    if width == 1:
        return _rotate(buf, width) if rotate else buf
    n = len(buf) // width
    out = np.empty(len(buf), dtype=np.uint8)
    kern = native.kernel
    if kern is not None and width in (2, 4, 8):
        kern.group(buf[: n * width], out[: n * width], width, int(rotate))
        out[n * width:] = buf[n * width:]
        return out
    if rotate:
        buf = _rotate(buf, width)
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
    out = np.empty(len(arr), dtype=np.uint8)
    _ungroup_into(data, out, width)
    return out


def _ungroup_into(data, out: np.ndarray, width: int) -> None:
    """:func:`ungroup` of the bytes ``data`` written into ``out`` (uint8, as long)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    n = len(arr) // width
    _interleave([arr[i * n:(i + 1) * n] for i in range(width)], arr[n * width:], out, n, width)


def _interleave(parts: list, tail, out: np.ndarray, n: int, width: int) -> None:
    """The ``width`` byte planes ``parts`` (``n`` bytes each) as ``n`` elements into
    ``out``, then the bytes ``tail`` after them: the compiled kernel interleaves them in
    one pass where it is built (widths 2, 4, 8); otherwise each plane is copied to its
    strided place (~8x the time)."""
    kern = native.kernel
    if kern is not None and width in (2, 4, 8):
        kern.ungroup(parts, out[: n * width], width)
    else:
        dst = out[: n * width].reshape(n, width)
        for i, plane in enumerate(parts):
            dst[:, i] = np.frombuffer(plane, dtype=np.uint8)
    out[n * width:] = np.frombuffer(tail, dtype=np.uint8)


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
        # One fresh array, worked on in place (the expression made three: each fresh
        # 4 MiB array costs its page faults).
        spread = (u.view(np.dtype(f"i{width}")) >> (bits - 1)).view(_UINT[width])
        spread |= sign
        spread ^= u
        return spread
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
    z = s << 1
    z ^= s >> (8 * width - 1)  # in place: one fresh array fewer
    return z.view(_UINT[width])


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


# -- packed small symbols (SUBS / SPARSE values, ranked planes) -----------------------------

def _pack_symbols(sym: np.ndarray, bits: int) -> np.ndarray:
    """Symbols below ``1 << bits`` (2 or 4), ``8 // bits`` to a byte, the first in the low bits."""
    if bits == 4:
        global _SAME_PAIRS
        if _SAME_PAIRS is None:
            _SAME_PAIRS = _nibble_pairs(np.arange(256, dtype=np.uint8) & np.uint8(15))
        return _pack_nibbles(sym, _SAME_PAIRS)
    per = 8 // bits
    t = np.zeros(-(-len(sym) // per) * per, dtype=np.uint8)
    t[: len(sym)] = sym
    t = t.reshape(-1, per)
    out = t[:, 0].copy()
    for j in range(1, per):
        out |= t[:, j] << np.uint8(bits * j)
    return out


_SAME_PAIRS = None  # _nibble_pairs of the symbols themselves (made on first use)


def _nibble_pairs(nibble_of: np.ndarray) -> np.ndarray:
    """The 64 Ki table of :func:`_pack_nibbles` for a map of the 256 byte values to 4 bits."""
    r = nibble_of.astype(np.uint8)
    return (r[None, :] | (r[:, None] << np.uint8(4))).reshape(65536)  # index hi * 256 + lo


def _pack_nibbles(values: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """The one writer of the 4-bit layout of :func:`_pack_symbols` (two to a byte, the
    first in the low bits, a missing last one as 0), of the bytes ``values`` mapped to 4
    bits by the table ``pair`` (:func:`_nibble_pairs`): each pair of bytes, read as one
    uint16, looks up its packed byte (measured ~4x faster than mapping, then packing)."""
    n = len(values)
    v = np.ascontiguousarray(values, dtype=np.uint8)
    if n % 2:
        v = np.append(v, np.uint8(0))
    packed = pair.take(v.view(np.uint16), mode="clip")  # every index is in range
    if n % 2:
        packed[-1] &= np.uint8(0x0F)  # the missing last symbol is 0, whatever 0 maps to
    return packed


def _unpack_symbols(packed, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`_pack_symbols`: the first ``count`` symbols."""
    per = 8 // bits
    p = np.frombuffer(packed, dtype=np.uint8)
    out = np.empty((len(p), per), dtype=np.uint8)
    mask = np.uint8((1 << bits) - 1)
    for j in range(per):
        np.bitwise_and(p >> np.uint8(bits * j), mask, out=out[:, j])
    return out.reshape(-1)[:count]



# -- byte planes, each compressed on its own ------------------------------------------------

_PLANE = struct.Struct("<BI")  # mode (0 stored, 1 zstd, 2 ranks), stored length
PLANE_RANKS = 2  # plane mode of frame version 4 (FGROUPED only): see _rank_plane
RANKS = 15  # ranked byte values of a PLANE_RANKS plane; rank 15 escapes
_RANK_STEP = 16  # the ranks are chosen by the counts of every 16th byte
# A plane of at least _RANK_SURE_MIN bytes whose ranks are smaller than _RANK_SURE of what
# zstd makes of four spread 32 KiB slices (scaled) is stored as ranks without compressing
# it whole with zstd too (12 ms of a 4 MiB bf16 chunk); otherwise both are compared.
_RANK_SURE_MIN = 1 << 20
_RANK_SURE = 0.95
_ESCAPES = struct.Struct("<I")


_PROBE = 16 << 10


def _squeeze(plane, level: int) -> tuple[int, bytes | memoryview]:
    """(mode, bytes) of one plane: zstd, or the plane itself where zstd does not help
    (the mantissa planes of floats are near-random: storing them skips their decode),
    or entropy-coded (entropy.RANS) where that is clearly smaller than either.
    A large plane whose first 16 KiB do not compress by 1% is stored without trying."""
    if len(plane) > 8 * _PROBE and len(_compressor(level).compress(plane[:_PROBE])) > 0.99 * _PROBE:
        return 0, memoryview(plane).cast("B")
    z = _compressor(level).compress(plane)
    mode, out = (1, z) if len(z) < len(plane) else (0, memoryview(plane).cast("B"))
    r = entropy.encode(plane, len(out))
    if r is not None:
        _local.rans = True
        return entropy.RANS, r
    return mode, out


def rans_used(reset: bool = False) -> bool:
    """Whether :func:`_squeeze` entropy-coded a stream in this thread since the last reset
    (the frame is then version entropy.SINCE); ``reset``: start over."""
    used = getattr(_local, "rans", False)
    if reset:
        _local.rans = False
    return used


def _unsqueeze(mode: int, body, n: int, oid: ObjectId, rans: bool, what: str = "stream") -> bytes | memoryview:
    """Inverse of :func:`_squeeze` for a stream of ``n`` bytes (the caller checks the
    length); ``rans``: the frame's version allows entropy-coded streams. Any other mode is
    corrupt, named by ``what``."""
    if mode == 0:
        return body
    if mode == 1:
        return _unzstd(body, n, oid)
    if mode == entropy.RANS and rans:
        return entropy.decode(body, n, oid)
    raise CorruptObject(to_hex(oid), f"{what} out of range")


def _rank_plane(plane: np.ndarray, level: int) -> bytes:
    """A plane as the ranks of its bytes (PLANE_RANKS): the RANKS most frequent values,
    each byte's rank 0-14 packed two to a byte, any other value rank 15 with the value in
    a side stream of escapes; both squeezed. A float's exponent has a few dominant values:
    zstd's byte-wise Huffman code spends at least a bit on each and codes only what one
    byte shows, the packed ranks let it code two exponents a symbol. Layout: the number
    of ranked values, those values by rank, the number of escapes, the packed ranks and
    the escapes each as a plane (mode, length, bytes)."""
    # The ranks by the counts of every 16th byte (bincount casts to intp: the whole
    # plane cost 6 ms of a 4 MiB bf16 chunk's ~30 ms encode); a value the sample misses
    # is an escape, which costs bytes, never exactness.
    counts = np.bincount(plane[::_RANK_STEP], minlength=256)
    top = np.argsort(-counts, kind="stable")[:RANKS]
    top = top[counts[top] > 0]
    rank_of = np.full(256, RANKS, dtype=np.uint8)
    rank_of[top] = np.arange(len(top), dtype=np.uint8)
    kern = native.kernel
    if kern is not None:
        # The ranks and the escapes in one pass of the compiled kernel.
        packed = np.empty((len(plane) + 1) // 2, dtype=np.uint8)
        esc = np.empty(len(plane), dtype=np.uint8)
        nesc = kern.rank_plane(plane, rank_of, packed, esc)
        esc = esc[:nesc]
    else:
        packed = _pack_nibbles(plane, _nibble_pairs(rank_of))
        at = _escapes_at(packed, len(plane))
        nesc = len(at)
        esc = plane.take(at)
    m1, packed = _squeeze(packed, level)
    m2, escaped = _squeeze(esc, level)
    return b"".join((bytes((len(top),)), top.astype(np.uint8).tobytes(), _ESCAPES.pack(nesc),
                     _PLANE.pack(m1, len(packed)), packed, _PLANE.pack(m2, len(escaped)), escaped))


def _escapes_at(packed: np.ndarray, n: int) -> np.ndarray:
    """The positions (of ``n``) whose packed rank is 15, ascending: the packed bytes holding
    one are found with a few byte-wide comparisons, then their two nibbles looked at
    (escapes are rare: a pass over the ``n`` ranks would cost more than decoding them)."""
    hit = packed >= np.uint8(RANKS << 4)
    hit |= (packed & np.uint8(15)) == RANKS
    cand = np.flatnonzero(hit)
    pc = packed.take(cand)
    which = np.empty((len(cand), 2), dtype=bool)
    np.equal(pc & np.uint8(15), RANKS, out=which[:, 0])
    np.equal(pc >> np.uint8(4), RANKS, out=which[:, 1])
    at = np.empty((len(cand), 2), dtype=np.int64)
    at[:, 0] = 2 * cand
    at[:, 1] = at[:, 0] + 1
    at = at[which]
    return at[at < n] if len(at) and at[-1] >= n else at


def _rank_streams(body, n: int, oid: ObjectId, rans: bool) -> tuple[int, bytes, int, bytes]:
    """The parts of a PLANE_RANKS plane of ``n`` bytes: (ranked values, packed ranks,
    escape count, escapes), checked for length and decompressed."""
    k = body[0] if len(body) else RANKS + 1
    pos = 1 + k
    if k > RANKS or pos + _ESCAPES.size > len(body):
        raise CorruptObject(to_hex(oid), "ranked byte plane header out of range")
    (nesc,) = _ESCAPES.unpack_from(body, pos)
    pos += _ESCAPES.size
    streams = []
    for want in ((n + 1) // 2, nesc):
        if pos + _PLANE.size > len(body) or nesc > n:
            raise CorruptObject(to_hex(oid), "ranked byte plane header out of range")
        mode, size = _PLANE.unpack_from(body, pos)
        pos += _PLANE.size
        part = body[pos:pos + size]
        pos += size
        if len(part) != size:
            raise CorruptObject(to_hex(oid), "ranked byte plane out of range")
        part = _unsqueeze(mode, part, want, oid, rans, "ranked byte plane")
        if len(part) != want:
            raise CorruptObject(to_hex(oid), "ranked byte plane has the wrong length")
        streams.append(part)
    if pos != len(body):
        raise CorruptObject(to_hex(oid), "ranked byte plane longer than its parts")
    return k, streams[0], nesc, streams[1]


# A thread keeps its scratch buffer up to this many uint32 (16 MiB: the plane of a 32 MiB
# bf16 chunk); a larger plane (big configured chunks, a damaged frame) gets a buffer of its
# own, so no thread holds more than this after a decode.
SCRATCH_KEEP = 1 << 22


def _scratch(count: int) -> np.ndarray:
    """This thread's reusable uint32 buffer of ``count`` elements (grown up to
    SCRATCH_KEEP), or a fresh one past that."""
    if count > SCRATCH_KEEP:
        return np.empty(count, dtype=np.uint32)
    buf = getattr(_local, "scratch", None)
    if buf is None or len(buf) < count:
        buf = _local.scratch = np.empty(max(count, 1 << 19), dtype=np.uint32)
    return buf[:count]


QUADS_KEPT = 4  # rank tables a thread keeps (256 KiB each): a model's chunks share a few


def _quad_table(values: bytes) -> np.ndarray:
    """The 64 Ki uint32 table of :func:`_unrank_plane` for the ranked ``values`` (four
    ranks to four bytes), built by outer ORs (~50 us) or taken from this thread's last
    QUADS_KEPT (the exponent planes of one tensor's chunks mostly rank the same values)."""
    kept = getattr(_local, "quads", None)
    if kept is None:
        kept = _local.quads = {}
    quad = kept.pop(values, None)
    if quad is None:
        lut = np.zeros(16, dtype=np.uint32)
        lut[:len(values)] = np.frombuffer(values, dtype=np.uint8)
        pairs = (lut[None, :] | (lut[:, None] << np.uint32(8))).reshape(256)
        quad = (pairs[None, :] | (pairs[:, None] << np.uint32(16))).reshape(65536)
        quad.flags.writeable = False
        if len(kept) >= QUADS_KEPT:
            del kept[next(iter(kept))]  # the least recently used
    kept[values] = quad  # most recent last
    return quad


def _unrank_plane(body, n: int, oid: ObjectId, own: bool = False, *, rans: bool) -> np.ndarray:
    """Inverse of :func:`_rank_plane`: the ``n`` bytes of the plane (a view of this thread's
    scratch buffer, valid until its next call; ``own``: a buffer of its own). Each packed byte
    (two ranks) becomes two values in one table lookup; escapes are placed where rank 15
    is. Ranks past the table (a damaged plane) decode to 0: the frame's checksum of the
    decoded bytes refuses the result. ``rans``: its streams may be entropy-coded."""
    k, packed, nesc, esc = _rank_streams(body, n, oid, rans)
    p = np.frombuffer(packed, dtype=np.uint8)
    # Two packed bytes (four ranks), read as one little-endian uint16 (index hi * 256 +
    # lo), give four values in one lookup of a 64 Ki table (mode="clip": every index is in
    # range, and take skips its checks; measured 0.65 ms for 1 Mi packed bytes against
    # 2.1 ms a byte at a time).
    quad = _quad_table(bytes(body[1:1 + k]))
    q = p if len(p) % 2 == 0 else np.append(p, np.uint8(0))
    # Into this thread's scratch buffer: the caller interleaves the plane into its place
    # before the next ranked plane, and a fresh array costs its page faults on every chunk.
    words = np.empty(len(q) // 2, dtype=np.uint32) if own else _scratch(len(q) // 2)
    out = np.take(quad, q.view(np.uint16), mode="clip", out=words).view(np.uint8)[:n]
    if nesc:
        idx = _escapes_at(p, n)
        if len(idx) != nesc:
            raise CorruptObject(to_hex(oid), "ranked byte plane disagrees with its escape count")
        out[idx] = np.frombuffer(esc, dtype=np.uint8)
    return out


def _pack_planes(g: np.ndarray, width: int, level: int, ranked: tuple[int, ...] = (),
                 force: bool = False, modes: list[int] | None = None) -> bytes:
    """A grouped buffer as ``width`` planes of equal length, each squeezed on its own,
    then the tail (shorter than one element) as it is. The planes numbered in ``ranked``
    are also tried as ranks (PLANE_RANKS, where zstd compresses them) and stored so if
    smaller; ``force``: always (tests). ``modes``: receives each plane's mode."""
    n = len(g) // width
    parts = []
    for i in range(width):
        plane = g[i * n:(i + 1) * n]
        r = _rank_plane(plane, level) if i in ranked and n else None
        if r is not None and (force or (n >= _RANK_SURE_MIN and len(r) < _RANK_SURE * _zstd_estimate(plane, level))):
            mode, b = PLANE_RANKS, r
        else:
            mode, b = _squeeze(plane, level)
            if r is not None and mode in (1, entropy.RANS) and len(r) < len(b):
                mode, b = PLANE_RANKS, r
        parts += [_PLANE.pack(mode, len(b)), b]
        if modes is not None:
            modes.append(mode)
    parts.append(memoryview(g[n * width:]).cast("B"))
    return b"".join(parts)


def _zstd_estimate(plane: np.ndarray, level: int) -> float:
    """What zstd would make of a large plane, from four spread 32 KiB slices."""
    piece = 32 << 10
    step = (len(plane) - piece) // 3
    c = _compressor(level)
    return sum(len(c.compress(plane[j * step:j * step + piece])) for j in range(4)) * len(plane) / (4 * piece)


def _plane_modes(payload, width: int) -> list[int]:
    """The mode of each plane of a :func:`_pack_planes` payload (written by this code)."""
    modes, pos = [], 0
    for _ in range(width):
        mode, size = _PLANE.unpack_from(payload, pos)
        modes.append(mode)
        pos += _PLANE.size + size
    return modes


def _unpack_planes(payload: memoryview, total: int, width: int, oid: ObjectId,
                   ranks: bool = False, *, rans: bool) -> np.ndarray:
    """Inverse of :func:`_pack_planes` fused with :func:`ungroup`: the ``total`` bytes of
    the element-ordered output. ``ranks``: planes may be PLANE_RANKS (frame version 4
    FGROUPED); elsewhere that mode is corrupt. ``rans``: planes and their parts may be
    entropy-coded (frame version 5)."""
    out = np.empty(total, dtype=np.uint8)
    _unpack_planes_into(payload, out, width, oid, ranks, rans=rans)
    return out


def _unpack_planes_into(payload: memoryview, out: np.ndarray, width: int, oid: ObjectId,
                        ranks: bool = False, *, rans: bool) -> None:
    """:func:`_unpack_planes` written into the bytes ``out`` (its length is the decoded
    length); the planes are interleaved by :func:`_interleave`."""
    total = len(out)
    n = total // width
    pos = 0
    top = PLANE_RANKS if ranks else 1
    parts = []
    scratch_free = True
    for _ in range(width):
        if pos + _PLANE.size > len(payload):
            raise CorruptObject(to_hex(oid), "byte plane header past the end of the frame")
        mode, size = _PLANE.unpack_from(payload, pos)
        pos += _PLANE.size
        body = payload[pos:pos + size]
        pos += size
        if len(body) != size or (mode > top and not (rans and mode == entropy.RANS)):
            raise CorruptObject(to_hex(oid), "byte plane out of range")
        if mode == PLANE_RANKS:
            # The first ranked plane decodes into the thread's scratch buffer (it stays
            # untouched until the planes are interleaved below); any further one, which
            # would overwrite it, into a buffer of its own. The encoder ranks only the top
            # plane, so a frame pays neither a copy nor an allocation for it.
            parts.append(_unrank_plane(body, n, oid, own=not scratch_free, rans=rans))
            scratch_free = False
            continue
        plane = _unsqueeze(mode, body, n, oid, rans)
        if len(plane) != n:
            raise CorruptObject(to_hex(oid), "byte plane has the wrong length")
        parts.append(plane)
    tail = payload[pos:]
    if len(tail) != total - n * width:
        raise CorruptObject(to_hex(oid), "byte planes do not add up to the decoded length")
    _interleave(parts, tail, out, n, width)


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
