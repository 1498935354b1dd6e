"""Zip archives whose stored members hold arrays: ``.npz`` and torch checkpoints.

``torch.save`` (and ``torch.jit.save``) writes a zip whose ``*/data/N`` members are the
raw bytes of storages, stored uncompressed; ``numpy.savez`` stores ``.npy`` members. Each
stored member's bytes are located through its local header and become a region. Torch
storage dtypes are read from ``data.pkl`` with an unpickler that imports nothing and runs
nothing: every global is a stand-in class, so reading a checkpoint never runs its code
(and never imports torch). A pickle even the stand-ins cannot load only loses the dtypes
(an opcode scan recovers what it can, the rest is stored as bytes); the file is stored
byte-identical all the same. Only a structurally broken archive is refused.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import struct
import zipfile
from typing import NamedTuple

from ..objects.regions import Region
from . import npy
from .base import MAX_MEMBERS, FormatError, Layout, guarded, safe_member_name

log = logging.getLogger(__name__)

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
# torch.save keeps storages in their own members, so data.pkl is only the object graph:
# a few KiB to a few MiB even for large models. Inflating more than this is refused as
# a pickle (a small deflate stream can claim gigabytes); the file is then stored as a
# plain archive, byte-exact, with its storages as untyped regions.
MAX_PICKLE = 64 << 20

TORCH_STORAGES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL", "Float8_e4m3fnStorage": "F8_E4M3",
    "Float8_e5m2Storage": "F8_E5M2", "ComplexFloatStorage": "C64", "ComplexDoubleStorage": "C128",
    "QInt8Storage": "I8", "QUInt8Storage": "U8", "QInt32Storage": "I32",
}
TORCH_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0", "complex64": "C64",
    "complex128": "C128", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    # Packed sub-byte and quantized element types: one byte of the storage per element.
    "float4_e2m1fn_x2": "U8", "qint8": "I8", "quint8": "U8", "qint32": "I32",
}


class _Stand:
    """Base of the stand-in classes: every global a pickle names becomes a fresh subclass
    of this (a real type, so NEWOBJ, NEWOBJ_EX, INST and OBJ accept it), whose instances
    take every call and every protocol hook (BUILD, SETITEMS, APPENDS, ADDITEMS) and do
    nothing. Nothing is imported and no code of the checkpoint runs."""

    _module = ""
    _name = ""
    _scan: _ScanUnpickler | None = None

    def __new__(cls, *a, **k):
        return object.__new__(cls)

    def __init__(self, *a, **k) -> None:
        # A REDUCE on a stand-in class (``_rebuild_tensor_v3(storage, ..., dtype)``) is
        # where newer torch files name a storage's dtype.
        if self._scan is not None:
            _note_rebuild(self._scan.storages, self._name, a)

    def __call__(self, *a, **k):
        return _Stand()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, k, v) -> None:
        pass

    def append(self, v) -> None:
        pass

    def extend(self, v) -> None:
        pass

    def add(self, v) -> None:
        pass


class _StorageRef:
    """What a persistent id ``('storage', type, key, ...)`` loads as."""

    def __init__(self, key: str) -> None:
        self.key = key


class _Global(NamedTuple):
    """A global as the opcode scan sees it (it never looks it up)."""

    module: str
    name: str


def _dtype_of(x) -> str | None:
    """The coralfs dtype a global stands for (a torch storage class or dtype), if any."""
    if isinstance(x, type) and issubclass(x, _Stand):
        module, name = x._module, x._name
    elif isinstance(x, _Global):
        module, name = x
    else:
        return None
    return (TORCH_STORAGES.get(name) or TORCH_DTYPES.get(name)) if module.startswith("torch") else None


def _note_storage(found: dict[str, str | None], pid) -> _StorageRef | None:
    """Record the storage a persistent id ``('storage', type, key, location, numel)`` names."""
    if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
        return None
    key = str(pid[2])
    if found.get(key) is None:
        found[key] = _dtype_of(pid[1])
    return _StorageRef(key)


def _note_rebuild(found: dict[str, str | None], fn: str, args) -> None:
    """``_rebuild_tensor_v3(storage, offset, size, stride, grad, hooks, dtype)``: newer
    torch files load storages untyped (UntypedStorage) and name the dtype here."""
    if not (fn.startswith("_rebuild_") and isinstance(args, tuple) and args
            and isinstance(args[0], _StorageRef)) or found.get(args[0].key) is not None:
        return
    for a in args[1:]:
        dtype = _dtype_of(a)
        if dtype is not None:
            found[args[0].key] = dtype
            return


class _ScanUnpickler(pickle.Unpickler):
    def __init__(self, f) -> None:
        super().__init__(f)
        self.storages: dict[str, str | None] = {}
        self._classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        cls = self._classes.get((module, name))
        if cls is None:
            cls = type("Global", (_Stand,), {"_module": module, "_name": name, "_scan": self})
            self._classes[(module, name)] = cls
        return cls

    def persistent_load(self, pid):
        return _note_storage(self.storages, pid) or _Stand()


class _OpcodeScan:
    """The stack machine of :func:`_opcode_scan`: strings, numbers, tuples and globals
    are tracked, everything else is an opaque None."""

    def __init__(self) -> None:
        self.found: dict[str, str | None] = {}
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict = {}

    def to_mark(self) -> list:
        k = self.marks.pop()
        items = self.stack[k:]
        del self.stack[k:]
        return items

    def step(self, op, arg) -> bool:
        """Apply one opcode; False: stop (STOP, or an opcode it cannot follow)."""
        name, stack = op.name, self.stack
        if name == "MARK":
            self.marks.append(len(stack))
        elif name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            stack.append(_Global(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(_Global(module, attr) if isinstance(module, str) and isinstance(attr, str) else None)
        elif name == "TUPLE":
            stack.append(tuple(self.to_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            if len(items) != n:
                return False
            del stack[-n:]
            stack.append(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(self.memo.get(arg))
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "BINPERSID":
            stack.append(_note_storage(self.found, stack.pop()))
        elif name == "REDUCE":
            args, fn = stack.pop(), stack.pop()
            if isinstance(fn, _Global):
                _note_rebuild(self.found, fn.name, args)
            stack.append(None)
        elif name == "STOP":
            return False
        else:
            return self.generic(op, arg)
        return True

    def generic(self, op, arg) -> bool:
        """Any other opcode: pop what it takes, push opaque values (or its literal)."""
        before = op.stack_before
        if pickletools.markobject in before:
            self.to_mark()
            below = before.index(pickletools.markobject)
        else:
            below = len(before)
        if below:
            if len(self.stack) < below:
                return False
            del self.stack[-below:]
        if op.stack_after and not before and op.arg is not None and isinstance(arg, (str, bytes, int, float)):
            self.stack.append(arg)  # a literal push (strings, numbers)
        else:
            self.stack.extend(None for _ in op.stack_after)
        return True


def _opcode_scan(data: bytes) -> dict[str, str | None]:
    """Storage keys and dtypes read from the pickle's opcodes alone, for a pickle the
    stand-in unpickler cannot load. A small stack machine tracks only strings, numbers,
    tuples and globals (everything else is an opaque None); it builds no object, calls
    nothing, and stops quietly at the first opcode it cannot follow, keeping what it
    found (the storages' bytes are stored exactly either way)."""
    scan = _OpcodeScan()
    try:
        for op, arg, _pos in pickletools.genops(data):
            if not scan.step(op, arg):
                break
    except Exception:  # noqa: BLE001 - an opcode it cannot follow ends the scan
        log.debug("pickle opcode scan stopped early", exc_info=True)
    return scan.found


def torch_storage_dtypes(path: str, data: bytes) -> dict[str, str]:
    """Storage key -> coralfs dtype of a torch ``data.pkl`` ("U8" where unknown).

    The stand-in unpickler reads pickles of any class (TrainingArguments, nn.Module,
    Namespace, dataclasses, TorchScript, ExportedProgram). A pickle it still cannot load
    is not a reason to refuse the file: its storages' dtypes come from an opcode scan,
    and the file is stored byte-identical whatever the scan learned."""
    u = _ScanUnpickler(io.BytesIO(data))
    try:
        u.load()
        found = u.storages
    except Exception as e:  # noqa: BLE001 - untrusted pickle: fall back, never refuse
        log.debug("%s: data.pkl does not load with stand-ins (%s: %s); scanning its opcodes",
                  path, type(e).__name__, e)
        found = _opcode_scan(data)
        for k, v in u.storages.items():
            if found.get(k) is None:
                found[k] = v
    return {k: v or "U8" for k, v in found.items()}


def read_pickle(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    """The inflated data.pkl, or None when it inflates past MAX_PICKLE. Inflation is
    streamed and stops at the cap: neither the declared size (which can lie) nor a
    deflate bomb decides how much memory this takes."""
    if info.file_size > MAX_PICKLE:
        log.warning("%s: data.pkl declares %d bytes (over the %d MiB cap): storages stored untyped",
                    path, info.file_size, MAX_PICKLE >> 20)
        return None
    with zf.open(info) as m:
        data = m.read(MAX_PICKLE + 1)
    if len(data) > MAX_PICKLE:
        log.warning("%s: data.pkl inflates past the %d MiB cap: storages stored untyped",
                    path, MAX_PICKLE >> 20)
        return None
    return data


def _member_data_offset(path: str, f, info: zipfile.ZipInfo, size: int) -> int:
    f.seek(info.header_offset)
    head = f.read(_LOCAL.size)
    if len(head) != _LOCAL.size or head[:4] != b"PK\x03\x04":
        raise FormatError(path, f"archive member {info.filename!r}: bad local header")
    fields = _LOCAL.unpack(head)
    name_len, extra_len = fields[9], fields[10]
    off = info.header_offset + _LOCAL.size + name_len + extra_len
    if off + info.compress_size > size:
        raise FormatError(path, f"archive member {info.filename!r} runs past the end of the file")
    return off


@guarded("zip")
def parse(path: str, size: int) -> Layout:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FormatError(path, f"not a readable zip archive ({e})") from None
    with zf, open(path, "rb") as f:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise FormatError(path, f"{len(infos)} archive members is over the cap")
        for i in infos:
            if i.flag_bits & 0x800 == 0 and not i.filename.isascii():
                # cp437 names decode to anything; require the UTF-8 flag for non-ASCII.
                raise FormatError(path, f"archive member name {i.filename!r} is not UTF-8")
            safe_member_name(path, i.filename)
        pkl = [i for i in infos if i.filename.endswith("data.pkl") and i.filename.count("/") <= 1]
        regions: list[Region] = []
        if pkl:
            prefix = pkl[0].filename[: -len("data.pkl")]
            pickled = read_pickle(path, zf, pkl[0])
            dtypes_by_key = torch_storage_dtypes(path, pickled) if pickled is not None else {}
            for i in infos:
                member = i.filename[len(prefix):] if i.filename.startswith(prefix) else ""
                # constants/N: the tensor constants of a TorchScript archive (bytes).
                if not member.startswith(("data/", "constants/")) or i.compress_type != zipfile.ZIP_STORED:
                    continue
                dt = dtypes_by_key.get(member[5:], "U8") if member.startswith("data/") else "U8"
                off = _member_data_offset(path, f, i, size)
                from ..objects import dtypes as _dt
                width = _dt.lookup(dt).width
                if i.file_size % width:
                    dt, width = "U8", 1
                regions.append(Region(off, i.file_size, member, dt, (i.file_size // width,)))
            fmt = "torch"
        else:
            for i in infos:
                if i.compress_type != zipfile.ZIP_STORED or not i.filename.endswith(".npy"):
                    continue
                off = _member_data_offset(path, f, i, size)
                f.seek(off)
                head = f.read(min(i.file_size, 12 + npy.MAX_NPY_HEADER))
                r = npy.region_at(f"{path}:{i.filename}", head, off, i.file_size, i.filename[:-4])
                if r is not None:
                    regions.append(r)
            fmt = "npz" if any(i.filename.endswith(".npy") for i in infos) else "zip"
    return Layout(fmt, regions)
