"""The element types coralfs knows: width, numpy dtype and how to order their bits.

The delta codecs need only the element width and a key map; numpy dtypes are used when a
merge computes with values. Unknown types are stored as ``B<width>`` raw elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
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
    numpy: np.dtype | None

    @property
    def is_float(self) -> bool:
        return self.key == KEY_FLOAT


def _d(name: str, width: int, key: int, np_dtype) -> DType:
    return DType(name, width, key, None if np_dtype is None else np.dtype(np_dtype))


_ALL = [
    _d("F64", 8, KEY_FLOAT, np.float64),
    _d("F32", 4, KEY_FLOAT, np.float32),
    _d("F16", 2, KEY_FLOAT, np.float16),
    _d("BF16", 2, KEY_FLOAT, ml_dtypes.bfloat16),
    _d("F8_E4M3", 1, KEY_FLOAT, ml_dtypes.float8_e4m3fn),
    _d("F8_E5M2", 1, KEY_FLOAT, ml_dtypes.float8_e5m2),
    # FNUZ fp8 (sign bit, no negative zero: 0x80 is NaN) and the MX scale type E8M0 (eight
    # exponent bits, no sign: its bit patterns are already in value order).
    _d("F8_E4M3FNUZ", 1, KEY_FLOAT, ml_dtypes.float8_e4m3fnuz),
    _d("F8_E5M2FNUZ", 1, KEY_FLOAT, ml_dtypes.float8_e5m2fnuz),
    _d("F8_E8M0", 1, KEY_UNSIGNED, ml_dtypes.float8_e8m0fnu),
    _d("I64", 8, KEY_SIGNED, np.int64),
    _d("I32", 4, KEY_SIGNED, np.int32),
    _d("I16", 2, KEY_SIGNED, np.int16),
    _d("I8", 1, KEY_SIGNED, np.int8),
    _d("U64", 8, KEY_UNSIGNED, np.uint64),
    _d("U32", 4, KEY_UNSIGNED, np.uint32),
    _d("U16", 2, KEY_UNSIGNED, np.uint16),
    _d("U8", 1, KEY_UNSIGNED, np.uint8),
    _d("BOOL", 1, KEY_UNSIGNED, np.bool_),
    _d("C64", 8, KEY_UNSIGNED, np.complex64),
    _d("C128", 16, KEY_UNSIGNED, np.complex128),
]
BY_NAME: dict[str, DType] = {d.name: d for d in _ALL}

_NUMPY_TO_NAME: dict[np.dtype, str] = {}
for _t in _ALL:
    if _t.numpy is not None:
        _NUMPY_TO_NAME.setdefault(_t.numpy, _t.name)


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
    name = _NUMPY_TO_NAME.get(base)
    if name is None:
        return lookup(f"B{dt.itemsize}")
    return BY_NAME[name]


def from_array_dtype(dt: np.dtype) -> DType:
    """The dtype to record for an array stored in a file. Only little-endian (or
    byte-order-free) simple types keep their name: a big-endian or structured element is
    recorded as opaque ``B<itemsize>`` so no view ever reinterprets its bytes wrongly."""
    if dt.fields is not None or dt.subdtype is not None or dt.byteorder == ">" \
            or (dt.byteorder == "=" and np.little_endian is False) or not 0 < dt.itemsize < 256:
        return lookup(f"B{max(1, min(255, dt.itemsize))}")
    return from_numpy(dt)
