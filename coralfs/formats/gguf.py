"""GGUF (llama.cpp): a header of metadata key-values and tensor infos, then aligned tensor data.

Read by its own bounded parser (no dependency): magic ``GGUF``, version (2 or 3), tensor
and key-value counts, the key-values (walked to find their end and ``general.alignment``),
the tensor infos (name, dims, ggml type, offset in the data area), then the data area at
the next multiple of the alignment. F32/F16/BF16 (and the other plain element types)
become typed regions of their shape; a quantized type becomes a region of its blocks,
one ``B<block bytes>`` element per block (Q4_0: 32 weights in 18 bytes, ``B18``), so a
second version deltas block against block. Every count, length and offset is checked
against caps and the file's size before it is trusted.
"""

from __future__ import annotations

import math
import struct

from ..objects.regions import Region
from .base import MAX_HEADER, FormatError, Layout, guarded

MAGIC = b"GGUF"
MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000
MAX_STRING = 1 << 24
MAX_DIMS = 8
DEFAULT_ALIGNMENT = 32

# ggml types: (elements per block, bytes per block, coralfs dtype of a plain element).
# Quantized types have no element dtype: their blocks are opaque B<bytes> elements.
GGML_TYPES: dict[int, tuple[str, int, int, str | None]] = {
    0: ("F32", 1, 4, "F32"), 1: ("F16", 1, 2, "F16"), 2: ("Q4_0", 32, 18, None), 3: ("Q4_1", 32, 20, None),
    6: ("Q5_0", 32, 22, None), 7: ("Q5_1", 32, 24, None), 8: ("Q8_0", 32, 34, None), 9: ("Q8_1", 32, 40, None),
    10: ("Q2_K", 256, 84, None), 11: ("Q3_K", 256, 110, None), 12: ("Q4_K", 256, 144, None),
    13: ("Q5_K", 256, 176, None), 14: ("Q6_K", 256, 210, None), 15: ("Q8_K", 256, 292, None),
    16: ("IQ2_XXS", 256, 66, None), 17: ("IQ2_XS", 256, 74, None), 18: ("IQ3_XXS", 256, 98, None),
    19: ("IQ1_S", 256, 50, None), 20: ("IQ4_NL", 32, 18, None), 21: ("IQ3_S", 256, 110, None),
    22: ("IQ2_S", 256, 82, None), 23: ("IQ4_XS", 256, 136, None), 24: ("I8", 1, 1, "I8"),
    25: ("I16", 1, 2, "I16"), 26: ("I32", 1, 4, "I32"), 27: ("I64", 1, 8, "I64"), 28: ("F64", 1, 8, "F64"),
    29: ("IQ1_M", 256, 56, None), 30: ("BF16", 1, 2, "BF16"), 34: ("TQ1_0", 256, 54, None),
    35: ("TQ2_0", 256, 66, None), 39: ("MXFP4", 32, 17, None),
}
# Metadata value types: fixed widths (8 string and 9 array are walked).
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_UINT = {0: "<B", 2: "<H", 4: "<I", 10: "<Q", 1: "<b", 3: "<h", 5: "<i", 11: "<q"}


class _Cursor:
    """Reads of the header, never past ``limit`` (the header cap or the file's end)."""

    def __init__(self, path: str, f, limit: int) -> None:
        self.path, self.f, self.limit, self.pos = path, f, limit, 0
        self.buf = b""
        self.base = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.limit:
            raise FormatError(self.path, f"GGUF header truncated or over the cap at byte {self.pos}")
        end = self.pos + n
        if end > self.base + len(self.buf):
            self.f.seek(self.pos)
            self.buf, self.base = self.f.read(max(n, 1 << 20)), self.pos
            if len(self.buf) < n:
                raise FormatError(self.path, f"GGUF header truncated at byte {self.pos}")
        out = self.buf[self.pos - self.base:end - self.base]
        self.pos = end
        return out

    def skip(self, n: int) -> None:
        """Step over ``n`` bytes (a numeric metadata array) without reading them."""
        if n < 0 or self.pos + n > self.limit:
            raise FormatError(self.path, f"GGUF header truncated or over the cap at byte {self.pos}")
        self.pos += n

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]

    def string(self) -> bytes:
        n = self.u64()
        if n > MAX_STRING:
            raise FormatError(self.path, f"GGUF string of {n} bytes at byte {self.pos} is over the cap")
        return self.take(n)


def _value(c: _Cursor, vtype: int, depth: int = 0):
    """Walk one metadata value; returns integers and strings (arrays: None)."""
    if vtype in _FIXED:
        raw = c.take(_FIXED[vtype])
        return struct.unpack(_UINT[vtype], raw)[0] if vtype in _UINT else None
    if vtype == 8:
        return c.string()
    if vtype == 9:
        if depth > 2:
            raise FormatError(c.path, "GGUF arrays nested too deep")
        etype, count = c.u32(), c.u64()
        if etype in _FIXED:
            c.skip(count * _FIXED[etype])  # bounded by the cursor's limit
        else:
            if count > MAX_KV * 16:
                raise FormatError(c.path, f"GGUF array of {count} items is over the cap")
            for _ in range(count):
                _value(c, etype, depth + 1)
        return None
    raise FormatError(c.path, f"GGUF metadata value type {vtype} is unknown")


@guarded("GGUF")
def parse(path: str, size: int) -> Layout:
    with open(path, "rb") as f:
        c = _Cursor(path, f, min(size, MAX_HEADER))
        if c.take(4) != MAGIC:
            raise FormatError(path, "not a GGUF file (bad magic)")
        version = c.u32()
        if version not in (2, 3):
            raise FormatError(path, f"GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = c.u64(), c.u64()
        if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
            raise FormatError(path, f"GGUF header claims {n_tensors} tensors and {n_kv} keys (over the cap)")
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = c.string()
            vtype = c.u32()
            v = _value(c, vtype)
            if key == b"general.alignment":
                if not isinstance(v, int) or v <= 0 or v & (v - 1) or v > 1 << 20:
                    raise FormatError(path, f"GGUF general.alignment {v!r} is not a power of two")
                alignment = v
        infos = []
        for _ in range(n_tensors):
            name = c.string()
            n_dims = c.u32()
            if n_dims > MAX_DIMS:
                raise FormatError(path, f"GGUF tensor {name!r} has {n_dims} dimensions (over {MAX_DIMS})")
            dims = [c.u64() for _ in range(n_dims)]
            infos.append((name, dims, c.u32(), c.u64()))
        data_start = -(-c.pos // alignment) * alignment
    return Layout("gguf", _regions(path, size, data_start, alignment, infos))


def _regions(path: str, size: int, data_start: int, alignment: int, infos: list) -> list[Region]:
    regions: list[Region] = []
    seen: set[str] = set()
    for raw_name, dims, gtype, off in infos:
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(path, f"GGUF tensor name {raw_name!r} is not UTF-8") from None
        if name in seen:
            raise FormatError(path, f"GGUF tensor {name!r} appears twice")
        seen.add(name)
        if gtype not in GGML_TYPES:
            raise FormatError(path, f"GGUF tensor {name!r} has unknown ggml type {gtype}")
        tname, block, block_bytes, dtype = GGML_TYPES[gtype]
        if off % alignment:
            raise FormatError(path, f"GGUF tensor {name!r} offset {off} is not aligned to {alignment}")
        numel = math.prod(dims)
        if (dims[0] if dims else 1) % block:
            raise FormatError(path, f"GGUF tensor {name!r}: {tname} rows of {dims[:1]} are not whole blocks of {block}")
        n = numel // block * block_bytes
        if data_start + off + n > size:
            raise FormatError(path, f"GGUF tensor {name!r} ends at byte {data_start + off + n}, "
                                    f"past the end of the file ({size} bytes)")
        # GGUF lists dims fastest first (ne[0] is a row); a C-order shape is the reverse.
        if dtype is not None:
            shape = tuple(reversed(dims))
        else:
            dtype = f"B{block_bytes}"
            shape = tuple(reversed(dims[1:])) + (dims[0] // block,)
        regions.append(Region(data_start + off, n, name, dtype, shape))
    return regions
