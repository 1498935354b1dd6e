"""Pick the reader of a file by its name and its first bytes."""

from __future__ import annotations

import os

from . import hdf5, keras, npy, onnx, safetensors, ziparchive
from .base import FormatError, Layout

STRICT = {".safetensors": safetensors.parse, ".npy": npy.parse, ".npz": ziparchive.parse,
          ".h5": hdf5.parse, ".hdf5": hdf5.parse, ".onnx": onnx.parse,
          ".keras": keras.parse}


def layout_of(path: str, name: str | None = None) -> Layout:
    """The layout of the file at ``path`` (recognised by ``name``, default ``path``).

    Files named as a format (.safetensors, .npy, .npz, .h5) must be valid or a
    FormatError names the problem. Others are recognised by their magic (zip, HDF5, npy);
    anything else is a generic file of content-defined chunks.
    """
    size = os.stat(path).st_size
    ext = os.path.splitext(name or path)[1].lower()
    with open(path, "rb") as f:
        magic = f.read(8)
    if ext in STRICT:
        if ext in (".h5", ".hdf5") and magic != hdf5.MAGIC:
            raise FormatError(path, "not an HDF5 file (bad signature)")
        return STRICT[ext](path, size).check(path, size)
    if magic[:4] == b"PK\x03\x04":
        return ziparchive.parse(path, size).check(path, size)
    if magic == hdf5.MAGIC:
        return hdf5.parse(path, size).check(path, size)
    if magic[:6] == npy.MAGIC:
        return npy.parse(path, size).check(path, size)
    return Layout("bytes")


__all__ = ["FormatError", "layout_of"]
