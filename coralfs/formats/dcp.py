"""PyTorch distributed checkpoints (``torch.distributed.checkpoint``): ``.metadata`` + shards.

``dcp.save`` writes one ``__R_S.distcp`` file per rank and writer thread and a pickled
``Metadata`` in ``.metadata``. Its ``state_dict_metadata`` gives each tensor's dtype,
global size and chunks (offsets and sizes); its ``storage_data`` maps each chunk
(``MetadataIndex(fqn, offset, index)``) to ``_StorageInfo(relative_path, offset,
length, transform_descriptors)``: where the chunk's raw bytes lie in which shard. So a
shard's layout comes from its sibling ``.metadata``. The file system writer stores each
tensor chunk as ``torch.save(chunk)``: a small zip whose uncompressed ``data/0`` member
is the storage, so that member's bytes (located through its local header, inside the
item's range) become a typed region; an item of raw elements (length = sizes x width)
is a region as it is. A chunk with transforms (compression) or non-tensor bytes
(``BytesStorageMetadata``: pickled Python objects) stays literal bytes.

The metadata is a pickle and is never loaded with the real classes: a restricted
unpickler turns every global into an inert record of what the pickle gave it (call
arguments, state, items), imports nothing and runs nothing, and the records are then
read as plain data. Anything it does not recognise is refused as malformed metadata.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from dataclasses import dataclass

from ..objects import dtypes
from ..objects.regions import Region
from .base import MAX_MEMBERS, FormatError, Layout, Window
from .torchpickle import TORCH_DTYPES, fits
from .ziparchive import member_data_offset

METADATA = ".metadata"


class _Record:
    """A global as the pickle names it: calling it, NEWOBJ, BUILD, SETITEMS and APPENDS
    only record what they are given."""

    module = ""
    name = ""

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.state, self.items = args, None, {}
        return self

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __setitem__(self, k, v) -> None:
        self.items[k] = v

    def append(self, v) -> None:
        self.items[len(self.items)] = v

    def extend(self, vs) -> None:
        for v in vs:
            self.append(v)

    def field(self, key: str, pos: int | None = None):
        """A dataclass field from the recorded state (a dict, or (dict, slots), or a
        tuple when ``pos`` is given)."""
        st = self.state
        if isinstance(st, tuple) and len(st) == 2 and (st[0] is None or isinstance(st[0], dict)) \
                and isinstance(st[1], dict):
            st = {**(st[0] or {}), **st[1]}
        if isinstance(st, dict) and key in st:
            return st[key]
        if pos is not None and isinstance(st, tuple) and len(st) > pos:
            return st[pos]
        raise ValueError(f"{self.name} has no field {key!r}")


class _Unpickler(pickle.Unpickler):
    def __init__(self, f) -> None:
        super().__init__(f)
        self._classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        cls = self._classes.get((module, name))
        if cls is None:
            cls = type(name, (_Record,), {"module": module, "name": name})
            self._classes[(module, name)] = cls
        return cls

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids do not belong in DCP metadata")


def _ints(x, what: str) -> tuple[int, ...]:
    """A torch.Size (recorded as Size(tuple)) or a plain tuple/list of ints."""
    if isinstance(x, _Record) and x.name == "Size" and len(x.args) == 1:
        x = x.args[0]
    if not isinstance(x, (tuple, list)) or len(x) > 64 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62 for v in x):
        raise ValueError(f"{what} is not a list of sizes")
    return tuple(x)


@dataclass(frozen=True)
class Chunk:
    """One stored chunk of a tensor: where its bytes are and what they are."""

    fqn: str
    dtype: str | None          # coralfs dtype, None for non-tensor bytes
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str                  # the shard, relative to the checkpoint directory
    offset: int
    length: int
    transformed: bool          # compressed or otherwise rewritten: not raw elements

    @property
    def name(self) -> str:
        if not self.offsets or not any(self.offsets):
            return self.fqn
        return f"{self.fqn}[{','.join(f'{o}:{o + s}' for o, s in zip(self.offsets, self.sizes, strict=True))}]"


def _dtype_of(props) -> str | None:
    if not isinstance(props, _Record):
        return None
    try:
        dt = props.field("dtype", 0)
    except ValueError:
        return None
    if isinstance(dt, type) and issubclass(dt, _Record) and dt.module == "torch":
        return TORCH_DTYPES.get(dt.name, "U8")
    return None


def parse_metadata(path: str, data: bytes) -> list[Chunk]:
    """Every chunk a ``.metadata`` pickle records (FormatError names ``path``)."""
    if not fits(data):
        raise FormatError(path, f"a .metadata pickle of {len(data)} bytes is too large to read safely")
    try:
        meta = _Unpickler(io.BytesIO(data)).load()
        if not isinstance(meta, _Record) or meta.name != "Metadata":
            raise ValueError("not a torch.distributed.checkpoint Metadata")
        sdm = meta.field("state_dict_metadata", 0)
        storage = meta.field("storage_data", 2)
        if not isinstance(sdm, dict) or not isinstance(storage, dict):
            raise ValueError("state_dict_metadata or storage_data is not a dict")
        if len(storage) > MAX_MEMBERS:
            raise ValueError(f"more than {MAX_MEMBERS} stored items")
        kinds: dict[str, str | None] = {}
        for fqn, m in sdm.items():
            if not isinstance(fqn, str) or not isinstance(m, _Record):
                raise ValueError(f"entry {fqn!r} is not a storage metadata record")
            kinds[fqn] = _dtype_of(m.field("properties", 0)) if m.name == "TensorStorageMetadata" else None
        out = []
        for idx, info in storage.items():
            if not isinstance(idx, _Record) or not isinstance(info, _Record):
                raise ValueError("storage_data holds something other than MetadataIndex -> _StorageInfo")
            fqn = idx.field("fqn", 0)
            if not isinstance(fqn, str) or fqn not in kinds:
                raise ValueError(f"stored item {fqn!r} is not in state_dict_metadata")
            rel, off, ln = info.field("relative_path", 0), info.field("offset", 1), info.field("length", 2)
            try:
                tr = info.field("transform_descriptors", 3)
            except ValueError:
                tr = None
            if not isinstance(rel, str) or not all(isinstance(v, int) and not isinstance(v, bool) for v in (off, ln)):
                raise ValueError(f"stored item {fqn!r} has a bad file, offset or length")
            offsets = _ints(idx.field("offset", 1), f"{fqn!r} chunk offset") if kinds[fqn] else ()
            sizes = ()
            if kinds[fqn]:
                sizes = _chunk_sizes(sdm[fqn], offsets, fqn)
            out.append(Chunk(fqn, kinds[fqn], offsets, sizes, rel, off, ln, bool(tr)))
        return out
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - the boundary of an untrusted pickle
        raise FormatError(path, f"malformed DCP metadata ({type(e).__name__}: {e})") from None


def _chunk_sizes(m: _Record, offsets: tuple[int, ...], fqn: str) -> tuple[int, ...]:
    chunks = m.field("chunks", 2)
    if isinstance(chunks, _Record):
        chunks = list(chunks.items.values())
    if not isinstance(chunks, list):
        raise ValueError(f"{fqn!r} chunks is not a list")
    for c in chunks:
        if isinstance(c, _Record) and _ints(c.field("offsets", 0), f"{fqn!r} offsets") == offsets:
            return _ints(c.field("sizes", 1), f"{fqn!r} sizes")
    raise ValueError(f"{fqn!r} has no chunk at offset {list(offsets)}")


def _saved_storage(path: str, f, c: Chunk) -> tuple[int, int] | None:
    """(offset in the shard, length) of the storage bytes of a chunk written as
    ``torch.save(tensor)`` (a zip of data.pkl and one uncompressed ``data/0``), or None
    when the item is not such a zip."""
    head = Window(f, c.offset, c.length)
    head.seek(0)
    if head.read(4) != b"PK\x03\x04":
        return None
    try:
        zf = zipfile.ZipFile(io.BufferedReader(Window(f, c.offset, c.length)))
    except zipfile.BadZipFile as e:
        raise FormatError(path, f"{c.name!r}: its saved tensor is a broken zip ({e})") from None
    data = [i for i in zf.infolist() if i.filename.endswith("/data/0")]
    if len(data) != 1 or data[0].compress_type != zipfile.ZIP_STORED:
        return None
    info = data[0]
    start = member_data_offset(f"{path}: {c.name!r}'s saved tensor", Window(f, c.offset, c.length), info, c.length)
    return c.offset + start, info.compress_size


def shard_layout(path: str, size: int, chunks: list[Chunk], shard: str) -> Layout:
    """The regions of shard ``shard`` (its name in the checkpoint directory)."""
    regions = []
    with open(path, "rb") as f:
        for c in sorted((c for c in chunks if c.file == shard), key=lambda c: c.offset):
            if c.offset < 0 or c.length < 0 or c.offset + c.length > size:
                raise FormatError(path, f"{c.name!r}: bytes {c.offset}..{c.offset + c.length} are outside the "
                                        f"shard ({size} bytes), as {METADATA} says")
            if c.dtype is None or c.transformed or not c.length:
                continue
            want = math.prod(c.sizes) * dtypes.lookup(c.dtype).width
            if c.length == want:  # raw elements
                regions.append(Region(c.offset, c.length, c.name, c.dtype, c.sizes))
                continue
            got = _saved_storage(path, f, c)
            if got is None:
                continue
            off, ln = got
            if ln == want:
                regions.append(Region(off, ln, c.name, c.dtype, c.sizes))
            elif ln:  # a view's whole storage was saved: its bytes, untyped
                regions.append(Region(off, ln, c.name, "U8", (ln,)))
    return Layout("dcp", regions)


def parse_shard(path: str, size: int, siblings) -> Layout | None:
    """The layout of a ``__R_S.distcp`` shard with a sibling ``.metadata``; None without one."""
    data = siblings.read(METADATA, path)
    if data is None:
        return None
    try:
        chunks = parse_metadata(METADATA, data)
    except FormatError as e:
        raise FormatError(path, f"its {METADATA}: {e.problem}") from None
    try:
        return shard_layout(path, size, chunks, siblings.here.rpartition("/")[2])
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - the boundary of untrusted input
        raise FormatError(path, f"malformed DCP shard ({type(e).__name__}: {e})") from None


__all__ = ["Chunk", "parse_metadata", "parse_shard", "shard_layout"]
