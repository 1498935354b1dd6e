"""The delta layouts of SUBS and SPARSE (coralfs/objects/codecs.py has the frame around
them): differences in the order of their base element's exponent, cut into segments; v3
segments of packed small symbols with escapes; the changed elements of SPARSE as a bitmap,
gaps, or bitmaps by groups of base exponents."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from . import entropy, native
from .errors import CorruptObject
from .ids import ObjectId, to_hex
from .lazy import lazy_module
from .planes import (
    _PLANE,
    _UINT,
    _keys,
    _pack_planes,
    _pack_symbols,
    _split,
    _squeeze,
    _unkeys,
    _unpack_planes,
    _unpack_planes_into,
    _unpack_symbols,
    _unsqueeze,
    _unzigzag,
    _zigzag,
    group,
)

if TYPE_CHECKING:
    from .codecs import FrameHeader

np = lazy_module("numpy")

_SPARSE = struct.Struct("<QBI")  # changed elements, positions mode, positions stored length
POS_GAPS = 2  # positions mode: gaps between changed elements (modes 0, 1: a raw or zstd bitmap)


SEGMENT_MIN = 4096  # elements: fewer would not pay for a segment's own entropy tables
_COUNT = struct.Struct("<I")
# v3 value segments: kind 0 holds byte planes; kind b (2 or 4) holds b-bit symbols packed
# 8 // b to a byte, the largest symbol marking an escape (the value, less the marker, in
# byte planes after them).
SYMBOL_BITS = (2, 4)
_SYMBOLS_MIN = 64  # values: a shorter segment is stored as byte planes without trying
_BOTH_BELOW = 4096  # values: a shorter segment with escapes tries both widths (its escapes cost more)
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


def _order(bu: np.ndarray, width: int, classes: bool = True) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The stable order of base elements by their class (see _classes), and the classes
    in that order (None unless ``classes``: a decoder needs only the order); None for bytes."""
    if width == 1:
        return None
    return _sorted(_classes(bu, width), classes)


def _sorted(cls: np.ndarray, classes: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The stable sort of ``cls``: (the permutation, the sorted classes, or None when
    ``classes`` is False: a decoder needs only the permutation)."""
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
    sorted_cls = (key >> _KEY_BITS).astype(np.uint8) if classes else None
    key &= (1 << _KEY_BITS) - 1
    return key, sorted_cls


def _cuts(cs: np.ndarray) -> list[int]:
    """Segment bounds of the class-sorted ``cs``: where the class changes, segments of at
    least SEGMENT_MIN elements (smaller classes join their neighbour)."""
    return _merged((np.flatnonzero(cs[1:] != cs[:-1]) + 1).tolist(), len(cs))


def _counted_cuts(counts: np.ndarray) -> list[int]:
    """:func:`_cuts` from the number of elements of each class (the class-sorted classes
    change where a non-empty class ends)."""
    ends = np.cumsum(counts[counts > 0]).tolist()
    return _merged(ends[:-1], ends[-1] if ends else 0)


def _merged(changes: list[int], n: int) -> list[int]:
    cuts = [0]
    for b in changes:
        if b - cuts[-1] >= SEGMENT_MIN:
            cuts.append(b)
    if len(cuts) > 1 and n - cuts[-1] < SEGMENT_MIN:
        cuts.pop()
    cuts.append(n)
    return cuts


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
        kern = native.kernel
        if kern is not None:
            esc2, esc4 = kern.symbol_escapes(s, width)
        else:
            esc2, esc4 = (int(np.count_nonzero(s >= (1 << b) - 1)) for b in SYMBOL_BITS)
        if 16 * esc2 <= len(s):
            tries = (2, 4) if esc2 and len(s) < _BOTH_BELOW else (2,)
        elif 16 * esc4 <= len(s):
            tries = (2, 4) if 4 * esc2 <= len(s) else (4,)
        else:
            tries = tuple(b for b, e in zip(SYMBOL_BITS, (esc2, esc4)) if 4 * e <= len(s))
            planes = b"\0" + _pack_planes(group(s.view(np.uint8), width), width, level)
    else:
        planes = b"\0" + _pack_planes(group(s.view(np.uint8), width), width, level)
    best = planes
    for bits in tries:
        sym, esc = _symbols(s, width, bits)
        mode, packed = _squeeze(sym, level)
        parts = [bytes((bits,)), _PLANE.pack(mode, len(packed)), packed]
        if best is not None and len(packed) >= len(best):
            continue
        if len(esc):
            parts.append(_pack_planes(group(esc.view(np.uint8), width), width, level))
        cand = b"".join(parts)
        if best is None or len(cand) < len(best):
            best = cand
    return best


def _symbols(s: np.ndarray, width: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The values ``s`` as packed ``bits``-bit symbols (the largest marking an escape) and
    the escaped values less the marker: one pass of the compiled kernel where it is built."""
    marker = (1 << bits) - 1
    kern = native.kernel
    if kern is not None:
        packed = np.empty(-(-len(s) * bits // 8), dtype=np.uint8)
        esc = np.empty(len(s), dtype=_UINT[width])
        return packed, esc[:kern.pack_symbols(s, width, bits, packed, esc)]
    big = s >= marker
    return _pack_symbols(np.minimum(s, marker).astype(np.uint8), bits), s[big] - _UINT[width](marker)


def _unpack_values(body: memoryview, count: int, width: int, oid: ObjectId, rans: bool) -> np.ndarray:
    """Inverse of :func:`_pack_values`: ``count`` unsigned values of ``width`` bytes;
    ``rans``: its streams may be entropy-coded (frame version 5)."""
    if len(body) < 1:
        raise CorruptObject(to_hex(oid), "delta segment is empty")
    kind = body[0]
    if kind == 0:
        return _unpack_planes(body[1:], count * width, width, oid, rans=rans).view(_UINT[width])
    if kind not in SYMBOL_BITS or 1 + _PLANE.size > len(body):
        raise CorruptObject(to_hex(oid), "delta segment of an unknown kind")
    mode, size = _PLANE.unpack_from(body, 1)
    pos = 1 + _PLANE.size
    packed = body[pos:pos + size]
    want = -(-count * kind // 8)
    if len(packed) != size:
        raise CorruptObject(to_hex(oid), "packed symbols out of range")
    packed = _unsqueeze(mode, packed, want, oid, rans, "packed symbols")
    if len(packed) != want:
        raise CorruptObject(to_hex(oid), "packed symbols have the wrong length")
    sym = _unpack_symbols(packed, kind, count)
    marker = (1 << kind) - 1
    out = sym.astype(_UINT[width])
    esc = np.flatnonzero(sym == marker)
    rest = body[pos + size:]
    if len(esc):
        big = _unpack_planes(rest, len(esc) * width, width, oid, rans=rans).view(_UINT[width])
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
    return _pack_segments(vals, cuts, width, level)


def _pack_segments(vals: np.ndarray, cuts: list[int], width: int, level: int) -> bytes:
    """Differences already in exponent order, cut at ``cuts``, as v3 segments."""
    parts = [_COUNT.pack(len(cuts) - 1)]
    for a, b in zip(cuts, cuts[1:]):
        seg = _pack_values(vals[a:b], width, level)
        parts += [_COUNT.pack(b - a), _COUNT.pack(len(seg)), seg]
    return b"".join(parts)


def _pack_delta(u: np.ndarray, bu: np.ndarray, width: int, key: int, level: int,
                cls: np.ndarray | None = None) -> bytes:
    """The v3 segments of the differences of the elements ``u`` from their base elements
    ``bu`` (unsigned views of one width): what :func:`_pack_sorted` makes of
    ``_zigzag(_keys(u) - _keys(bu))``, in one pass of the compiled kernel where it is built.
    ``cls``: the classes of ``bu`` if the caller has them (the numpy path reuses them;
    the kernel finds them in its pass)."""
    k = native.kernel
    if k is None:
        return _pack_sorted(_zigzag(_keys(u, width, key) - _keys(bu, width, key), width), bu, width, level, cls)
    vals = np.empty(len(u), dtype=_UINT[width])
    counts = np.frombuffer(k.subs_encode(u, bu, vals, width, key), dtype=np.int64)
    return _pack_segments(vals, _counted_cuts(counts), width, level)


def _unpack_sorted(payload: memoryview, bu: np.ndarray, width: int, oid: ObjectId,
                   version: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Inverse of :func:`_pack_sorted` (and of its v2 layout, segments of byte planes
    only): the differences in the order of ``bu`` (written into ``out`` if given), and the
    bytes read."""
    n = len(bu)
    order = _order(bu, width, classes=False)
    if order is None:
        return _unpack_segments(payload, n, width, oid, version, out)
    sorted_vals, pos = _unpack_segments(payload, n, width, oid, version)
    if out is None:
        out = np.empty(n, dtype=_UINT[width])
    out[order[0]] = sorted_vals
    return out, pos


def _unpack_segments(payload: memoryview, n: int, width: int, oid: ObjectId,
                     version: int, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The ``n`` differences of :func:`_pack_segments`, in exponent order (written into
    ``out``, ``n`` unsigned ``width``-byte values, if given), and the bytes read."""
    if len(payload) < _COUNT.size:
        raise CorruptObject(to_hex(oid), "delta segments missing")
    (nseg,) = _COUNT.unpack_from(payload, 0)
    pos = _COUNT.size
    if out is None:
        out = np.empty(n, dtype=_UINT[width])
    at = 0
    rans = version >= entropy.SINCE
    for _ in range(nseg):
        if pos + 2 * _COUNT.size > len(payload):
            raise CorruptObject(to_hex(oid), "delta segment header past the end of the frame")
        (count,) = _COUNT.unpack_from(payload, pos)
        (size,) = _COUNT.unpack_from(payload, pos + _COUNT.size)
        pos += 2 * _COUNT.size
        if at + count > n or pos + size > len(payload):
            raise CorruptObject(to_hex(oid), "delta segment out of range")
        body = payload[pos:pos + size]
        if version < 3 or (len(body) and body[0] == 0):
            # Byte planes, decoded straight into their place in the differences.
            _unpack_planes_into(body[1:] if version >= 3 else body, out[at:at + count].view(np.uint8), width, oid,
                                rans=rans)
        else:
            out[at:at + count] = _unpack_values(body, count, width, oid, rans)
        at += count
        pos += size
    if at != n:
        raise CorruptObject(to_hex(oid), "delta segments do not cover every element")
    return out, pos


def _apply_segments(payload: memoryview, bu: np.ndarray, out: np.ndarray, width: int, key: int,
                    oid: ObjectId, version: int) -> int:
    """The decoder of SUBS and SPARSE differences: write into ``out`` (writable, unsigned
    ``width``-byte values, as many as ``bu`` and apart from it) the elements
    ``unkeys(unzigzag(v) + keys(b))`` of the base elements ``b`` of ``bu``, their
    differences ``v`` read from the segments at the start of ``payload``; returns the
    bytes read. The compiled kernel does the order, un-zig-zag, keys and unkeys in one
    pass where it is built (each difference found by its base element's class); the numpy
    code scatters the differences into ``out`` in element order, then works in place on
    it (every temporary of a chunk's size costs its page faults)."""
    kern = native.kernel
    if kern is not None:
        vals, pos = _unpack_segments(payload, len(bu), width, oid, version)
        kern.subs_decode(bu, vals, out, width, key)
        return pos
    k, pos = _unpack_sorted(payload, bu, width, oid, version, out)
    k = _unzigzag(k, width, in_place=True)
    k += _keys(bu, width, key)
    _unkeys(k, width, key, in_place=True)
    return pos


def _subs_payload(data: np.ndarray, base: np.ndarray, width: int, key: int, level: int) -> bytes:
    body, tail = _split(data, width)
    bbody, btail = _split(base, width)
    u, bu = body.view(_UINT[width]), bbody.view(_UINT[width])
    return _pack_delta(u, bu, width, key, level) + (tail ^ btail).tobytes()


def _unsubs(payload: memoryview, base: np.ndarray, h: FrameHeader, oid: ObjectId,
            out: np.ndarray) -> np.ndarray:
    """Decode a SUBS payload against ``base`` into ``out`` (writable uint8, as long as
    ``base`` and apart from it); returns ``out``."""
    width = h.width
    bbody, btail = _split(base, width)
    bu = bbody.view(_UINT[width])
    pos = _apply_segments(payload, bu, out[:len(bbody)].view(_UINT[width]), width, h.key, oid, h.version)
    tail = payload[pos:]
    if len(tail) != len(btail):
        raise CorruptObject(to_hex(oid), "delta tail has the wrong length")
    np.bitwise_xor(btail, np.frombuffer(tail, np.uint8), out=out[len(bbody):])
    return out


def _positions(bits: np.ndarray, idx: np.ndarray, level: int) -> tuple[int, bytes | memoryview]:
    """(mode, bytes) of the set elements of the bool array ``bits`` (``idx`` their
    indices): a bitmap, stored (0) or zstd (1), or, when fewer than one in 8 is set, the
    gaps between them as byte-grouped uint32 (POS_GAPS) if that is smaller."""
    return _packed_positions(np.packbits(bits, bitorder="little"), len(bits), len(idx), lambda: idx, level)


def _packed_positions(packed: np.ndarray, n: int, count: int, indices, level: int) -> tuple[int, bytes | memoryview]:
    """:func:`_positions` of ``n`` bits given packed (little-endian bit order, zero
    padding), ``count`` of them set; ``indices()`` gives the set ones (asked only when
    the gaps may be smaller than the bitmap)."""
    mode, bm = _squeeze(packed, level)
    if count * 8 < n:
        # Few changes (an RL step moves ~1%): the gaps between changed elements cost
        # less than a bitmap (measured 0.0055 against 0.0090 of the bf16 file).
        gaps = np.diff(indices(), prepend=-1).astype(np.uint32)
        g = _pack_planes(group(gaps.view(np.uint8), 4), 4, level)
        if len(g) < len(bm):
            return POS_GAPS, g
    return mode, bm


def _bitmap(body: memoryview, n: int, mode: int, oid: ObjectId, rans: bool) -> bytes | memoryview:
    """The packed bitmap of ``n`` bits a positions stream of ``mode`` 0, 1 or entropy.RANS
    (``rans``: allowed) holds, checked for length."""
    nbm = (n + 7) // 8
    bm = _unsqueeze(mode, body, nbm, oid, rans, "sparse delta positions")
    if len(bm) != nbm:
        raise CorruptObject(to_hex(oid), "sparse delta bitmap has the wrong length")
    return bm


def _indices(body: memoryview, n: int, count: int, mode: int, oid: ObjectId, rans: bool) -> np.ndarray:
    """Inverse of :func:`_positions`: the ``count`` set indices among ``n`` elements;
    ``rans``: its streams may be entropy-coded (frame version 5)."""
    if mode == POS_GAPS:
        gaps = _unpack_planes(body, 4 * count, 4, oid, rans=rans).view(np.uint32)
        if count and (gaps.min() == 0):
            raise CorruptObject(to_hex(oid), "sparse delta gaps out of range")
        idx = np.cumsum(gaps, dtype=np.int64) - 1
        if count and idx[-1] >= n:
            raise CorruptObject(to_hex(oid), "sparse delta gaps run past the chunk")
    else:
        bm = _bitmap(body, n, mode, oid, rans)
        # unpackbits gives 0/1 bytes: viewed as bool, flatnonzero is ~8x faster.
        bits = np.unpackbits(np.frombuffer(bm, np.uint8), count=n, bitorder="little").view(bool)
        idx = np.flatnonzero(bits)
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
    step = _group_step(len(cls))
    cs = cls[::step]
    return _groups_of_counts(np.bincount(cs, minlength=256), np.bincount(cs[changed[::step]], minlength=256), step)


def _group_step(n: int) -> int:
    """Every how many elements :func:`_exponent_groups` counts."""
    return 8 if n >= 1 << 16 else 1


def _groups_of_counts(n: np.ndarray, k: np.ndarray, step: int) -> tuple[list[int], float]:
    """:func:`_exponent_groups` from the counts of the sampled elements by class: all of
    them (``n``) and the changed ones (``k``)."""
    present = np.flatnonzero(n)
    if len(present) < 2:
        return [], 1.0
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
    parts = [bytes((len(cuts) + 1, *cuts))]
    kern = native.kernel
    if kern is not None:
        # Each group's bitmap in one pass of the compiled kernel (measured 1.5 against
        # 10 ms for the 2 Mi elements of a 4 MiB bf16 chunk in three groups).
        stride = (len(cls) + 7) // 8
        out = np.empty((len(cuts) + 1) * stride, dtype=np.uint8)
        counts = np.frombuffer(kern.group_bits(changed, cls, bytes(cuts), out), dtype=np.int64).tolist()
        for g in range(len(cuts) + 1):
            n, k = counts[2 * g], counts[2 * g + 1]
            packed = out[g * stride:g * stride + (n + 7) // 8]

            def indices(packed=packed, n=n):
                return np.flatnonzero(np.unpackbits(packed, count=n, bitorder="little").view(bool))

            mode, b = _packed_positions(packed, n, k, indices, level)
            parts += [_GROUP.pack(n, k, mode, len(b)), b]
        return b"".join(parts)
    grp = _group_of(cls, cuts)
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


def _group_bits(body: memoryview, n: int, count: int, mode: int, oid: ObjectId, rans: bool) -> np.ndarray:
    """A group's positions as its bitmap (little-endian bits, one per member), as uint16
    windows: entry i holds bytes i and i + 1 (what :func:`_deposit` reads)."""
    nbm = (n + 7) // 8
    if mode == POS_GAPS:
        bits = np.zeros(n, dtype=bool)
        bits[_indices(body, n, count, mode, oid, rans)] = True
        bm = np.packbits(bits, bitorder="little")
    else:
        bm = np.frombuffer(_bitmap(body, n, mode, oid, rans), dtype=np.uint8)
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


def _grouped_indices(body: memoryview, bu: np.ndarray, width: int, count: int, oid: ObjectId,
                     rans: bool) -> np.ndarray:
    """Inverse of :func:`_grouped_positions`: the changed indices, in element order;
    ``rans``: its streams may be entropy-coded (frame version 5)."""
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
        w = _group_bits(body[pos:pos + size], n, k, mode, oid, rans)
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
    if native.kernel is not None:
        return _sparse_native(u, bu, width, key, level, cuts) + (tail ^ btail).tobytes()
    changed = u != bu
    idx = np.flatnonzero(changed)  # one index pass; take() is faster than three masks
    uc, bc = u.take(idx), bu.take(idx)
    cls = _classes(bu, width) if width > 1 else None
    forced = cuts is not None
    ratio = 1.0
    if cls is not None and not forced:
        cuts, ratio = _exponent_groups(cls, changed)
    mode, pos = _layout(changed, cls, cuts, forced, ratio, len(idx), lambda: idx, level)
    cc = cls.take(idx) if cls is not None else None
    delta = _pack_delta(uc, bc, width, key, level, cc)
    return b"".join((_SPARSE.pack(len(bc), mode, len(pos)), pos, delta, (tail ^ btail).tobytes()))


def _layout(changed: np.ndarray, cls: np.ndarray | None, cuts: list[int] | None, forced: bool, ratio: float,
            count: int, indices, level: int) -> tuple[int, bytes | memoryview]:
    """(mode, bytes) of a SPARSE payload's positions: in element order (bitmap or gaps),
    or by the exponent groups ``cuts`` of the classes ``cls`` (None: one byte wide, no
    classes) when that is smaller; ``forced`` cuts are not weighed against the estimate
    ``ratio``. ``count`` changed elements, ``indices()`` their positions."""
    grouped = bool(cuts) and cls is not None
    mode, pos = POS_GAPS, b""
    if not grouped or (not forced and ratio > _GROUPS_SURE):
        mode, pos = _packed_positions(np.packbits(changed, bitorder="little"), len(changed), count, indices, level)
    if grouped:
        # Whether an element changed depends on its magnitude (in bf16 an update must
        # cross half an ulp): bitmaps of groups of exponents measured 0.0280 -> 0.0214 of
        # the bf16 series against one bitmap in element order.
        g = _grouped_positions(changed, cls, cuts, level)
        if not pos or len(g) < len(pos):
            mode, pos = POS_GROUPS, g
    return mode, pos


def _unsparse(payload: memoryview, base: np.ndarray, h: FrameHeader, oid: ObjectId,
              out: np.ndarray) -> np.ndarray:
    """Decode a SPARSE payload against ``base`` into ``out`` (writable uint8, as long as
    ``base`` and apart from it); returns ``out``."""
    width = h.width
    n_el = h.decoded_len // width
    if len(payload) < _SPARSE.size:
        raise CorruptObject(to_hex(oid), "sparse delta shorter than its header")
    count, mode, size = _SPARSE.unpack_from(payload, 0)
    pos = _SPARSE.size
    body = payload[pos:pos + size]
    rans = h.version >= entropy.SINCE
    top = entropy.RANS if rans else POS_GROUPS if h.version >= 3 else POS_GAPS
    if len(body) != size or mode > top or count > n_el:
        raise CorruptObject(to_hex(oid), "sparse delta header out of range")
    bu = base[: n_el * width].view(_UINT[width])
    if mode == POS_GROUPS:
        idx = _grouped_indices(body, bu, width, count, oid, rans)
    else:
        idx = _indices(body, n_el, count, mode, oid, rans)
    bc = bu.take(idx)
    vals = np.empty_like(bc)
    used = _apply_segments(payload[pos + size:], bc, vals, width, h.key, oid, h.version)
    tail = payload[pos + size + used:]
    if len(tail) != h.decoded_len - n_el * width:
        raise CorruptObject(to_hex(oid), "delta tail has the wrong length")
    np.copyto(out, base)
    out[: n_el * width].view(_UINT[width])[idx] = vals
    np.bitwise_xor(base[n_el * width:], np.frombuffer(tail, np.uint8), out=out[n_el * width:])
    return out


def _sparse_native(u: np.ndarray, bu: np.ndarray, width: int, key: int, level: int,
                   cuts: list[int] | None) -> bytes:
    """:func:`_sparse_payload` of the elements (without the tail) with the compiled
    kernel: one pass finds the changed flags, the base classes and the counts the groups
    are chosen by, a second writes the changed elements' differences in exponent order
    (no index list, no gathered copies of the changed elements). The same bytes as the
    numpy code."""
    n = len(u)
    changed = np.empty(n, dtype=bool)
    cls = np.empty(n, dtype=np.uint8)
    vals = np.empty(n, dtype=_UINT[width])
    step = _group_step(n)
    info = np.frombuffer(native.kernel.sparse_encode(u, bu, changed, cls, vals, width, key, step), dtype=np.int64)
    count = int(info[0])
    forced = cuts is not None
    ratio = 1.0
    if width > 1 and not forced:
        cuts, ratio = _groups_of_counts(info[257:513], info[513:769], step)
    mode, pos = _layout(changed, cls if width > 1 else None, cuts, forced, ratio, count,
                        lambda: np.flatnonzero(changed), level)
    delta = _pack_segments(vals[:count], _counted_cuts(info[1:257]), width, level)
    return b"".join((_SPARSE.pack(count, mode, len(pos)), pos, delta))
