"""Display names of a stored torch file's storages: the state-dict keys of their tensors.

A torch zip's regions are named by their members (``data/0``..``data/N``): those names
key delta bases and tensor diffs of repositories that already hold such files, so they
stay. What people want to read is the state-dict key, dtype and shape of each tensor
viewing a storage; it is in the pickle, read here from the *stored* file through a
``read(offset, length)`` callable (the zip's central directory and data.pkl: a few reads),
without running the pickle (coralfs.formats.torchpickle).
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable

from . import torchlegacy, ziparchive
from .torchpickle import View, scan

log = logging.getLogger(__name__)

Read = Callable[[int, int], bytes]
FORMATS = ("torch", "torch-legacy")


class _Stored(io.RawIOBase):
    """A read-only, seekable file over ``read(offset, length)`` (for zipfile)."""

    def __init__(self, read: Read, size: int) -> None:
        self._read, self._size, self._pos = read, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self._size - self._pos))
        data = self._read(self._pos, n) if n else b""
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)


def storage_views(fmt: str, read: Read, size: int) -> dict[str, list[View]]:
    """Region name -> the tensors viewing it, for a stored file of format ``fmt`` ({} for
    other formats, or when the pickle cannot be read: names then stay the region names)."""
    if fmt not in FORMATS:
        return {}
    try:
        with _Stored(read, size) as f:
            if fmt == "torch":
                return _zip_views(f)
            return _legacy_views(f, size)
    except Exception as e:  # noqa: BLE001 - display only: a stored file was validated when committed
        log.debug("no tensor names for a stored %s file (%s: %s)", fmt, type(e).__name__, e)
        return {}


def _zip_views(f) -> dict[str, list[View]]:
    with zipfile.ZipFile(f) as zf:
        pkl = [i for i in zf.infolist() if i.filename.endswith("data.pkl") and i.filename.count("/") <= 1]
        if not pkl:
            return {}
        data = ziparchive.read_pickle("<stored>", zf, pkl[0])
    if data is None:
        return {}
    return {f"data/{key}": vs for key, vs in scan("<stored>", data).views.items()}


def _legacy_views(f, size: int) -> dict[str, list[View]]:
    got = torchlegacy.read_head("<stored>", f, size)
    if got is None:
        return {}
    _pos, graph, keys = got
    sc = scan("<stored>", graph)
    names = torchlegacy.region_names(sc, keys)
    return {names[k]: sc.views[k] for k in keys if k in names and k in sc.views}


def label(views: list[View], most: int = 3) -> str:
    """How a storage is named for people: its tensors' keys (``a, b +2 more``)."""
    keys = [v.name for v in views if v.name]
    if not keys:
        return ""
    text = ", ".join(keys[:most])
    return text + (f" +{len(keys) - most} more" if len(keys) > most else "")


def shown(name: str, keys: str) -> str:
    """A region's name as printed: ``l.weight (data/0)``; just the name where the keys
    are the name (a legacy file's storages are named by their first key)."""
    return name if not keys or keys == name else f"{keys} ({name})"
