"""Keras 3 ``.keras`` files: a zip of ``metadata.json``, ``config.json`` and the weights
``model.weights.h5`` (plus ``assets/`` when a layer has any).

Keras writes every member STORED (``zipfile.ZipFile(f, "w")`` without compression), so
the weights h5 lies in the archive as it is: it is opened in place through a window on
the archive (h5py reads a file object), and its contiguous datasets become typed regions
at their offset in the .keras file, exactly as a bare ``.weights.h5`` would
(coralfs/formats/hdf5.py). A weights member that was DEFLATED (an archive re-zipped by
another tool) has no numeric bytes in the file: the archive is then stored as it is,
without regions. The JSON members and zip headers are literal bytes; the file comes
back byte-identical either way.
"""

from __future__ import annotations

import zipfile
from dataclasses import replace

from . import hdf5
from .base import FormatError, Layout, Window, guarded
from .ziparchive import member_data_offset, open_members

WEIGHTS = "model.weights.h5"


@guarded("Keras")
def parse(path: str, size: int) -> Layout:
    with open_members(path, "not a Keras archive: not a readable zip") as (_, f, infos):
        names = {i.filename for i in infos}
        if "config.json" not in names:
            raise FormatError(path, "not a Keras archive (no config.json)")
        weights = [i for i in infos if i.filename == WEIGHTS]
        if not weights or weights[0].compress_type != zipfile.ZIP_STORED:
            return Layout("keras")  # no weights, or deflated: no numeric bytes to point at
        info = weights[0]
        if info.compress_size != info.file_size:
            raise FormatError(path, f"{WEIGHTS} is stored uncompressed but its sizes differ "
                                    f"({info.compress_size} and {info.file_size} bytes)")
        start = member_data_offset(path, f, info, size)
        where = f"{path}:{WEIGHTS}"
        inner = hdf5.parse(where, info.file_size, fileobj=Window(f, start, info.file_size))
        for r in inner.regions:
            if r.offset < 0 or r.offset + r.length > info.file_size:
                raise FormatError(where, f"dataset {r.name!r} runs past the end of the weights member")
    # The h5's own offsets, placed where the member's bytes lie in the archive.
    return Layout("keras", [replace(r, offset=start + r.offset) for r in inner.regions])


__all__ = ["WEIGHTS", "Window", "parse"]

