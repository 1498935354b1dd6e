"""TensorFlow tensor bundles (checkpoints, SavedModel variables), read without TensorFlow.

A bundle is ``PREFIX.index`` plus data shards ``PREFIX.data-NNNNN-of-MMMMM``. The index is
a LevelDB-format table (an SSTable: prefix-compressed blocks, a block index, a 48-byte
footer) mapping the empty key to a ``BundleHeaderProto`` (shard count, endianness) and
each tensor name to a ``BundleEntryProto`` (dtype, shape, shard_id, offset, size,
crc32c). A data shard is only the tensors' bytes back to back, so its layout comes from
its sibling index: each numeric tensor becomes a typed region, checked against the
index (size = shape x width, inside the shard, crc32c equal to the masked checksum the
index records). String tensors (varint lengths, a checksum, the bytes) are checked the
way TensorFlow checks them and stay literal bytes. Index blocks may be snappy-compressed
(LevelDB's option; TensorFlow writes them uncompressed): both are read.

Nothing here imports TensorFlow or protobuf: the few proto fields are read off the wire.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..objects import dtypes
from ..objects.regions import Region
from .base import MAX_HEADER, MAX_MEMBERS, FormatError, Layout

SHARD_NAME = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})$")
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER = 48

# TensorFlow DataType enum -> coralfs dtype (types.proto).
DTYPES = {
    1: "F32", 2: "F64", 3: "I32", 4: "U8", 5: "I16", 6: "I8", 8: "C64", 9: "I64", 10: "BOOL",
    11: "I8", 12: "U8", 13: "I32", 14: "BF16", 15: "I16", 16: "U16", 17: "U16", 18: "C128",
    19: "F16", 22: "U32", 23: "U64", 24: "F8_E5M2", 25: "F8_E4M3",
}
DT_STRING = 7


# --- crc32c (Castagnoli), as TensorFlow and LevelDB use it -----------------------------

@functools.cache
def _table() -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


def _crc32c_py(data: bytes | memoryview, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    t = _table()
    for b in bytes(data):
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # the C implementation when installed (with google-cloud-storage); same values
    import google_crc32c as _g

    def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
        return _g.extend(crc, bytes(data))
except ImportError:  # pragma: no cover - exercised where google-crc32c is missing
    crc32c = _crc32c_py


def mask(crc: int) -> int:
    """LevelDB's masked checksum (stored so a crc of data holding crcs stays sound)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- wire formats ----------------------------------------------------------------------

def _varint(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    end = len(buf) if end is None else end
    val = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        if not b & 0x80:
            return val, pos
        shift += 7


def proto_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message, read off the wire."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > end:
                raise ValueError("truncated fixed64")
            val, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise ValueError("truncated length-delimited field")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            if pos + 4 > end:
                raise ValueError("truncated fixed32")
            val, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, val


def snappy_decompress(data: bytes, limit: int = MAX_HEADER) -> bytes:
    """Raw snappy (the block format LevelDB tables use), at most ``limit`` bytes out."""
    want, pos = _varint(data, 0)
    if want > limit:
        raise ValueError(f"snappy block claims {want} bytes")
    out = bytearray()
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            ln = tag >> 2
            if ln >= 60:
                k = ln - 59
                ln = int.from_bytes(data[pos:pos + k], "little")
                pos += k
            ln += 1
            if pos + ln > n:
                raise ValueError("snappy literal past the end")
            out += data[pos:pos + ln]
            pos += ln
        else:
            if kind == 1:
                ln, off = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | data[pos]
                pos += 1
            else:
                k = 2 if kind == 2 else 4
                ln, off = (tag >> 2) + 1, int.from_bytes(data[pos:pos + k], "little")
                pos += k
            if off == 0 or off > len(out):
                raise ValueError("snappy copy before the start")
            for _ in range(ln):  # copies may overlap their own output
                out.append(out[-off])
        if len(out) > want:
            raise ValueError("snappy block longer than it claims")
    if len(out) != want:
        raise ValueError(f"snappy block gives {len(out)} of {want} bytes")
    return bytes(out)


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    off, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return off, size, pos


def _read_block(path: str, data: bytes, off: int, size: int) -> bytes:
    if off + size + 5 > len(data):
        raise FormatError(path, f"index block at byte {off} ({size} bytes) runs past the end of the index")
    body, kind = data[off:off + size], data[off + size]
    (stored,) = struct.unpack_from("<I", data, off + size + 1)
    if mask(crc32c(data[off:off + size + 1])) != stored:
        raise FormatError(path, f"index block at byte {off} fails its crc32c (a corrupt index)")
    if kind == 0:
        return body
    if kind == 1:
        try:
            return snappy_decompress(body)
        except (ValueError, IndexError) as e:
            raise FormatError(path, f"index block at byte {off}: bad snappy data ({e})") from None
    raise FormatError(path, f"index block at byte {off} uses compression {kind} (only none and snappy are known)")


def _block_entries(path: str, block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise FormatError(path, "index block too short for its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise FormatError(path, f"index block has a bad restart count ({restarts})")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, end)
        unshared, pos = _varint(block, pos, end)
        vlen, pos = _varint(block, pos, end)
        if shared > len(key) or pos + unshared + vlen > end:
            raise FormatError(path, "index block entry runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def read_table(path: str, data: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of a LevelDB-format table held in ``data``, in key order."""
    if len(data) < FOOTER:
        raise FormatError(path, f"index is {len(data)} bytes, too short for a table footer")
    foot = data[-FOOTER:]
    if struct.unpack_from("<Q", foot, 40)[0] != TABLE_MAGIC:
        raise FormatError(path, "not a tensor-bundle index (bad table magic)")
    try:
        _mo, _ms, p = _block_handle(foot)
        io_, is_, _p = _block_handle(foot, p)
    except ValueError as e:
        raise FormatError(path, f"bad table footer ({e})") from None
    out: list[tuple[bytes, bytes]] = []
    for _k, handle in _block_entries(path, _read_block(path, data, io_, is_)):
        try:
            bo, bs, _p = _block_handle(handle)
        except ValueError as e:
            raise FormatError(path, f"bad block handle in the table index ({e})") from None
        for kv in _block_entries(path, _read_block(path, data, bo, bs)):
            out.append(kv)
            if len(out) > MAX_MEMBERS:
                raise FormatError(path, f"index holds more than {MAX_MEMBERS} entries")
    return out


# --- the bundle ------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One BundleEntryProto: where a tensor's bytes are and what they are."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None
    sliced: bool = False   # a partitioned variable's full entry (its slices hold the data)

    @property
    def coral_dtype(self) -> str | None:
        return DTYPES.get(self.dtype)


@dataclass(frozen=True)
class Bundle:
    num_shards: int
    little_endian: bool
    entries: list[Entry]


def _shape(path: str, name: str, raw: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for num, _wt, val in proto_fields(raw):
        if num == 2 and isinstance(val, bytes):
            size = 0
            for n2, _w2, v2 in proto_fields(val):
                if n2 == 1 and isinstance(v2, int):
                    size = v2 - (1 << 64) if v2 >= 1 << 63 else v2
            if not 0 <= size < 1 << 62:
                raise FormatError(path, f"tensor {name!r}: bad dimension {size}")
            dims.append(size)
        elif num == 3 and val:
            raise FormatError(path, f"tensor {name!r}: unknown rank in a saved tensor")
    if len(dims) > 64:
        raise FormatError(path, f"tensor {name!r}: {len(dims)} dimensions")
    return tuple(dims)


def _ordered_num(key: bytes, pos: int) -> tuple[int, int]:
    """One OrderedCode signed number (non-negative ones only: slice starts and lengths)."""
    b = key[pos]
    if not b & 0x80:
        raise ValueError("negative number")
    n = 1
    while n < 7 and b & (0x80 >> n):
        n += 1
    val = b & (0xFF >> (n + 1))
    for x in key[pos + 1:pos + n]:
        val = val << 8 | x
    if pos + n > len(key):
        raise ValueError("truncated number")
    return val, pos + n


def slice_name(key: bytes) -> str | None:
    """``name[start:stop,...]`` of a partitioned variable's slice key (OrderedCode: the
    number 0, the variable's name, the rank, a (start, length) pair per dimension), or
    None for a key of another form."""
    if not key.startswith(b"\x00"):
        return None
    try:
        end = key.index(b"\x00\x01", 1)
        name = key[1:end].replace(b"\x00\xff", b"\x00").decode("utf-8")
        pos = end + 2
        if key[pos] != 1:
            return None
        rank, pos = key[pos + 1], pos + 2
        dims = []
        for _ in range(rank):
            start, pos = _ordered_num(key, pos)
            length, pos = _ordered_num(key, pos)
            dims.append(f"{start}:{start + length}")
        return f"{name}[{','.join(dims)}]" if pos == len(key) else None
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def _entry(path: str, key: bytes, raw: bytes) -> Entry:
    name = slice_name(key) or key.decode("utf-8", "backslashreplace")
    f: dict[int, object] = {}
    sliced = False
    for num, _wt, val in proto_fields(raw):
        if num == 7:
            sliced = True
        else:
            f[num] = val
    shape = _shape(path, name, f[2]) if isinstance(f.get(2), bytes) else ()
    ints = [f.get(i, 0) for i in (1, 3, 4, 5)]
    if not all(isinstance(v, int) for v in ints):
        raise FormatError(path, f"tensor {name!r}: malformed entry")
    dtype, shard, offset, size = ints
    crc = f.get(6)
    return Entry(name, dtype, shape, shard, offset, size, crc if isinstance(crc, int) else None, sliced)


def parse_index(path: str, data: bytes) -> Bundle:
    """The header and entries of a ``.index`` file's bytes (FormatError names ``path``)."""
    try:
        rows = read_table(path, data)
        if not rows or rows[0][0] != b"":
            raise FormatError(path, "index has no bundle header (the empty key)")
        num_shards, little = 1, True
        for num, _wt, val in proto_fields(rows[0][1]):
            if num == 1 and isinstance(val, int):
                num_shards = val
            elif num == 2 and isinstance(val, int):
                little = val == 0
        if not 1 <= num_shards <= 99999:
            raise FormatError(path, f"bundle header claims {num_shards} shards")
        entries = [_entry(path, k, v) for k, v in rows[1:]]
    except FormatError:
        raise
    except (ValueError, IndexError, struct.error) as e:
        raise FormatError(path, f"malformed tensor-bundle index ({e})") from None
    for e in entries:
        if not e.sliced and not 0 <= e.shard < num_shards:
            raise FormatError(path, f"tensor {e.name!r}: shard {e.shard} of a {num_shards}-shard bundle")
    return Bundle(num_shards, little, entries)


def _string_crc(path: str, e: Entry, data: bytes) -> int:
    """TensorFlow's checksum of a string tensor: over each length (as uint32, or uint64
    past 4 GiB), the stored masked checksum of the lengths, then the strings' bytes."""
    n = math.prod(e.shape)
    pos, crc, total = 0, 0, 0
    for _ in range(n):
        ln, pos = _varint(data, pos)
        crc = crc32c(struct.pack("<I", ln) if ln <= 0xFFFFFFFF else struct.pack("<Q", ln), crc)
        total += ln
    if pos + 4 + total != len(data):
        raise FormatError(path, f"string tensor {e.name!r}: its lengths add up to {pos + 4 + total} bytes, "
                                f"the index says {len(data)}")
    crc = crc32c(data[pos:pos + 4], crc)
    return crc32c(data[pos + 4:], crc)


BLOCK = 16 << 20
MAX_STRING_TENSOR = 256 << 20


def _crc_of_range(f, n: int) -> int:
    """crc32c of the next ``n`` bytes of ``f``, read in blocks (a tensor may be gigabytes)."""
    crc = 0
    while n > 0:
        b = f.read(min(n, BLOCK))
        if not b:
            raise ValueError("shard ended early")
        crc = crc32c(b, crc)
        n -= len(b)
    return crc


def shard_layout(path: str, size: int, bundle: Bundle, shard: int, count: int, index: str) -> Layout:
    """The regions of data shard ``shard`` (of ``count``) of ``bundle``, each checked."""
    if count != bundle.num_shards:
        raise FormatError(path, f"named a shard of {count} but its index {index} says {bundle.num_shards}")
    regions: list[Region] = []
    with open(path, "rb") as f:
        for e in sorted((e for e in bundle.entries if not e.sliced and e.shard == shard), key=lambda e: e.offset):
            if e.offset < 0 or e.size < 0 or e.offset + e.size > size:
                raise FormatError(path, f"tensor {e.name!r}: bytes {e.offset}..{e.offset + e.size} "
                                        f"are outside the shard ({size} bytes), as its index {index} says")
            f.seek(e.offset)
            dt = e.coral_dtype
            if dt is not None:
                want = math.prod(e.shape) * dtypes.lookup(dt).width
                if want != e.size:
                    raise FormatError(path, f"tensor {e.name!r}: {e.size} bytes for shape {list(e.shape)} "
                                            f"(needs {want}), as its index {index} says")
                got = _crc_of_range(f, e.size)
            elif e.dtype == DT_STRING:
                if e.size > MAX_STRING_TENSOR:
                    raise FormatError(path, f"string tensor {e.name!r} of {e.size} bytes is over the "
                                            f"{MAX_STRING_TENSOR >> 20} MiB this reader checks")
                got = _string_crc(path, e, f.read(e.size))
            else:
                got = None  # a type this reader does not know (variant, resource): kept as bytes
            if e.crc is not None and got is not None and mask(got) != e.crc:
                raise FormatError(path, f"tensor {e.name!r}: crc32c mismatch against its index {index} (corrupt data)")
            if dt is not None and e.size:
                if bundle.little_endian:
                    regions.append(Region(e.offset, e.size, e.name, dt, e.shape))
                else:  # big-endian bytes: kept exact, but not typed as little-endian values
                    regions.append(Region(e.offset, e.size, e.name, "U8", (e.size,)))
    return Layout("tfbundle", regions)


MAX_INDEX = MAX_HEADER


def parse_shard(path: str, size: int, siblings) -> Layout | None:
    """The layout of a data shard whose sibling ``.index`` is in the commit; None when
    there is none (a file merely named like a shard is stored as any other file)."""
    m = SHARD_NAME.match(siblings.here.rpartition("/")[2])
    if m is None:
        return None
    index = m["prefix"] + ".index"
    data = siblings.read(index, path, MAX_INDEX)
    if data is None:
        return None
    try:
        bundle = parse_index(index, data)
    except FormatError as e:
        raise FormatError(path, f"its index {index}: {e.problem}" if e.path == index else e.problem) from None
    try:
        return shard_layout(path, size, bundle, int(m["shard"]), int(m["count"]), index)
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - the boundary of untrusted input
        raise FormatError(path, f"malformed tensor-bundle shard ({type(e).__name__}: {e})") from None


def bundle_files(prefix: str, bundle: Bundle) -> list[str]:
    """The data shard names of the bundle at ``prefix``."""
    return [f"{prefix}.data-{i:05d}-of-{bundle.num_shards:05d}" for i in range(bundle.num_shards)]


__all__ = ["Bundle", "Entry", "bundle_files", "crc32c", "mask", "parse_index",
           "parse_shard", "read_table", "shard_layout", "snappy_decompress"]
