"""Zip archives whose stored members hold arrays: ``.npz`` and torch checkpoints.

``torch.save`` writes a zip whose ``*/data/N`` members are the raw bytes of storages,
stored uncompressed; ``numpy.savez`` stores ``.npy`` members. Each stored member's bytes
are located through its local header and become a region. Torch storage dtypes are read
from ``data.pkl`` with an unpickler that builds nothing and imports nothing: every global
is a placeholder, so reading a checkpoint never runs its code (and never imports torch).
"""

from __future__ import annotations

import io
import logging
import pickle
import struct
import zipfile

from ..objects.writer import Region
from . import npy
from .base import guarded, MAX_MEMBERS, FormatError, Layout, safe_member_name

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
}
TORCH_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


class _Placeholder:
    """Stands for any global: accepts every call and every pickle protocol hook."""

    def __init__(self, *a, **k) -> None:
        self.name = k.pop("_name", "")

    def __call__(self, *a, **k):
        return _Placeholder()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, k, v) -> None:
        pass

    def append(self, v) -> None:
        pass

    def extend(self, v) -> None:
        pass


class _ScanUnpickler(pickle.Unpickler):
    def __init__(self, f) -> None:
        super().__init__(f)
        self.storages: dict[str, str] = {}

    def find_class(self, module: str, name: str):
        p = _Placeholder(_name=name)
        p.module = module  # type: ignore[attr-defined]
        return p

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            st, key = pid[1], str(pid[2])
            dtype = None
            if isinstance(st, _Placeholder):
                dtype = TORCH_STORAGES.get(st.name) or TORCH_DTYPES.get(st.name)
            self.storages[key] = dtype or "U8"
        return _Placeholder()


def torch_storage_dtypes(path: str, data: bytes) -> dict[str, str]:
    u = _ScanUnpickler(io.BytesIO(data))
    try:
        u.load()
    except Exception as e:  # any malformed pickle: dtypes unknown, bytes still exact
        raise FormatError(path, f"torch data.pkl does not parse ({type(e).__name__}: {e})") from None
    return u.storages


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
                if not i.filename.startswith(prefix + "data/") or i.compress_type != zipfile.ZIP_STORED:
                    continue
                key = i.filename[len(prefix) + 5:]
                dt = dtypes_by_key.get(key, "U8")
                off = _member_data_offset(path, f, i, size)
                from ..objects import dtypes as _dt
                width = _dt.lookup(dt).width
                if i.file_size % width:
                    dt, width = "U8", 1
                regions.append(Region(off, i.file_size, f"data/{key}", dt, (i.file_size // width,)))
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
