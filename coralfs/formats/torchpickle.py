"""Reading torch pickles without running them: storage dtypes and the tensors that view them.

Both torch file layouts (the zip of ``torch.save`` and the legacy stream of
``_use_new_zipfile_serialization=False``) describe their storages in a pickle. It is read
with an unpickler that imports nothing and runs nothing: every global is a stand-in class,
so reading a checkpoint never runs its code (and never imports torch). The stand-ins
remember what they were given (a ``_rebuild_tensor_v2`` call's arguments, an
``OrderedDict``'s items, a ``BUILD``'s state), which is enough to walk the object graph
and name every tensor by its state-dict key path. A pickle even the stand-ins cannot load
only loses that: an opcode scan recovers the dtypes it can.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
from typing import NamedTuple

log = logging.getLogger(__name__)

TORCH_STORAGES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL", "Float8_e4m3fnStorage": "F8_E4M3",
    "Float8_e5m2Storage": "F8_E5M2", "ComplexFloatStorage": "C64", "ComplexDoubleStorage": "C128",
    "QInt8Storage": "I8", "QUInt8Storage": "U8", "QInt32Storage": "I32",
    "QUInt4x2Storage": "U8", "QUInt2x4Storage": "U8",
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
# The walk of a loaded pickle stops at this depth and this many objects: a crafted graph
# costs bounded time, and a real checkpoint is far from either.
MAX_DEPTH = 64
MAX_NODES = 5_000_000
# What reading a pickle with stand-ins (or scanning its opcodes) may take in memory. A
# one-byte opcode can build an object: measured on 8 MiB streams, EMPTY_DICT / EMPTY_LIST
# cost ~75 bytes a byte and any other opcode (DUP, NONE, MARK ...) at most ~18 (the stack,
# the marks, the fallback scan). A real checkpoint's pickle is far under the bound (a few
# MiB for tens of thousands of tensors); a crafted one over it is not read (storages
# stay untyped, which stores them exactly).
SCAN_MEMORY = 512 << 20


def scan_memory(data: bytes) -> int:
    """An upper estimate of the memory reading ``data`` with stand-ins may take."""
    builders = data.count(b"}") + data.count(b"]") + data.count(b"\x8f")  # EMPTY_DICT/LIST/SET
    return 18 * len(data) + 64 * builders


def fits(data: bytes) -> bool:
    return scan_memory(data) <= SCAN_MEMORY


class View(NamedTuple):
    """One tensor of the pickle: its key path, dtype, shape and offset (in elements) in
    the storage it views."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    stride: tuple[int, ...] | None = None

    def covers(self, numel: int) -> bool:
        """Whether this tensor is its whole storage, contiguous (so the storage's bytes
        are this tensor in C order)."""
        n = 1
        for s in self.shape:
            n *= s
        if self.offset or n != numel:
            return False
        if self.stride is None:
            return True
        want, ok = 1, True
        for size, st in zip(reversed(self.shape), reversed(self.stride), strict=False):
            if size != 1 and st != want:
                ok = False
            want *= size
        return ok


class _Stand:
    """Base of the stand-in classes: every global a pickle names becomes a fresh subclass
    of this (a real type, so NEWOBJ, NEWOBJ_EX, INST and OBJ accept it), whose instances
    take every call and every protocol hook (BUILD, SETITEMS, APPENDS, ADDITEMS), keep
    what they were given and do nothing. Nothing is imported and no code of the
    checkpoint runs."""

    _module = ""
    _name = ""
    _scan: ScanUnpickler | None = None

    def __new__(cls, *a, **k):
        return object.__new__(cls)

    def __init__(self, *a, **k) -> None:
        self._args = a
        self._items: list = []
        self._state = None
        # A REDUCE on a stand-in class (``_rebuild_tensor_v3(storage, ..., dtype)``) is
        # where newer torch files name a storage's dtype.
        if self._scan is not None:
            _note_rebuild(self._scan.storages, self._name, a)

    def __call__(self, *a, **k):
        return _Stand()

    def __setstate__(self, state) -> None:
        self._state = state

    def __setitem__(self, k, v) -> None:
        self.__dict__.setdefault("_items", []).append((k, v))

    def append(self, v) -> None:
        items = self.__dict__.setdefault("_items", [])
        items.append((len(items), v))

    def extend(self, v) -> None:
        for x in v:
            self.append(x)

    def add(self, v) -> None:
        pass


class StorageRef:
    """What a persistent id ``('storage', type, key, location, numel)`` loads as."""

    def __init__(self, key: str, dtype: str | None, numel: int | None) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel


class _Global(NamedTuple):
    """A global as the opcode scan sees it (it never looks it up)."""

    module: str
    name: str


def _global(x) -> tuple[str, str] | None:
    """(module, name) of a global: a stand-in class or what the opcode scan saw."""
    if isinstance(x, type) and issubclass(x, _Stand):
        return x._module, x._name
    if isinstance(x, _Global):
        return x.module, x.name
    return None


def _dtype_of(x) -> str | None:
    """The coralfs dtype a global stands for (a torch storage class or dtype), if any."""
    g = _global(x)
    if g is None or not g[0].startswith("torch"):
        return None
    return TORCH_STORAGES.get(g[1]) or TORCH_DTYPES.get(g[1])


def _class_dtype(x) -> str | None:
    """The element type a storage class is written in: an UntypedStorage is bytes."""
    g = _global(x)
    return "U8" if g is not None and g[0].startswith("torch") and g[1] == "UntypedStorage" else _dtype_of(x)


def _note_storage(found: dict[str, str | None], numels: dict[str, int], classes: dict[str, str | None],
                  pid) -> StorageRef | None:
    """Record the storage a persistent id ``('storage', type, key, location, numel)`` names."""
    if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
        return None
    key = str(pid[2])
    dt = _dtype_of(pid[1])
    if found.get(key) is None:
        found[key] = dt
    if classes.get(key) is None:
        classes[key] = _class_dtype(pid[1])
    numel = pid[4] if len(pid) >= 5 and isinstance(pid[4], int) and not isinstance(pid[4], bool) else None
    if numel is not None:
        numels.setdefault(key, numel)
    return StorageRef(key, dt, numel)


def _note_rebuild(found: dict[str, str | None], fn: str, args) -> None:
    """``_rebuild_tensor_v3(storage, offset, size, stride, grad, hooks, dtype)``: newer
    torch files load storages untyped (UntypedStorage) and name the dtype here."""
    if not (fn.startswith("_rebuild_") and isinstance(args, tuple) and args
            and isinstance(args[0], StorageRef)) or found.get(args[0].key) is not None:
        return
    for a in args[1:]:
        dtype = _dtype_of(a)
        if dtype is not None:
            found[args[0].key] = dtype
            return


class ScanUnpickler(pickle.Unpickler):
    """The unpickler of stand-ins (see the module's docstring)."""

    def __init__(self, f) -> None:
        super().__init__(f)
        self.storages: dict[str, str | None] = {}
        self.numels: dict[str, int] = {}
        self.classes: dict[str, str | None] = {}
        self._classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        cls = self._classes.get((module, name))
        if cls is None:
            cls = type("Global", (_Stand,), {"_module": module, "_name": name, "_scan": self})
            self._classes[(module, name)] = cls
        return cls

    def persistent_load(self, pid):
        return _note_storage(self.storages, self.numels, self.classes, pid) or _Stand()


class _OpcodeScan:
    """The stack machine of :func:`opcode_scan`: strings, numbers, tuples and globals
    are tracked, everything else is an opaque None."""

    def __init__(self) -> None:
        self.found: dict[str, str | None] = {}
        self.numels: dict[str, int] = {}
        self.classes: dict[str, str | None] = {}
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
            stack.append(_note_storage(self.found, self.numels, self.classes, stack.pop()))
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


def opcode_scan(data: bytes) -> _OpcodeScan:
    """Storage keys -> dtypes, and keys -> element counts, read from the pickle's opcodes
    alone, for a pickle the stand-in unpickler cannot load (with their element counts and storage classes). A small stack machine tracks
    only strings, numbers, tuples and globals (everything else is an opaque None); it
    builds no object, calls nothing, and stops quietly at the first opcode it cannot
    follow, keeping what it found (the storages' bytes are stored exactly either way)."""
    scan = _OpcodeScan()
    try:
        for op, arg, _pos in pickletools.genops(data):
            if not scan.step(op, arg):
                break
    except Exception:  # noqa: BLE001 - an opcode it cannot follow ends the scan
        log.debug("pickle opcode scan stopped early", exc_info=True)
    return scan


class Scan(NamedTuple):
    """What a torch pickle says about its storages."""

    dtypes: dict[str, str | None]  # storage key -> coralfs dtype (None where unknown)
    numels: dict[str, int]        # storage key -> element count its persistent id gives
    classes: dict[str, str | None]  # storage key -> the element type its storage class is written in
    views: dict[str, list[View]]  # storage key -> the tensors that view it, in pickle order


def scan(path: str, data: bytes) -> Scan:
    """Read a torch pickle with stand-ins (never refusing it: a pickle they cannot load
    is scanned for its opcodes, which gives dtypes but no tensor names). A pickle that
    could take more than SCAN_MEMORY to read is not read: nothing is known of it."""
    if not fits(data):
        log.warning("%s: a pickle of %d bytes could take over %d MiB to read: its storages stay untyped",
                    path, len(data), SCAN_MEMORY >> 20)
        return Scan({}, {}, {}, {})
    u = ScanUnpickler(io.BytesIO(data))
    views: dict[str, list[View]] = {}
    try:
        root = u.load()
        found, numels, classes = u.storages, u.numels, u.classes
        _walk(root, found, views)
    except Exception as e:  # noqa: BLE001 - untrusted pickle: fall back, never refuse
        log.debug("%s: pickle does not load with stand-ins (%s: %s); scanning its opcodes",
                  path, type(e).__name__, e)
        views = {}
        ops = opcode_scan(data)
        found, numels, classes = ops.found, ops.numels, ops.classes
        for mine, theirs in ((found, u.storages), (classes, u.classes)):
            for k, v in theirs.items():
                if mine.get(k) is None:
                    mine[k] = v
        for k, n in u.numels.items():
            numels.setdefault(k, n)
    return Scan(found, numels, classes, views)


def torch_storage_dtypes(path: str, data: bytes) -> dict[str, str]:
    """Storage key -> coralfs dtype of a torch pickle ("U8" where unknown)."""
    return {k: v or "U8" for k, v in scan(path, data).dtypes.items()}


def _ints(x) -> tuple[int, ...] | None:
    if isinstance(x, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x):
        return tuple(x)
    if isinstance(x, _Stand) and x._name == "Size" and x._args:  # torch.Size((2, 3))
        return _ints(x._args[0])
    return None


def _tensor_view(name: str, fn: str, args: tuple, found: dict[str, str | None]) -> tuple[str, View] | None:
    """The view a ``_rebuild_tensor*`` / ``_rebuild_qtensor`` call makes, if it is one."""
    if not (fn.startswith(("_rebuild_tensor", "_rebuild_qtensor")) and len(args) >= 4
            and isinstance(args[0], StorageRef)):
        return None
    ref = args[0]
    off, shape, stride = args[1], _ints(args[2]), _ints(args[3])
    if not isinstance(off, int) or isinstance(off, bool) or off < 0 or shape is None:
        return None
    dt = None
    if fn == "_rebuild_tensor_v3":
        dt = next((d for d in map(_dtype_of, args[4:]) if d is not None), None)
    dt = dt or ref.dtype or found.get(ref.key) or "U8"
    return ref.key, View(name, dt, shape, off, stride)


def _walk(root, found: dict[str, str | None], views: dict[str, list[View]]) -> None:
    """Name every tensor of a loaded stand-in graph by its key path (``model/l.weight``;
    a top-level state dict's keys are the names themselves). Iterative and bounded."""
    stack: list[tuple[str, object, int]] = [("", root, 0)]
    seen: set[int] = set()
    walked: set[int] = set()  # stand-ins whose items and state were pushed
    nodes = 0
    while stack:
        name, x, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            log.debug("pickle graph walk stopped at %d objects", nodes)
            return
        if isinstance(x, (str, bytes, int, float, bool, type(None), StorageRef, type)):
            continue
        # A tensor reached twice (tied weights: one object under two keys) is a view
        # under each name; any other object is walked once (graphs may share or cycle).
        if id(x) in seen and not isinstance(x, _Stand):
            continue
        seen.add(id(x))
        children: list[tuple[str, object]] = []
        if isinstance(x, dict):
            children = [(str(k), v) for k, v in x.items()]
        elif isinstance(x, (list, tuple)):
            children = [(str(i), v) for i, v in enumerate(x)]
        elif isinstance(x, _Stand):
            fn, args = type(x)._name, getattr(x, "_args", ())
            if fn == "_rebuild_from_type_v2" and len(args) >= 3 and isinstance(args[2], tuple) \
                    and isinstance(args[0], type) and issubclass(args[0], _Stand):
                fn, args = args[0]._name, args[2]  # (func, subclass, args, state)
            got = _tensor_view(name, fn, args, found)
            if got is not None:
                views.setdefault(got[0], []).append(got[1])
                continue
            if fn.startswith("_rebuild_parameter") and args:
                children = [("", args[0])]  # a Parameter is named as its data
            elif id(x) in walked:
                continue
            else:
                walked.add(id(x))
                children = [(str(k), v) for k, v in getattr(x, "_items", [])]
                state = getattr(x, "_state", None)
                if isinstance(state, tuple) and len(state) == 2:  # (state, slotstate)
                    children += [("", s) for s in state]
                elif state is not None:
                    children.append(("", state))
        for k, v in reversed(children):
            stack.append((f"{name}/{k}" if name and k else name or k, v, depth + 1))


def primary_names(views: dict[str, list[View]]) -> dict[str, str]:
    """Storage key -> the name of the first tensor viewing it, made unique."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for key, vs in views.items():
        base = vs[0].name or key
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}#{n}"
        used.add(name)
        out[key] = name
    return out
