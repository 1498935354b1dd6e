"""Builders of small files that are expensive to commit naively (issue: "small inputs,
huge costs"). Used by scripts/bench_hostile.py at full size and by the tests at smaller
sizes where the behaviour is the same."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import numpy as np


def pickle_bomb(path: str, inflated: int = 3 << 30, level: int = 9) -> None:
    """A torch-style zip (archive/data.pkl, archive/data/0, archive/version) whose
    deflated data.pkl is a valid pickle of ``inflated`` zero bytes (BINBYTES8)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as m:
            m.write(b"\x80\x04\x8e" + struct.pack("<Q", inflated))
            block = bytes(8 << 20)
            left = inflated
            while left:
                n = min(left, len(block))
                m.write(block[:n])
                left -= n
            m.write(b".")
        z.writestr(zipfile.ZipInfo("archive/data/0"), np.arange(256, dtype=np.float32).tobytes())
        z.writestr("archive/version", "3\n")


def many_tensors_safetensors(path: str, n: int = 300_000) -> None:
    """A safetensors file of ``n`` tiny tensors (4 float32 values each, distinct)."""
    header: dict = {}
    data = io.BytesIO()
    off = 0
    for i in range(n):
        header[f"t.{i}"] = {"dtype": "F32", "shape": [4], "data_offsets": [off, off + 16]}
        data.write(np.arange(i * 4, i * 4 + 4, dtype=np.float32).tobytes())
        off += 16
    body = json.dumps(header, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body)
        f.write(data.getbuffer())


def many_members_npz(path: str, n: int = 200_000) -> None:
    """An uncompressed .npz (numpy.savez) with ``n`` small arrays."""
    np.savez(path, **{f"a{i}": np.full(3, i, dtype=np.int64) for i in range(n)})


def sparse_file(path: str, size: int = 10 << 30) -> None:
    """A sparse file of ``size`` bytes: holes with a little data at the start, middle, end."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off in (0, size // 2, size - 4096):
            f.seek(off)
            f.write(os.urandom(4096))


def legacy_torch_claiming(count: int) -> bytes:
    """A legacy (non-zip) torch file of one float32 storage whose record claims ``count``
    elements (its bytes are 16)."""
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, buf, _use_new_zipfile_serialization=False)
    raw = bytearray(buf.getvalue())
    struct.pack_into("<q", raw, len(raw) - 16 - 8, count)
    return bytes(raw)
