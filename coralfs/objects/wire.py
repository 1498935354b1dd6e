"""Bounds-checked little-endian encoding used by the object classes."""

from __future__ import annotations

import struct

from .ids import ID_LEN, ObjectId

_U8, _U16, _U32, _U64 = (struct.Struct(f"<{c}") for c in "BHIQ")


class WireError(ValueError):
    """Serialized bytes do not parse; callers turn it into CorruptObject."""


class Encoder:
    """Builds the serialized bytes of an object (the decoding side is Reader)."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(_U8.pack(v))

    def u16(self, v: int) -> None:
        self.parts.append(_U16.pack(v))

    def u32(self, v: int) -> None:
        self.parts.append(_U32.pack(v))

    def u64(self, v: int) -> None:
        self.parts.append(_U64.pack(v))

    def oid(self, v: bytes) -> None:
        assert len(v) == ID_LEN
        self.parts.append(bytes(v))

    def text(self, v: str, wide: bool = False) -> None:
        b = v.encode("utf-8")
        (self.u32 if wide else self.u16)(len(b))
        self.parts.append(b)

    def raw(self, b: bytes) -> None:
        self.parts.append(b)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise WireError(f"truncated: wanted {n} bytes at {self.pos} of {len(self.buf)}")
        b = self.buf[self.pos:end]
        self.pos = end
        return b

    def u8(self) -> int:
        return _U8.unpack(self._take(1))[0]

    def u16(self) -> int:
        return _U16.unpack(self._take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self._take(8))[0]

    def oid(self) -> ObjectId:
        return ObjectId(self._take(ID_LEN))

    def text(self, wide: bool = False) -> str:
        n = self.u32() if wide else self.u16()
        try:
            return self._take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise WireError(f"invalid UTF-8: {e}") from None

    def count(self, item_min_size: int) -> int:
        """A u32 count, refused if the remaining bytes cannot hold that many items."""
        n = self.u32()
        if n * item_min_size > len(self.buf) - self.pos:
            raise WireError(f"count {n} exceeds the remaining bytes")
        return n

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise WireError(f"{len(self.buf) - self.pos} trailing bytes")
