"""Legacy torch files (``torch.save(..., _use_new_zipfile_serialization=False)``).

The file is a stream: five pickles (the magic number, the protocol version, the system
info, the object graph, the sorted list of storage keys), then one record per storage in
that order: an 8-byte little-endian element count and the storage's raw bytes. The
pickles are read without running them (coralfs.formats.torchpickle); each record's
length is its count times the width of its storage's dtype, so the records are walked
one by one and each storage becomes a typed region. A record this reader cannot size (a
storage of an unknown type) ends the walk: what follows stays literal bytes, stored
exactly. A record that runs past the end of the file, or pickles that are no pickles, make
a malformed file.

Storages are named by the state-dict key of the first tensor viewing them
(``model/l.weight``): the storage keys of this format are memory addresses that change
with every save, so they would give a second version no same-name delta base.
"""

from __future__ import annotations

import io
import logging
import pickletools

from ..objects import dtypes
from ..objects.regions import Region
from .base import FormatError, Layout, guarded
from .torchpickle import Scan, ScanUnpickler, View, fits, primary_names, scan

log = logging.getLogger(__name__)

# LONG1 of torch's legacy MAGIC_NUMBER 0x1950a86a20f9469cfc6c, as pickle protocol 2 writes it.
MAGIC_LONG = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
# The object graph of a legacy file holds no tensor bytes (they follow in records): a
# larger pickle is read no further and the whole file stays literal bytes.
MAX_PICKLE = 64 << 20
MAX_KEYS = 10_000_000


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are a legacy torch magic pickle."""
    return head[:1] == b"\x80" and MAGIC_LONG in head[:24]


def _pickle_end(path: str, data: bytes, start: int, what: str) -> int:
    """The offset just past the pickle starting at ``start`` of ``data`` (its STOP)."""
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        for op, _arg, pos in pickletools.genops(stream):
            if op.name == "STOP":
                return pos + 1
    except Exception as e:  # noqa: BLE001 - an unreadable opcode: a malformed file
        if stream.tell() < len(data):
            raise FormatError(path, f"legacy torch file: the {what} is not a pickle ({e})") from None
    raise _Truncated(path, f"legacy torch file: the {what} pickle is truncated")


class _Truncated(FormatError):
    """The head read so far ends inside a pickle (more of the file may complete it)."""


def _load_small(path: str, data: bytes, what: str):
    """A small header pickle (magic, protocol, sys info, storage keys), read with stand-ins."""
    if not fits(data):
        raise FormatError(path, f"legacy torch file: the {what} pickle is too large to read safely "
                                f"({len(data)} bytes)")
    try:
        return ScanUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - untrusted bytes
        raise FormatError(path, f"legacy torch file: the {what} does not load ({type(e).__name__})") from None


def read_head(path: str, f, size: int) -> tuple[int, bytes, list[str]] | None:
    """(offset of the first storage record, the object-graph pickle, storage keys), or
    None when the pickles are over the cap (the file then stays literal bytes). The head
    is read in 1 MiB first (pickles are usually small), then up to the cap."""
    for cap in (1 << 20, MAX_PICKLE):
        f.seek(0)
        head = f.read(min(size, cap))
        try:
            return _parse_head(path, head)
        except _Truncated:
            if len(head) == size:
                raise
    log.warning("%s: legacy torch pickles over %d MiB: stored as bytes", path, MAX_PICKLE >> 20)
    return None


def _parse_head(path: str, head: bytes) -> tuple[int, bytes, list[str]]:
    pos = 0
    ends = []
    for what in ("magic number", "protocol version", "system info", "object graph", "storage key list"):
        end = _pickle_end(path, head, pos, what)
        ends.append((pos, end))
        pos = end
    magic = _load_small(path, head[ends[0][0]:ends[0][1]], "magic number")
    if magic != MAGIC_NUMBER:
        raise FormatError(path, "not a legacy torch file (bad magic number)")
    proto = _load_small(path, head[ends[1][0]:ends[1][1]], "protocol version")
    if proto != PROTOCOL_VERSION:
        raise FormatError(path, f"legacy torch protocol {proto!r} is not {PROTOCOL_VERSION}")
    info = _load_small(path, head[ends[2][0]:ends[2][1]], "system info")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise FormatError(path, "legacy torch file: not written on a little-endian machine (unsupported)")
    keys = _load_small(path, head[ends[4][0]:ends[4][1]], "storage key list")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS or not all(isinstance(k, str) for k in keys):
        raise FormatError(path, "legacy torch file: the storage key list is not a list of strings")
    return ends[4][1], head[ends[3][0]:ends[3][1]], keys


@guarded("legacy torch")
def parse(path: str, size: int) -> Layout:
    with open(path, "rb") as f:
        got = read_head(path, f, size)
        if got is None:
            return Layout("torch-legacy")
        pos, graph, keys = got
        sc = scan(path, graph)
        names = region_names(sc, keys)
        regions: list[Region] = []
        for key in keys:
            f.seek(pos)
            rec = f.read(8)
            if len(rec) != 8:
                raise FormatError(path, f"legacy torch file: storage {key} record truncated at byte {pos}")
            count = int.from_bytes(rec, "little")
            written_as = sc.classes.get(key)
            if written_as is None:
                log.warning("%s: storage %s has no known type: the rest of the file stored as bytes", path, key)
                break
            n = count * dtypes.lookup(written_as).width
            if pos + 8 + n > size:
                raise FormatError(path, f"legacy torch file: storage {key} of {n} bytes runs past the end of the file")
            numel = sc.numels.get(key)
            if numel is not None and numel != count:
                raise FormatError(path, f"legacy torch file: storage {key} holds {count} elements, its pickle says {numel}")
            name = names[key]
            # An UntypedStorage is written as bytes; its tensors' dtype types it where it fits.
            dt = dtypes.lookup(sc.dtypes.get(key) or written_as)
            if n % dt.width:
                dt = dtypes.lookup("U8")
            regions.append(Region(pos + 8, n, name, dt.name, _shape(sc.views.get(key), dt.name, n // dt.width)))
            pos += 8 + n
    return Layout("torch-legacy", regions)


def region_names(sc: Scan, keys: list[str]) -> dict[str, str]:
    """Storage key -> region name: the first viewing tensor's key path, unique; a storage
    no tensor names (or a repeated key) is ``storage/<key>``."""
    primary = primary_names(sc.views)
    out: dict[str, str] = {}
    used: set[str] = set()
    for key in keys:
        name = primary.get(key) or f"storage/{key}"
        if name in used:
            name = f"storage/{key}"
        used.add(name)
        out[key] = name
    return out


def _shape(views: list[View] | None, dtype: str, count: int) -> tuple[int, ...]:
    """The storage's shape: its one tensor's shape where that tensor is the whole storage,
    contiguous and of its dtype; else flat."""
    if views and len(views) == 1 and views[0].dtype == dtype and views[0].covers(count):
        return views[0].shape
    return (count,)
