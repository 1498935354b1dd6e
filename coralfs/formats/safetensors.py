"""safetensors: an 8-byte little-endian header length, a JSON header, then the tensors.

Validated as the format requires: header size capped, UTF-8 JSON object, ``data_offsets``
inside the data area, each tensor's length equal to shape x width (x bits / 8 for sub-byte
types), and the offsets covering the data area without holes or overlaps. A dtype newer
than this reader (or a sub-byte one) is no reason to refuse a valid file: its tensor is
stored as opaque bytes (a ``U8`` region over its ``data_offsets``), exactly as it is.
"""

from __future__ import annotations

import fnmatch
import io
import json
import math
import struct
from collections.abc import Callable

from ..objects import dtypes
from ..objects.regions import Region
from .base import MAX_HEADER, FormatError, Layout, guarded

# safetensors dtype names -> coralfs dtype names (the same where they match).
DTYPES = {
    "F64": "F64", "F32": "F32", "F16": "F16", "BF16": "BF16",
    "F8_E4M3": "F8_E4M3", "F8_E5M2": "F8_E5M2",
    "I64": "I64", "I32": "I32", "I16": "I16", "I8": "I8",
    "U64": "U64", "U32": "U32", "U16": "U16", "U8": "U8", "BOOL": "BOOL",
    "F8_E4M3FNUZ": "F8_E4M3FNUZ", "F8_E5M2FNUZ": "F8_E5M2FNUZ", "F8_E8M0": "F8_E8M0", "C64": "C64",
}
# Sub-byte element types (bits per element): stored as opaque bytes, sizes still checked.
SUB_BYTE = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
OPAQUE = "U8"


def read_header(path: str, f) -> tuple[int, dict]:
    """(header length, parsed header) of an open safetensors file."""
    head = f.read(8)
    if len(head) < 8:
        raise FormatError(path, "truncated safetensors file: no 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER:
        raise FormatError(path, f"safetensors header claims {n} bytes (over the {MAX_HEADER >> 20} MiB cap)")
    raw = f.read(n)
    if len(raw) != n:
        raise FormatError(path, f"truncated safetensors header: {len(raw)} of {n} bytes")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(path, f"safetensors header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise FormatError(path, "safetensors header is not a JSON object")
    return n, header


@guarded("safetensors")
def parse(path: str, size: int) -> Layout:
    with open(path, "rb") as f:
        n, header = read_header(path, f)
    data_start = 8 + n
    data_len = size - data_start
    regions: list[Region] = []
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise FormatError(path, "__metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
            raise FormatError(path, f"tensor {name!r}: entry must have dtype, shape, data_offsets")
        dt = info.get("dtype")
        shape = info.get("shape")
        offs = info.get("data_offsets")
        if not isinstance(dt, str) or not dt:
            raise FormatError(path, f"tensor {name!r}: dtype {dt!r} is not a dtype name")
        if (not isinstance(shape, list) or len(shape) > 64
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 62 for s in shape)):
            raise FormatError(path, f"tensor {name!r}: bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise FormatError(path, f"tensor {name!r}: bad data_offsets {offs!r}")
        begin, end = offs
        if not 0 <= begin <= end <= data_len:
            raise FormatError(path, f"tensor {name!r}: data_offsets {offs} outside the data area ({data_len} bytes)")
        if dt in DTYPES:
            want = math.prod(shape) * dtypes.lookup(DTYPES[dt]).width
        elif dt in SUB_BYTE:
            want = -(-math.prod(shape) * SUB_BYTE[dt] // 8)
        else:  # a dtype this reader does not know: its bytes are what the header says
            want = end - begin
        if end - begin != want:
            raise FormatError(path, f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dt} (needs {want})")
        spans.append((begin, end, name))
        if dt in DTYPES:
            regions.append(Region(data_start + begin, end - begin, name, DTYPES[dt], tuple(shape)))
        else:
            regions.append(Region(data_start + begin, end - begin, name, OPAQUE, (end - begin,)))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            raise FormatError(path, f"tensor {name!r} overlaps another tensor")
        if begin > pos:
            raise FormatError(path, f"hole of {begin - pos} bytes before tensor {name!r}")
        pos = end
    if pos != data_len:
        raise FormatError(path, f"{data_len - pos} bytes after the last tensor are not indexed by the header")
    return Layout("safetensors", regions)


def subset(header: dict, include: list[str]) -> tuple[bytes, list[tuple[int, int]]]:
    """A smaller valid safetensors file holding only tensors matching ``include``.

    Returns the new file's header bytes (length prefix included) and, in order, the
    (offset in the original data area, length) pieces that follow it.
    """
    names = [k for k in header if k != "__metadata__"
             and any(fnmatch.fnmatchcase(k, p) for p in include)]
    names.sort(key=lambda k: header[k]["data_offsets"][0])
    new: dict = {}
    if "__metadata__" in header:
        new["__metadata__"] = header["__metadata__"]
    pieces = []
    pos = 0
    for k in names:
        b, e = header[k]["data_offsets"]
        new[k] = {"dtype": header[k]["dtype"], "shape": header[k]["shape"], "data_offsets": [pos, pos + e - b]}
        pieces.append((b, e - b))
        pos += e - b
    body = json.dumps(new, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)  # keep the data area 8-byte aligned
    return struct.pack("<Q", len(body)) + body, pieces


def stored_header(read: Callable[[int, int], bytes]) -> tuple[int, dict]:
    """(header length, header) of a stored safetensors file, read through
    ``read(offset, length)``. A stored file was validated when committed; the cap still
    holds for a crafted one."""
    n = int.from_bytes(read(0, 8), "little")
    return read_header("<stored>", io.BytesIO(read(0, 8 + min(n, MAX_HEADER))))


def stored_subset(read: Callable[[int, int], bytes], include: list[str]) -> tuple[bytes, list[tuple[int, int]]]:
    """:func:`subset` of a stored safetensors file: the new header bytes and the
    (offset in the stored file, length) pieces that follow it, in order."""
    n, header = stored_header(read)
    head, pieces = subset(header, include)
    return head, [(8 + n + off, length) for off, length in pieces]
