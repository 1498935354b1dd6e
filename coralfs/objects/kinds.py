"""The object kinds: Tensor, File, Tree, Commit, Tag (chunks are raw bytes in frames).

Each kind is one class with a ``type_name``, ``_serialize``/``_deserialize`` and public
``to_bytes()``/``from_bytes()``. Serialization is canonical (equal content gives equal
bytes gives an equal id) and versioned: every object starts with ``b"CRO"``, a type byte
and a version byte. Golden-byte tests pin these formats.
"""

from __future__ import annotations

import json
import math
import posixpath
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from . import dtypes
from .errors import CoralError
from .ids import ObjectId, from_hex, hash_bytes, to_hex
from .wire import _U8, _U16, _U32, Encoder, Reader, WireError

OBJ_MAGIC = b"CRO"
MAX_NDIM = 64
MODE_FILE = 0o644
MODE_EXEC = 0o755
# A symbolic link: the entry's file is a File whose content is the link's target, stored as
# text and never followed (on commit, mount or export).
MODE_SYMLINK = 0o120000
# An empty directory (directories with entries are implied by their paths): the entry's
# file is the empty File, so walks over trees (gc, fsck, push) need no special case.
MODE_DIR = 0o040000
_TAIL = struct.Struct("<QQ")
S = TypeVar("S", bound="ShaObject")


class InvalidObject(CoralError):
    """Object content that violates its kind's rules (raised before anything is stored)."""


class ShaObject:
    """Base of every structured object."""

    __slots__ = ()
    type_name: ClassVar[str]
    type_num: ClassVar[int]
    version: ClassVar[int] = 1
    versions: ClassVar[tuple[int, ...]] = (1,)  # every version this kind can read

    def _version(self) -> int:
        """The version this object serializes as (the oldest that can express it, so
        objects that need nothing new keep their bytes and ids)."""
        return self.version

    def _serialize(self, w: Encoder) -> None:
        raise NotImplementedError

    @classmethod
    def _deserialize(cls, r: Reader):
        raise NotImplementedError

    @classmethod
    def from_bytes(cls: type[S], data: bytes) -> S:
        """Parse canonical bytes of this kind; WireError if malformed or another kind."""
        obj = parse_object(data)
        if not isinstance(obj, cls):
            raise WireError(f"is a {obj.type_name}, not a {cls.type_name}")
        return obj

    def to_bytes(self) -> bytes:
        w = Encoder()
        w.raw(OBJ_MAGIC)
        w.u8(self.type_num)
        w.u8(self._version())
        self._serialize(w)
        return w.getvalue()

    @property
    def id(self) -> ObjectId:
        return hash_bytes(self.to_bytes())

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_bytes() == other.to_bytes()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(self.to_bytes())


def parse_object(data: bytes) -> ShaObject:
    """Parse any structured object; WireError on malformed bytes."""
    if len(data) < 5 or data[:3] != OBJ_MAGIC:
        raise WireError("not a structured object")
    cls = REGISTRY.get(data[3])
    if cls is None:
        raise WireError(f"unknown object type {data[3]}")
    if data[4] not in cls.versions:
        raise WireError(f"unsupported {cls.type_name} version {data[4]}")
    r = Reader(data, 5)
    obj = cls._deserialize(r)
    r.end()
    if obj._version() != data[4]:
        # Canonical bytes: content that version 1 can express is never stored as 2.
        raise WireError(f"{cls.type_name} stored as version {data[4]} but its content is version {obj._version()}")
    return obj


def object_type(data: bytes) -> str | None:
    """The type name of serialized bytes, or None for raw chunk bytes."""
    if len(data) >= 5 and data[:3] == OBJ_MAGIC and data[3] in REGISTRY:
        return REGISTRY[data[3]].type_name
    return None


# -- Tensor -------------------------------------------------------------------------------

class Tensor(ShaObject):
    """A typed array: dtype, shape and the ids of the chunks holding its bytes.

    Chunk i covers bytes ``[i * chunk_size, (i + 1) * chunk_size)`` (the last may be short),
    so a reader finds the chunk of any offset without loading anything else.
    """

    __slots__ = ("dtype", "shape", "chunk_size", "chunks")
    type_name = "tensor"
    type_num = 1

    def __init__(self, dtype: str, shape: tuple[int, ...], chunk_size: int,
                 chunks: list[ObjectId]) -> None:
        self.dtype = dtype
        self.shape = tuple(int(s) for s in shape)
        self.chunk_size = chunk_size
        self.chunks = list(chunks)
        self._check()

    @property
    def width(self) -> int:
        return dtypes.lookup(self.dtype).width

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.width

    def chunk_lengths(self) -> list[int]:
        n = self.nbytes
        return [min(self.chunk_size, n - i * self.chunk_size) for i in range(len(self.chunks))]

    def _check(self) -> None:
        try:
            dt = dtypes.lookup(self.dtype)
        except ValueError as e:
            raise InvalidObject(str(e)) from None
        if len(self.shape) > MAX_NDIM or any(s < 0 for s in self.shape):
            raise InvalidObject(f"bad tensor shape {self.shape}")
        if self.chunk_size <= 0 or self.chunk_size % dt.width:
            raise InvalidObject(f"chunk size {self.chunk_size} is not a multiple of {dt.width}")
        want = -(-self.nbytes // self.chunk_size)
        if len(self.chunks) != want:
            raise InvalidObject(f"tensor of {self.nbytes} bytes needs {want} chunks, has {len(self.chunks)}")

    def _serialize(self, w: Encoder) -> None:
        w.text(self.dtype)
        w.u8(len(self.shape))
        for s in self.shape:
            w.u64(s)
        w.u64(self.chunk_size)
        w.u32(len(self.chunks))
        for c in self.chunks:
            w.oid(c)

    @classmethod
    def _deserialize(cls, r: Reader) -> Tensor:
        dtype = r.text()
        ndim = r.u8()
        if ndim > MAX_NDIM:
            raise WireError("too many dimensions")
        shape = tuple(r.u64() for _ in range(ndim))
        chunk_size = r.u64()
        chunks = [r.oid() for _ in range(r.count(32))]
        try:
            return cls(dtype, shape, chunk_size, chunks)
        except InvalidObject as e:
            raise WireError(str(e)) from None


# -- File ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BytesSegment:
    """Literal bytes stored as content-defined chunks: ((chunk id, length), ...)."""

    chunks: tuple[tuple[ObjectId, int], ...]

    @property
    def length(self) -> int:
        return sum(n for _, n in self.chunks)


@dataclass(frozen=True, slots=True)
class TensorSegment:
    """A typed region: the tensor's id, its name inside the file and its byte length
    (kept here so a reader can lay out a file without loading every tensor)."""

    name: str
    tensor: ObjectId
    length: int


@dataclass(frozen=True, slots=True)
class PackedTensor:
    """A small tensor inside a PackSegment: its bytes are ``[offset, offset + length)``
    of the segment. ``digest`` (SHA-256 of those bytes) identifies its content, as a
    Tensor id does for a stored tensor, without an object per tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    digest: ObjectId


@dataclass(frozen=True, slots=True)
class PackSegment:
    """A run of small tensors (and the small literal gaps between them) stored as one
    byte range of content-defined chunks, with each tensor's metadata kept: a file of
    300,000 tiny tensors is a few chunks, not 600,000 objects (File version 2)."""

    chunks: tuple[tuple[ObjectId, int], ...]
    tensors: tuple[PackedTensor, ...]

    @property
    def length(self) -> int:
        return sum(n for _, n in self.chunks)


Segment = BytesSegment | TensorSegment | PackSegment
TensorRef = TensorSegment | PackedTensor  # what File.tensors() maps names to


def _check_pack(seg: PackSegment) -> None:
    pos, total = 0, seg.length
    for t in seg.tensors:
        try:
            width = dtypes.lookup(t.dtype).width
        except ValueError as e:
            raise InvalidObject(str(e)) from None
        if len(t.shape) > MAX_NDIM or any(x < 0 for x in t.shape):
            raise InvalidObject(f"packed tensor {t.name!r}: bad shape {t.shape}")
        if math.prod(t.shape) * width != t.length:
            raise InvalidObject(f"packed tensor {t.name!r}: shape {t.shape} of {t.dtype} is not {t.length} bytes")
        if t.offset < pos or t.offset + t.length > total:
            raise InvalidObject(f"packed tensor {t.name!r} overlaps another or lies outside its pack")
        pos = t.offset + t.length


class File(ShaObject):
    """A file as ordered segments; concatenating them gives back the file exactly."""

    __slots__ = ("size", "format", "segments")
    type_name = "file"
    type_num = 2
    versions = (1, 2)  # 2: PackSegments may appear

    def __init__(self, format: str, segments: list[Segment]) -> None:
        self.format = format
        self.segments = list(segments)
        self.size = sum(s.length for s in self.segments)
        for s in self.segments:
            if isinstance(s, PackSegment):
                _check_pack(s)

    def _version(self) -> int:
        return 2 if any(isinstance(s, PackSegment) for s in self.segments) else 1

    def tensors(self) -> dict[str, TensorRef]:
        out: dict[str, TensorRef] = {}
        for s in self.segments:
            if isinstance(s, TensorSegment):
                out[s.name] = s
            elif isinstance(s, PackSegment):
                for t in s.tensors:
                    out[t.name] = t
        return out

    def tensor_offsets(self) -> dict[str, tuple[int, TensorRef]]:
        """Name -> (start of the tensor's bytes in the file, its TensorSegment or
        PackedTensor)."""
        out: dict[str, tuple[int, TensorRef]] = {}
        pos = 0
        for s in self.segments:
            if isinstance(s, TensorSegment):
                out[s.name] = (pos, s)
            elif isinstance(s, PackSegment):
                for t in s.tensors:
                    out[t.name] = (pos + t.offset, t)
            pos += s.length
        return out

    def _serialize(self, w: Encoder) -> None:
        w.text(self.format)
        w.u64(self.size)
        w.u32(len(self.segments))
        for s in self.segments:
            if isinstance(s, BytesSegment):
                w.u8(0)
                w.u32(len(s.chunks))
                for oid, n in s.chunks:
                    w.oid(oid)
                    w.u64(n)
            elif isinstance(s, TensorSegment):
                w.u8(1)
                w.text(s.name, wide=True)
                w.oid(s.tensor)
                w.u64(s.length)
            else:
                w.u8(2)
                w.u32(len(s.chunks))
                for oid, n in s.chunks:
                    w.oid(oid)
                    w.u64(n)
                w.u32(len(s.tensors))
                for t in s.tensors:
                    # One part per tensor (the same bytes as text/u8/u64/oid calls): a
                    # pack can hold 10^5 tensors, and a part per field costs memory.
                    name, dt = t.name.encode("utf-8"), t.dtype.encode("utf-8")
                    w.raw(b"".join((_U32.pack(len(name)), name, _U16.pack(len(dt)), dt,
                                    _U8.pack(len(t.shape)), struct.pack(f"<{len(t.shape)}Q", *t.shape),
                                    _TAIL.pack(t.offset, t.length), t.digest)))

    @classmethod
    def _deserialize(cls, r: Reader) -> File:
        fmt = r.text()
        size = r.u64()
        segs: list[Segment] = []
        for _ in range(r.count(5)):
            kind = r.u8()
            if kind == 0:
                segs.append(BytesSegment(tuple((r.oid(), r.u64()) for _ in range(r.count(40)))))
            elif kind == 1:
                segs.append(TensorSegment(r.text(wide=True), r.oid(), r.u64()))
            elif kind == 2:
                chunks = tuple((r.oid(), r.u64()) for _ in range(r.count(40)))
                segs.append(PackSegment(chunks, tuple(_read_packed(r) for _ in range(r.count(55)))))
            else:
                raise WireError(f"unknown segment kind {kind}")
        try:
            f = cls(fmt, segs)
        except InvalidObject as e:
            raise WireError(str(e)) from None
        if f.size != size:
            raise WireError(f"file size {size} does not match its segments ({f.size})")
        return f


def _read_packed(r: Reader) -> PackedTensor:
    name, dtype = r.text(wide=True), r.text()
    ndim = r.u8()
    if ndim > MAX_NDIM:
        raise WireError("too many dimensions")
    shape = tuple(r.u64() for _ in range(ndim))
    return PackedTensor(name, dtype, shape, r.u64(), r.u64(), r.oid())


# -- Tree ---------------------------------------------------------------------------------

def validate_path(path: str) -> str:
    """A tree path: relative, '/'-separated, no empty, '.' or '..' parts, no NUL."""
    if not path or path.startswith("/") or "\0" in path or "\\" in path:
        raise InvalidObject(f"invalid path {path!r}: paths are relative and use '/'")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidObject(f"invalid path {path!r}: no empty, '.' or '..' parts")
    if parts[0] == ".coral":
        raise InvalidObject(f"invalid path {path!r}: .coral/ is reserved")
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogateescape)
            raise InvalidObject(f"invalid path {path!r}: not UTF-8 (tree paths are UTF-8; rename the file)") from None
    return path


@dataclass(frozen=True, slots=True)
class TreeEntry:
    file: ObjectId
    mode: int = MODE_FILE

    @property
    def is_symlink(self) -> bool:
        return self.mode == MODE_SYMLINK

    @property
    def is_dir(self) -> bool:
        return self.mode == MODE_DIR


class Tree(ShaObject):
    """A flat, sorted map of path -> file (directories are implied by the paths; an empty
    directory is an entry of mode MODE_DIR, which no other path may lie under)."""

    __slots__ = ("entries",)
    type_name = "tree"
    type_num = 3

    def __init__(self, entries: dict[str, TreeEntry]) -> None:
        for p in entries:
            validate_path(p)
        self.entries = dict(sorted(entries.items(), key=lambda kv: kv[0].encode("utf-8")))
        dirs = {posixpath.dirname(p) for p in self.entries}
        prefixes = set()
        for d in dirs:
            while d:
                prefixes.add(d)
                d = posixpath.dirname(d)
        clash = prefixes & self.entries.keys()
        if clash:
            p = sorted(clash)[0]
            if self.entries[p].mode == MODE_DIR:
                raise InvalidObject(f"directory entry {p!r} is not empty (only empty directories are entries)")
            raise InvalidObject(f"path {p!r} is both a file and a directory")

    def _serialize(self, w: Encoder) -> None:
        w.u32(len(self.entries))
        for path, e in self.entries.items():
            w.text(path)
            w.u32(e.mode)
            w.oid(e.file)

    @classmethod
    def _deserialize(cls, r: Reader) -> Tree:
        entries: dict[str, TreeEntry] = {}
        last = None
        for _ in range(r.count(38)):
            p = r.text()
            mode = r.u32()
            e = TreeEntry(r.oid(), mode)
            key = p.encode("utf-8")
            if last is not None and key <= last:
                raise WireError("tree entries are not sorted and unique")
            last = key
            entries[p] = e
        try:
            return cls(entries)
        except InvalidObject as e:
            raise WireError(str(e)) from None


# -- Commit and Tag -----------------------------------------------------------------------

def canonical_json(obj) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except ValueError as e:
        raise InvalidObject(f"metadata must be finite JSON values: {e}") from None


class _JsonObject(ShaObject):
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]]

    def _serialize(self, w: Encoder) -> None:
        w.raw(canonical_json(self._to_json()))

    @classmethod
    def _deserialize(cls, r: Reader):
        body = r.buf[r.pos:]
        r.pos = len(r.buf)
        try:
            d = json.loads(body.decode("utf-8"))
            if not isinstance(d, dict) or set(d) != set(cls._fields):
                raise WireError(f"{cls.type_name} fields are {sorted(d) if isinstance(d, dict) else d}")
            return cls._from_json(d)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise WireError(f"bad {cls.type_name}: {e}") from None


class Commit(_JsonObject):
    """A snapshot: tree, parents (two or more for a merge), author, time, message and
    structured metadata (metrics, config, dataset hashes, source model...)."""

    __slots__ = ("tree", "parents", "author", "time", "message", "metadata")
    type_name = "commit"
    type_num = 4
    _fields = ("tree", "parents", "author", "time", "message", "metadata")

    def __init__(self, tree: ObjectId, parents: list[ObjectId], author: str, time: int,
                 message: str, metadata: dict | None = None) -> None:
        self.tree = tree
        self.parents = list(parents)
        self.author = author
        self.time = int(time)
        self.message = message
        self.metadata = dict(metadata or {})
        canonical_json(self.metadata)

    def _to_json(self) -> dict:
        return {"tree": to_hex(self.tree), "parents": [to_hex(p) for p in self.parents],
                "author": self.author, "time": self.time, "message": self.message,
                "metadata": self.metadata}

    @classmethod
    def _from_json(cls, d: dict) -> Commit:
        return cls(from_hex(d["tree"]), [from_hex(p) for p in d["parents"]], str(d["author"]),
                   int(d["time"]), str(d["message"]), dict(d["metadata"]))


class Tag(_JsonObject):
    """An annotated tag: a name for a commit with a message (semantic versions live here)."""

    __slots__ = ("target", "name", "tagger", "time", "message")
    type_name = "tag"
    type_num = 5
    _fields = ("target", "name", "tagger", "time", "message")

    def __init__(self, target: ObjectId, name: str, tagger: str, time: int, message: str) -> None:
        self.target = target
        self.name = name
        self.tagger = tagger
        self.time = int(time)
        self.message = message

    def _to_json(self) -> dict:
        return {"target": to_hex(self.target), "name": self.name, "tagger": self.tagger,
                "time": self.time, "message": self.message}

    @classmethod
    def _from_json(cls, d: dict) -> Tag:
        return cls(from_hex(d["target"]), str(d["name"]), str(d["tagger"]), int(d["time"]),
                   str(d["message"]))


REGISTRY: dict[int, type[ShaObject]] = {c.type_num: c for c in (Tensor, File, Tree, Commit, Tag)}
