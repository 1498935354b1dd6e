"""The element types coralfs knows: width, numpy dtype and how to order their bits.

The delta codecs need only the element width and a key map; numpy dtypes are used when a
merge computes with values. Unknown types are stored as ``B<width>`` raw elements.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Key maps: how a w-bit pattern becomes an order-preserving unsigned integer.
KEY_UNSIGNED = 0
KEY_SIGNED = 1
KEY_FLOAT = 2


@dataclass(frozen=True)
class DType:
    name: str
    width: int
    key: int
    # numpy's name of the element type (ml_dtypes' for bfloat16 and fp8), made a numpy dtype
    # on first use: reading metadata (`coralfs log`, `status`) never imports numpy.
    numpy_name: str | None

    @property
    def is_float(self) -> bool:
        return self.key == KEY_FLOAT

    @property
    def numpy(self) -> np.dtype | None:
        return None if self.numpy_name is None else _numpy_dtype(self.numpy_name)


@functools.cache
def _numpy_dtype(name: str) -> np.dtype:
    import numpy as np
    if hasattr(np, name):
        return np.dtype(getattr(np, name))
    import ml_dtypes
    return np.dtype(getattr(ml_dtypes, name))


_ALL = [
    DType("F64", 8, KEY_FLOAT, "float64"),
    DType("F32", 4, KEY_FLOAT, "float32"),
    DType("F16", 2, KEY_FLOAT, "float16"),
    DType("BF16", 2, KEY_FLOAT, "bfloat16"),
    DType("F8_E4M3", 1, KEY_FLOAT, "float8_e4m3fn"),
    DType("F8_E5M2", 1, KEY_FLOAT, "float8_e5m2"),
    # FNUZ fp8 (sign bit, no negative zero: 0x80 is NaN) and the MX scale type E8M0 (eight
    # exponent bits, no sign: its bit patterns are already in value order).
    DType("F8_E4M3FNUZ", 1, KEY_FLOAT, "float8_e4m3fnuz"),
    DType("F8_E5M2FNUZ", 1, KEY_FLOAT, "float8_e5m2fnuz"),
    DType("F8_E8M0", 1, KEY_UNSIGNED, "float8_e8m0fnu"),
    DType("I64", 8, KEY_SIGNED, "int64"),
    DType("I32", 4, KEY_SIGNED, "int32"),
    DType("I16", 2, KEY_SIGNED, "int16"),
    DType("I8", 1, KEY_SIGNED, "int8"),
    DType("U64", 8, KEY_UNSIGNED, "uint64"),
    DType("U32", 4, KEY_UNSIGNED, "uint32"),
    DType("U16", 2, KEY_UNSIGNED, "uint16"),
    DType("U8", 1, KEY_UNSIGNED, "uint8"),
    DType("BOOL", 1, KEY_UNSIGNED, "bool_"),
    DType("C64", 8, KEY_UNSIGNED, "complex64"),
    DType("C128", 16, KEY_UNSIGNED, "complex128"),
]
BY_NAME: dict[str, DType] = {d.name: d for d in _ALL}


@functools.cache
def _numpy_to_name() -> dict[np.dtype, str]:
    # Built by the first from_numpy call (whose caller has numpy loaded already).
    table: dict[np.dtype, str] = {}
    for t in _ALL:
        if t.numpy is not None:
            table.setdefault(t.numpy, t.name)
    return table


def lookup(name: str) -> DType:
    """The DType called ``name``; ``B<n>`` is an opaque element of n bytes."""
    if name in BY_NAME:
        return BY_NAME[name]
    if name.startswith("B") and name[1:].isdigit() and 1 <= int(name[1:]) <= 255:
        return DType(name, int(name[1:]), KEY_UNSIGNED, None)
    raise ValueError(f"unknown dtype {name!r}")


def from_numpy(dt: np.dtype) -> DType:
    """The coralfs dtype of a numpy dtype (byte order ignored: codecs are bit-exact
    whatever the order); an unknown one becomes an opaque ``B<itemsize>``."""
    base = dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt
    name = _numpy_to_name().get(base)
    if name is None:
        return lookup(f"B{dt.itemsize}")
    return BY_NAME[name]


def from_array_dtype(dt: np.dtype) -> DType:
    """The dtype to record for an array stored in a file. Only little-endian (or
    byte-order-free) simple types keep their name: a big-endian or structured element is
    recorded as opaque ``B<itemsize>`` so no view ever reinterprets its bytes wrongly."""
    if dt.fields is not None or dt.subdtype is not None or dt.byteorder == ">" \
            or (dt.byteorder == "=" and sys.byteorder != "little") or not 0 < dt.itemsize < 256:
        return lookup(f"B{max(1, min(255, dt.itemsize))}")
    return from_numpy(dt)
