"""ONNX models (``.onnx``): a protobuf ModelProto whose initializers hold the weights.

The protobuf wire format is read here directly (no ``onnx`` package needed to commit a
model): only the path ModelProto.graph -> GraphProto.initializer / Constant nodes ->
TensorProto is followed, every other field is skipped by its length, so a model's weights
are never copied. A tensor's ``raw_data`` (or a packed ``float_data`` / ``double_data``,
which are little-endian floats too) becomes a typed region at its byte offset; its length
must be what dims x data_type need. A tensor kept in external data (``data_location``
EXTERNAL, ``external_data`` location/offset/length) becomes a region of that file,
reported in :attr:`Layout.siblings` for coralfs/ingest.py to give to the data file when
it is committed with the model. Everything else (the graph, names, typed fields that are
varints) is literal bytes, so the file comes back byte-identical by construction.

Untrusted input: every length is checked against its enclosing message, nesting and counts
are capped, a varint is at most 10 bytes, dims are non-negative and bounded, and an
external location must stay inside the model's directory.
"""

from __future__ import annotations

import math
import mmap
import posixpath
from dataclasses import dataclass, field

from ..objects import dtypes
from ..objects.regions import Region
from .base import MAX_MEMBERS, FormatError, Layout, guarded

# ONNX TensorProto.DataType -> coralfs dtype name (None: no fixed-width element).
DATA_TYPES: dict[int, str] = {
    1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16",
    11: "F64", 12: "U32", 13: "U64", 14: "C64", 15: "C128", 16: "BF16", 17: "F8_E4M3",
    18: "F8_E4M3FNUZ", 19: "F8_E5M2", 20: "F8_E5M2FNUZ", 24: "F8_E8M0",
}
# Sub-byte element types (bits per element), packed: stored as opaque bytes, sizes checked.
SUB_BYTE: dict[int, int] = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2, 27: 6, 28: 6}
ONNX_TYPE = {v: k for k, v in DATA_TYPES.items()}
OPAQUE = "U8"

MAX_DIMS = 64
MAX_DEPTH = 8            # graph nesting followed for Constant nodes and attributes
MAX_TENSORS = MAX_MEMBERS
_MAX_EXTERNAL_KEYS = 16

# Field numbers of onnx.proto3 that the reader follows.
_MODEL_IR, _MODEL_PRODUCER, _MODEL_GRAPH, _MODEL_OPSET = 1, 2, 7, 8
_GRAPH_NODE, _GRAPH_INIT = 1, 5
_NODE_OUTPUT, _NODE_OPTYPE, _NODE_ATTR = 2, 4, 5
_ATTR_NAME, _ATTR_T = 1, 5
_T_DIMS, _T_TYPE, _T_FLOAT, _T_NAME, _T_RAW, _T_DOUBLE, _T_EXT, _T_LOC = 1, 2, 4, 8, 9, 10, 13, 14


@dataclass
class TensorInfo:
    """One tensor of the model: where its bytes are (in the file, or an external file)."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    offset: int | None = None      # of its bytes in the .onnx (raw_data / packed floats)
    length: int = 0
    location: str | None = None    # external data file, relative to the model's directory
    ext_offset: int = 0
    ext_length: int | None = None  # None: to the end of the data file

    @property
    def dtype(self) -> str:
        return DATA_TYPES.get(self.data_type, OPAQUE)


@dataclass
class ModelInfo:
    ir_version: int = 0
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)


class _Reader:
    """Protobuf wire-format fields of one message: ``buf[start:end]``."""

    def __init__(self, path: str, buf) -> None:
        self.path = path
        self.buf = buf

    def bad(self, what: str) -> FormatError:
        return FormatError(self.path, f"malformed ONNX protobuf ({what})")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        out = shift = 0
        for _ in range(10):
            if pos >= end:
                raise self.bad("truncated varint")
            b = self.buf[pos]
            pos += 1
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out, pos
            shift += 7
        raise self.bad("varint longer than 10 bytes")

    def fields(self, start: int, end: int):
        """(field number, wire type, value or (offset, length) of a length-delimited field)."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            num, wt = key >> 3, key & 7
            if num == 0:
                raise self.bad("field number 0")
            if wt == 0:
                v, pos = self.varint(pos, end)
                yield num, wt, v
            elif wt == 1:
                if pos + 8 > end:
                    raise self.bad("truncated fixed64")
                yield num, wt, (pos, 8)
                pos += 8
            elif wt == 5:
                if pos + 4 > end:
                    raise self.bad("truncated fixed32")
                yield num, wt, (pos, 4)
                pos += 4
            elif wt == 2:
                n, pos = self.varint(pos, end)
                if n > end - pos:
                    raise self.bad(f"field {num} claims {n} bytes, {end - pos} left in its message")
                yield num, wt, (pos, n)
                pos += n
            else:
                raise self.bad(f"wire type {wt} of field {num}")

    def text(self, span: tuple[int, int], what: str) -> str:
        off, n = span
        if n > 1 << 16:
            raise self.bad(f"{what} of {n} bytes")
        try:
            return bytes(self.buf[off:off + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} is not UTF-8") from None


def _want(wt: int, expect: int, r: _Reader, what: str) -> None:
    if wt != expect:
        raise r.bad(f"{what} has wire type {wt}")


def _tensor(r: _Reader, start: int, end: int, fallback: str) -> TensorInfo:
    t = TensorInfo(fallback, 0, ())  # proto3: an absent data_type is 0 (UNDEFINED)
    dims: list[int] = []
    data: tuple[int, int] | None = None
    packed: dict[int, tuple[int, int]] = {}
    ext: dict[str, str] = {}
    external = False
    for num, wt, v in r.fields(start, end):
        if num == _T_DIMS:
            if wt == 0:
                dims.append(v)
            elif wt == 2:
                off, n = v
                pos = off
                while pos < off + n:
                    d, pos = r.varint(pos, off + n)
                    dims.append(d)
                    if len(dims) > MAX_DIMS:
                        break
            else:
                raise r.bad("dims has a wrong wire type")
            if len(dims) > MAX_DIMS:
                raise FormatError(r.path, f"tensor {t.name!r}: more than {MAX_DIMS} dims")
        elif num == _T_TYPE:
            _want(wt, 0, r, "data_type")
            t.data_type = v
        elif num == _T_NAME:
            _want(wt, 2, r, "a tensor name")
            t.name = r.text(v, "a tensor name")
        elif num == _T_RAW:
            _want(wt, 2, r, "raw_data")
            data = v
        elif num in (_T_FLOAT, _T_DOUBLE) and wt == 2:
            packed[num] = v
        elif num == _T_EXT:
            _want(wt, 2, r, "external_data")
            if len(ext) >= _MAX_EXTERNAL_KEYS:
                raise r.bad("too many external_data entries")
            key = value = ""
            for n2, wt2, v2 in r.fields(*_span(v)):
                if wt2 == 2 and n2 == 1:
                    key = r.text(v2, "an external_data key")
                elif wt2 == 2 and n2 == 2:
                    value = r.text(v2, "an external_data value")
            ext[key] = value
        elif num == _T_LOC:
            _want(wt, 0, r, "data_location")
            external = v == 1
    if not t.name:
        t.name = fallback
    for d in dims:
        if d >= 1 << 62:  # negative int64 values arrive as huge varints
            raise FormatError(r.path, f"tensor {t.name!r}: bad dim {d - (1 << 64) if d >> 63 else d}")
    t.dims = tuple(dims)
    want = _bytes_needed(t)
    if external:
        _external(r.path, t, ext, want)
    elif data is not None:
        t.offset, t.length = data
    elif t.data_type == 1 and _T_FLOAT in packed:
        t.offset, t.length = packed[_T_FLOAT]
    elif t.data_type == 11 and _T_DOUBLE in packed:
        t.offset, t.length = packed[_T_DOUBLE]
    else:
        return t  # typed varint fields, strings or no data: literal bytes
    if want is not None and t.location is None and t.length != want:
        raise FormatError(r.path, f"tensor {t.name!r}: {t.length} bytes of data for dims {list(t.dims)} "
                                  f"of data_type {t.data_type} (needs {want})")
    return t


def _span(v: tuple[int, int]) -> tuple[int, int]:
    return v[0], v[0] + v[1]


def _bytes_needed(t: TensorInfo) -> int | None:
    n = math.prod(t.dims)
    if t.data_type in DATA_TYPES:
        return n * dtypes.lookup(DATA_TYPES[t.data_type]).width
    if t.data_type in SUB_BYTE:
        return -(-n * SUB_BYTE[t.data_type] // 8)
    return None  # STRING, UNDEFINED or a type newer than this reader


def _external(path: str, t: TensorInfo, ext: dict[str, str], want: int | None) -> None:
    loc = ext.get("location", "")
    if not loc or "\0" in loc or "\\" in loc:
        raise FormatError(path, f"tensor {t.name!r}: external data location {loc!r} is not a file name")
    if loc.startswith("/") or ".." in loc.split("/") or (len(loc) > 1 and loc[1] == ":"):
        raise FormatError(path, f"tensor {t.name!r}: external data location {loc!r} escapes the model's directory")
    try:
        off = int(ext.get("offset") or 0)
        length = int(ext["length"]) if ext.get("length") else None
    except ValueError:
        raise FormatError(path, f"tensor {t.name!r}: external data offset/length are not numbers") from None
    if off < 0 or (length is not None and length < 0):
        raise FormatError(path, f"tensor {t.name!r}: negative external data offset or length")
    if length is None:
        length = want
    if want is not None and length != want:
        raise FormatError(path, f"tensor {t.name!r}: external data length {length} for dims {list(t.dims)} "
                                f"of data_type {t.data_type} (needs {want})")
    t.location, t.ext_offset, t.ext_length = posixpath.normpath(loc), off, length


def _graph(r: _Reader, start: int, end: int, out: ModelInfo, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise r.bad(f"graphs nested deeper than {MAX_DEPTH}")
    for num, wt, v in r.fields(start, end):
        if num == _GRAPH_INIT and wt == 2:
            out.tensors.append(_tensor(r, *_span(v), f"initializer#{len(out.tensors)}"))
        elif num == _GRAPH_NODE and wt == 2:
            _constant(r, *_span(v), out)
        if len(out.tensors) > MAX_TENSORS:
            raise FormatError(r.path, f"more than {MAX_TENSORS} tensors")


def _constant(r: _Reader, start: int, end: int, out: ModelInfo) -> None:
    """A Constant node's ``value`` tensor, named by the node's output (unique in a graph).
    Other nodes cost one pass over their fields: nothing of them is decoded."""
    op = b""
    output: tuple[int, int] | None = None
    attrs: list[tuple[int, int]] = []
    for num, wt, v in r.fields(start, end):
        if wt != 2:
            continue
        if num == _NODE_OPTYPE:
            op = bytes(r.buf[v[0]:v[0] + min(v[1], 16)])
        elif num == _NODE_OUTPUT and output is None:
            output = v
        elif num == _NODE_ATTR:
            attrs.append(v)
    if op != b"Constant" or output is None:
        return
    value: tuple[int, int] | None = None
    for a in attrs:
        name, t = "", None
        for n2, wt2, v2 in r.fields(*_span(a)):
            if wt2 == 2 and n2 == _ATTR_NAME:
                name = r.text(v2, "an attribute name")
            elif wt2 == 2 and n2 == _ATTR_T:
                t = v2
        if name == "value" and t is not None:
            value = t
    name = r.text(output, "a node output")
    if value is not None and name:
        tensor = _tensor(r, *_span(value), name)
        tensor.name = name  # the tensor's own name is optional and need not be unique
        out.tensors.append(tensor)


def read_model(path: str, buf, size: int) -> ModelInfo:
    """The model's version fields and its tensors (initializers and Constant values)."""
    r = _Reader(path, buf)
    out = ModelInfo()
    graphs = 0
    for num, wt, v in r.fields(0, size):
        if num == _MODEL_IR and wt == 0:
            out.ir_version = v
        elif num == _MODEL_PRODUCER and wt == 2:
            out.producer = r.text(v, "producer_name")
        elif num == _MODEL_OPSET and wt == 2:
            domain, version = "", 0
            for n2, wt2, v2 in r.fields(*_span(v)):
                if n2 == 1 and wt2 == 2:
                    domain = r.text(v2, "an opset domain")
                elif n2 == 2 and wt2 == 0:
                    version = v2
            out.opsets[domain or "ai.onnx"] = version
        elif num == _MODEL_GRAPH:
            _want(wt, 2, r, "graph")
            graphs += 1
            _graph(r, *_span(v), out, 1)
    if not graphs:
        raise FormatError(path, "not an ONNX model (no graph)")
    names: set[str] = set()
    for t in out.tensors:
        if t.name in names:
            raise FormatError(path, f"tensor name {t.name!r} appears twice")
        names.add(t.name)
    return out


def open_model(path: str, size: int) -> ModelInfo:
    if size == 0:
        raise FormatError(path, "empty file, not an ONNX model")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return read_model(path, m, min(size, len(m)))


# open_model behind the untrusted-input boundary: any failure is one FormatError line.
model_info = guarded("ONNX")(open_model)


def _region(t: TensorInfo, offset: int, length: int) -> Region:
    if t.data_type in DATA_TYPES and length == _bytes_needed(t):
        return Region(offset, length, t.name, DATA_TYPES[t.data_type], t.dims)
    return Region(offset, length, t.name, OPAQUE, (length,))


@guarded("ONNX")
def parse(path: str, size: int) -> Layout:
    model = open_model(path, size)
    regions: list[Region] = []
    siblings: dict[str, list[Region]] = {}
    for t in model.tensors:
        if t.location is not None:
            siblings.setdefault(t.location, []).append(
                _region(t, t.ext_offset, t.ext_length if t.ext_length is not None else -1))
        elif t.offset is not None and t.length:
            regions.append(_region(t, t.offset, t.length))
    return Layout("onnx", regions, siblings=siblings)


def sibling_layout(model: str, location: str, regions: list[Region], size: int) -> Layout:
    """The layout an external data file of ``model`` takes from it: its regions, checked
    against the data file's ``size`` (a region of unknown length runs to the end). The
    same range named twice (tied weights) is one region."""
    seen: dict[tuple[int, int], Region] = {}
    where = f"{model} (external data {location})"
    for r in regions:
        if r.length < 0:
            if r.offset > size:
                raise FormatError(where, f"tensor {r.name!r} starts at byte {r.offset}, past the end of the file")
            r = Region(r.offset, size - r.offset, r.name, OPAQUE, (size - r.offset,))
        seen.setdefault((r.offset, r.length), r)
    return Layout("onnx-data", list(seen.values())).check(where, size)
