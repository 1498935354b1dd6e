"""Object ids: SHA-256 of canonical bytes, raw 32 bytes inside, hex at the edges."""

from __future__ import annotations

import hashlib
from typing import NewType

ObjectId = NewType("ObjectId", bytes)

ID_LEN = 32
HEX_LEN = 64
ZERO_ID = ObjectId(b"\0" * ID_LEN)


def hash_bytes(data: bytes | bytearray | memoryview) -> ObjectId:
    """The id of some bytes. hashlib releases the GIL for large inputs."""
    return ObjectId(hashlib.sha256(data).digest())


def to_hex(oid: bytes) -> str:
    return oid.hex()


def from_hex(text: str) -> ObjectId:
    """Parse a full 64-digit hex id; ValueError otherwise."""
    if len(text) != HEX_LEN:
        raise ValueError(f"an object id has {HEX_LEN} hex digits, got {len(text)}: {text!r}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"not a hex object id: {text!r}") from None
    return ObjectId(raw)


def is_hex_prefix(text: str) -> bool:
    return 0 < len(text) <= HEX_LEN and all(c in "0123456789abcdef" for c in text)


def short(oid: bytes, n: int = 12) -> str:
    return oid.hex()[:n]
