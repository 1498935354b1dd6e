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

import contextlib
import json
import logging
import math
import struct
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from ..objects import dtypes
from ..objects.regions import Region
from . import npy
from .base import MAX_MEMBERS, FormatError, Layout, guarded, safe_member_name
from .torchpickle import torch_storage_dtypes

log = logging.getLogger(__name__)

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
# torch.save keeps storages in their own members, so data.pkl is only the object graph:
# a few KiB to a few MiB even for large models. Inflating more than this is refused as
# a pickle (a small deflate stream can claim gigabytes); the file is then stored as a
# plain archive, byte-exact, with its storages as untyped regions.
MAX_PICKLE = 64 << 20


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


def member_data_offset(path: str, f, info: zipfile.ZipInfo, size: int) -> int:
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


@contextlib.contextmanager
def open_members(path: str, unreadable: str) -> Iterator[tuple[zipfile.ZipFile, BinaryIO, list[zipfile.ZipInfo]]]:
    """The archive, the file under it and its members, checked: a readable zip (else
    ``unreadable (why)``), at most MAX_MEMBERS members, names UTF-8 and safe."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise FormatError(path, f"{unreadable} ({e})") from None
    with zf, open(path, "rb") as f:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise FormatError(path, f"{len(infos)} archive members is over the cap")
        for i in infos:
            if i.flag_bits & 0x800 == 0 and not i.filename.isascii():
                # cp437 names decode to anything; require the UTF-8 flag for non-ASCII.
                raise FormatError(path, f"archive member name {i.filename!r} is not UTF-8")
            safe_member_name(path, i.filename)
        yield zf, f, infos


@guarded("zip")
def parse(path: str, size: int) -> Layout:
    with open_members(path, "not a readable zip archive") as (zf, f, infos):
        pkl = [i for i in infos if i.filename.endswith("data.pkl") and i.filename.count("/") <= 1]
        pt2 = [i for i in infos if i.filename.endswith(PT2_WEIGHTS) and i.filename.count("/") == 3]
        if pkl:
            regions, fmt = _torch_regions(path, zf, f, size, infos, pkl[0]), "torch"
        elif pt2:
            regions, fmt = _pt2_regions(path, zf, f, size, infos, pt2[0].filename[: -len(PT2_WEIGHTS)]), "pt2"
        else:
            regions = _npy_regions(path, f, size, infos)
            fmt = "npz" if any(i.filename.endswith(".npy") for i in infos) else "zip"
    return Layout(fmt, regions)


def _torch_regions(path: str, zf: zipfile.ZipFile, f, size: int, infos: list[zipfile.ZipInfo],
                   pkl: zipfile.ZipInfo) -> list[Region]:
    """The storages of a torch.save / torch.jit.save zip, typed from data.pkl."""
    prefix = pkl.filename[: -len("data.pkl")]
    pickled = read_pickle(path, zf, pkl)
    dtypes_by_key = torch_storage_dtypes(path, pickled) if pickled is not None else {}
    regions: list[Region] = []
    for i in infos:
        member = i.filename[len(prefix):] if i.filename.startswith(prefix) else ""
        # constants/N: the tensor constants of a TorchScript archive (bytes).
        if not member.startswith(("data/", "constants/")) or i.compress_type != zipfile.ZIP_STORED:
            continue
        dt = dtypes_by_key.get(member[5:], "U8") if member.startswith("data/") else "U8"
        off = member_data_offset(path, f, i, size)
        width = dtypes.lookup(dt).width
        if i.file_size % width:
            dt, width = "U8", 1
        # Region names stay the member names (data/N): they key delta bases and diffs of
        # existing repositories; `show` and `diff` print state-dict keys (torchnames.py).
        regions.append(Region(off, i.file_size, member, dt, (i.file_size // width,)))
    return regions


# torch.export.save (.pt2): <name>/data/weights/model_weights_config.json maps each
# parameter's FQN to its member (path_name) and tensor_meta; constants likewise.
PT2_WEIGHTS = "data/weights/model_weights_config.json"
PT2_CONSTANTS = "data/constants/model_constants_config.json"
MAX_PT2_CONFIG = 64 << 20
# torch._export.serde.schema.ScalarType -> coralfs dtype.
PT2_SCALARS = {1: "U8", 2: "I8", 3: "I16", 4: "I32", 5: "I64", 6: "F16", 7: "F32", 8: "F64", 10: "C64",
               11: "C128", 12: "BOOL", 13: "BF16", 28: "U16", 29: "F8_E4M3", 30: "F8_E5M2",
               31: "F8_E4M3FNUZ", 32: "F8_E5M2FNUZ", 33: "F8_E8M0", 34: "U32", 35: "U64"}


def _pt2_config(path: str, zf: zipfile.ZipFile, name: str) -> dict:
    """A pt2 weights/constants config's ``config`` map ({} when absent or unreadable: its
    members are then stored as bytes, exactly)."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        return {}
    if info.file_size > MAX_PT2_CONFIG:
        log.warning("%s: %s declares %d bytes (over the cap): its tensors stored as bytes", path, name, info.file_size)
        return {}
    with zf.open(info) as m:
        raw = m.read(MAX_PT2_CONFIG + 1)
    try:
        cfg = json.loads(raw.decode("utf-8")).get("config", {})
    except (UnicodeDecodeError, ValueError, AttributeError) as e:
        log.warning("%s: %s is not a JSON config (%s): its tensors stored as bytes", path, name, e)
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _pt2_shape(meta) -> tuple[str, tuple[int, ...]] | None:
    """(dtype, shape) of a pt2 ``tensor_meta`` (None for one it cannot read)."""
    if not isinstance(meta, dict):
        return None
    dt = PT2_SCALARS.get(meta.get("dtype"))  # type: ignore[arg-type]
    sizes = meta.get("sizes")
    if dt is None or not isinstance(sizes, list):
        return None
    shape = []
    for s in sizes:
        n = s.get("as_int") if isinstance(s, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return None
        shape.append(n)
    return dt, tuple(shape)


def _pt2_regions(path: str, zf: zipfile.ZipFile, f, size: int, infos: list[zipfile.ZipInfo],
                 prefix: str) -> list[Region]:
    """The weights and constants of a torch.export archive: each stored (uncompressed)
    member its config names, typed by its tensor_meta and named by its FQN."""
    by_name = {i.filename: i for i in infos}
    regions: list[Region] = []
    used: set[str] = set()
    members: set[str] = set()  # tensors sharing a storage share one member: the first names it
    for cfg_name, where, tag in ((PT2_WEIGHTS, "data/weights/", ""), (PT2_CONSTANTS, "data/constants/", "constants/")):
        for fqn, entry in _pt2_config(path, zf, prefix + cfg_name).items():
            if not isinstance(entry, dict) or entry.get("use_pickle") or not isinstance(entry.get("path_name"), str):
                continue  # a pickled weight is a torch.save inside: its member stays bytes
            i = by_name.get(prefix + where + entry["path_name"])
            if i is None or i.compress_type != zipfile.ZIP_STORED or i.file_size == 0:
                continue
            name = tag + str(fqn)
            if name in used or i.filename in members:
                continue
            used.add(name)
            members.add(i.filename)
            off = member_data_offset(path, f, i, size)
            got = _pt2_shape(entry.get("tensor_meta"))
            dt, shape = got if got is not None else ("U8", (i.file_size,))
            width = dtypes.lookup(dt).width
            if math.prod(shape) * width != i.file_size:  # a view of a larger storage: flat
                if i.file_size % width:
                    dt, width = "U8", 1
                shape = (i.file_size // width,)
            regions.append(Region(off, i.file_size, name, dt, shape))
    return regions


def _npy_regions(path: str, f, size: int, infos: list[zipfile.ZipInfo]) -> list[Region]:
    """The arrays of an .npz (its stored .npy members; deflated ones stay bytes)."""
    regions: list[Region] = []
    for i in infos:
        if i.compress_type != zipfile.ZIP_STORED or not i.filename.endswith(".npy"):
            continue
        off = member_data_offset(path, f, i, size)
        f.seek(off)
        head = f.read(min(i.file_size, 12 + npy.MAX_NPY_HEADER))
        r = npy.region_at(f"{path}:{i.filename}", head, off, i.file_size, i.filename[:-4])
        if r is not None:
            regions.append(r)
    return regions
