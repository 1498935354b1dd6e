"""NumPy ``.npy``: magic, version, a Python-literal header dict, then the array bytes."""

from __future__ import annotations

import ast
import functools
import math
import struct

from ..objects import dtypes
from ..objects.lazy import lazy_module
from ..objects.regions import Region
from .base import FormatError, Layout, guarded

np = lazy_module("numpy")  # imported on first use: commands that never compute start without it

MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 1 << 20


@functools.lru_cache(maxsize=4096)
def _literal(text: str):
    """An .npy header's dict literal. Cached: an .npz of 200,000 members has few distinct
    headers, and literal_eval (a compile per call) was a third of its commit time.
    Callers only read the result."""
    return ast.literal_eval(text)


def parse_header(path: str, head: bytes) -> tuple[int, np.dtype, tuple[int, ...], bool] | None:
    """(data offset, dtype, shape, fortran order) from the first bytes of an .npy stream;
    None when the array holds Python objects (its body is a pickle: literal bytes)."""
    if head[:6] != MAGIC:
        raise FormatError(path, "not an .npy file (bad magic)")
    if len(head) < 10:
        raise FormatError(path, "truncated .npy header")
    major = head[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", head[8:10])
        start = 10
    elif major in (2, 3):
        if len(head) < 12:
            raise FormatError(path, "truncated .npy header")
        (hlen,) = struct.unpack("<I", head[8:12])
        start = 12
    else:
        raise FormatError(path, f"unsupported .npy version {major}")
    if hlen > MAX_NPY_HEADER:
        raise FormatError(path, f".npy header of {hlen} bytes is over the cap")
    if len(head) < start + hlen:
        raise FormatError(path, "truncated .npy header")
    text = head[start:start + hlen].decode("utf-8" if major == 3 else "latin1", errors="replace")
    try:
        d = _literal(text.strip())
    except (ValueError, SyntaxError) as e:
        raise FormatError(path, f".npy header is not a dict literal ({e})") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise FormatError(path, ".npy header needs exactly descr, fortran_order and shape")
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and 0 <= s < 1 << 62 for s in shape):
        raise FormatError(path, f".npy shape {shape!r} is invalid")
    try:
        dt = np.lib.format.descr_to_dtype(d["descr"])
    except Exception as e:  # numpy raises several kinds for a bad descr
        raise FormatError(path, f".npy descr {d['descr']!r} is invalid ({e})") from None
    if dt.hasobject:
        return None
    return start + hlen, dt, shape, bool(d["fortran_order"])


def region_at(path: str, head: bytes, base: int, avail: int, name: str) -> Region | None:
    """The array of an .npy stream starting at ``base`` with ``avail`` bytes, as a region."""
    parsed = parse_header(path, head)
    if parsed is None:
        return None
    off, dt, shape, fortran = parsed
    n = math.prod(shape) * dt.itemsize
    if off + n > avail:
        raise FormatError(path, f"{name}: array of {n} bytes needs more than the {avail - off} bytes present")
    if dt.itemsize == 0:
        return None
    cdt = dtypes.from_array_dtype(dt)
    if fortran:
        # Column-major bytes: a C-ordered view of the logical shape would be transposed,
        # so the tensor is recorded flat (its bytes, and so the file, are unchanged).
        shape = (math.prod(shape),)
    return Region(base + off, n, name, cdt.name, tuple(shape))


@guarded("npy")
def parse(path: str, size: int) -> Layout:
    with open(path, "rb") as f:
        head = f.read(12 + MAX_NPY_HEADER)
    r = region_at(path, head, 0, size, "array")
    return Layout("npy", [r] if r else [])
