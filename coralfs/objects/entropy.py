"""Order-0 entropy coding of the streams the codecs squeeze (frame version 5).

A squeezed stream (a byte plane, a bitmap, packed symbols, ranks; coralfs/objects/planes.py
``_squeeze``) was stored as it is (mode 0) or zstd (mode 1). zstd codes literals with
Huffman, which spends at least a bit on every symbol and a whole number of bits on each: on
the skewed streams of deltas (a bitmap with one change in a hundred, the high byte of gaps,
differences of 1-4) it stays 5-30% over the stream's order-0 entropy. Mode 4 (``RANS``)
stores the stream as static rANS with its own quantized frequencies (the compiled coder,
coralfs/objects/_entropy.c, whose top comment gives the layout): within ~0.1% of the
order-0 entropy plus a table of about a byte a symbol and 8 bytes a lane of state (4 bytes
for a stream under 4,096 bytes, coded by the narrow coder: one 32-bit state renormalized
byte-wise).

The encoder keeps it only where it is at most ``WIN`` of what zstd (or storing) takes: rANS
decodes at about a third of zstd's speed, so a stream zstd already codes near its entropy
(a keyframe's exponent ranks) stays zstd and reads stay fast. A stream under ``WIN_FROM``
bytes is kept wherever it is smaller: its decode time is the calls', not the coder's. The
header's frequency table is a bit string of Elias gamma codes, at the scale (2^4-2^16)
that makes table and body smallest together: a delta frame holds many streams of a few
hundred bytes, whose tables would otherwise cost more than their coding saves. Only the
compiled coder encodes; a machine without it writes frames as before. Every machine reads
mode 4: without the compiled coder this module's decoder gives the same bytes, slowly (one
numpy pass per group of lanes; a Python loop for the narrow coder's short streams).
"""

from __future__ import annotations

from types import ModuleType

from . import native
from .errors import CorruptObject
from .ids import ObjectId, to_hex
from .lazy import lazy_module

np = lazy_module("numpy")

RANS = 4  # the mode of an entropy-coded stream, wherever a squeezed stream's mode is stored
SINCE = 5  # the frame version that introduced it
WIN = 0.97  # kept where at most this share of the bytes zstd (or storing) takes
WIN_FROM = 16 << 10  # shorter streams are kept wherever smaller (their decode is the calls' time)
MIN_STREAM = 64  # shorter streams are not tried (the header alone would eat the saving)

_RANS_L = 1 << 31
_NARROW_L = 1 << 23
_SCALES = range(4, 17)


kernel: ModuleType | None = native.load("_entropy")


def encode(stream, limit: int) -> bytes | None:
    """``stream`` (bytes-like) entropy-coded if that is at most ``WIN`` of ``limit`` bytes
    (shorter than ``limit`` for a stream under ``WIN_FROM`` bytes), else None (also where
    the compiled coder is not built)."""
    if kernel is None or len(stream) < MIN_STREAM:
        return None
    return kernel.encode(stream, limit if len(stream) < WIN_FROM else int(limit * WIN))


def decode(body, n: int, oid: ObjectId) -> bytes:
    """The ``n`` bytes of an entropy-coded stream; a damaged one is a CorruptObject."""
    try:
        if kernel is not None:
            return kernel.decode(body, n)
        return _decode_numpy(memoryview(body).cast("B"), n)
    except ValueError as e:
        raise CorruptObject(to_hex(oid), str(e)) from None


class _Bits:
    """A bit string read least significant bit first (the header's frequency table)."""

    def __init__(self, body: memoryview, pos: int):
        self.body, self.pos, self.acc, self.n = body, pos, 0, 0

    def get(self, nb: int) -> int:
        while self.n < nb:
            if self.pos >= len(self.body):
                raise ValueError("entropy-coded stream header out of range")
            self.acc |= self.body[self.pos] << self.n
            self.pos += 1
            self.n += 8
        v = self.acc & ((1 << nb) - 1)
        self.acc >>= nb
        self.n -= nb
        return v

    def gamma(self, max_bits: int) -> int:
        z = 0
        while not self.get(1):
            z += 1
            if z >= max_bits:
                raise ValueError("entropy-coded stream header out of range")
        return (1 << z) | self.get(z)


def _header(body: memoryview) -> tuple[int, int, np.ndarray, int]:
    """(scale, lanes, frequencies by symbol, header length), checked as the compiled coder
    does; lanes 0: the narrow coder."""
    bad = ValueError("entropy-coded stream header out of range")
    if len(body) < 2 or body[0] >> 7:
        raise bad
    scale, lanes, k = _SCALES[0] + (body[0] & 15), 1 << ((body[0] >> 4) & 3), body[1] + 1
    if scale not in _SCALES or (body[0] & 0x40 and lanes != 1) or k > 1 << scale:
        raise bad
    if body[0] & 0x40:
        lanes = 0
    r = _Bits(body, 2)
    if k == 256:
        syms = list(range(256))
    elif r.get(1):
        syms = [s for s in range(256) if r.get(1)]
        if len(syms) != k:
            raise bad
    else:
        syms, s = [], -1
        for _ in range(k):
            s += r.gamma(9)
            if s > 255:
                raise bad
            syms.append(s)
    implied = r.get((k - 1).bit_length())
    if implied >= k:
        raise bad
    f = np.zeros(256, dtype=np.uint64)
    for i, s in enumerate(syms):
        if i != implied:
            f[s] = r.gamma(_SCALES[-1] + 1)
    rest = (1 << scale) - int(f.sum())
    if rest < 1 or r.acc:
        raise bad
    f[syms[implied]] = rest
    return scale, lanes, f, r.pos


def _decode_narrow(body: memoryview, pos: int, n: int, scale: int, fl: list[int], cum: list[int],
                   sym: list[int]) -> bytes:
    """The compiled narrow decoder's loop (streams under a few thousand symbols), on
    frequencies, their cumulative sums and the slot table as lists."""
    damaged = ValueError("entropy-coded stream is damaged")
    if len(body) - pos < 4:
        raise damaged
    x = int.from_bytes(body[pos:pos + 4], "little")
    pos += 4
    if x < _NARROW_L or x >> 31:
        raise damaged
    mask = (1 << scale) - 1
    out = bytearray(n)
    for i in range(n):
        slot = x & mask
        s = sym[slot]
        x = fl[s] * (x >> scale) + slot - cum[s]
        while x < _NARROW_L:
            if pos >= len(body):
                raise damaged
            x = (x << 8) | body[pos]
            pos += 1
        out[i] = s
    if pos != len(body) or x != _NARROW_L:
        raise damaged
    return bytes(out)


def _decode_numpy(body: memoryview, n: int) -> bytes:
    """The compiled decoder's loop, one numpy pass per group of ``lanes`` symbols (the
    narrow coder's streams: :func:`_decode_narrow`)."""
    scale, lanes, f, pos = _header(body)
    damaged = ValueError("entropy-coded stream is damaged")
    cum = np.concatenate(([0], np.cumsum(f)[:-1])).astype(np.uint64)
    sym = np.repeat(np.arange(256, dtype=np.uint8), f.astype(np.int64))
    if not lanes:
        return _decode_narrow(body, pos, n, scale, f.tolist(), cum.tolist(), sym.tolist())
    if len(body) - pos < 8 * lanes or (len(body) - pos) % 4:
        raise damaged
    x = np.frombuffer(body[pos:pos + 8 * lanes], dtype="<u8").astype(np.uint64)
    if (x < _RANS_L).any() or (x >> np.uint64(63)).any():
        raise damaged
    words = np.frombuffer(body[pos + 8 * lanes:], dtype="<u4").astype(np.uint64)
    mask, sh, low = np.uint64((1 << scale) - 1), np.uint64(scale), np.uint64(_RANS_L)
    out = np.empty(n, dtype=np.uint8)
    at = 0
    for i in range(0, n, lanes):
        m = min(lanes, n - i)
        v = x[:m]
        slot = v & mask
        s = sym[slot]
        v = f[s] * (v >> sh) + slot - cum[s]
        need = v < low
        k = int(need.sum())
        if k:
            if at + k > len(words):
                raise damaged
            v[need] = (v[need] << np.uint64(32)) | words[at:at + k]
            at += k
        x[:m] = v
        out[i:i + m] = s
    if at != len(words) or (x != low).any():
        raise damaged
    return out.tobytes()
