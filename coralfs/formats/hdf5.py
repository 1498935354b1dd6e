"""HDF5 through h5py: datasets are numeric regions at their file offsets.

A contiguous, unfiltered dataset is one region. A chunked dataset without filters is one
region per allocated chunk, found through the chunk index (``get_chunk_info`` /
``chunk_iter``): each chunk is stored whole (edge chunks padded to the chunk shape), so
its bytes are a C-ordered block of the chunk's shape. Chunks of a filtered (compressed,
shuffled, checksummed) dataset are encoded bytes and stay literal, as do all metadata.
"""

from __future__ import annotations

import logging
import math

from ..objects import dtypes
from ..objects.regions import Region
from .base import MAX_MEMBERS, FormatError, Layout, guarded

log = logging.getLogger(__name__)

MAGIC = b"\x89HDF\r\n\x1a\n"


def _cdt(dt) -> dtypes.DType | None:
    if not 0 < dt.itemsize < 256:
        return None
    return dtypes.from_array_dtype(dt) if dt.kind in "fiubc" else dtypes.lookup(f"B{dt.itemsize}")


def _chunks(dsid) -> list[tuple[tuple[int, ...], int, int, int]]:
    """(chunk offset, filter mask, byte offset, size) of every allocated chunk."""
    out: list = []
    if hasattr(dsid, "chunk_iter"):
        try:
            dsid.chunk_iter(lambda s: out.append((tuple(s.chunk_offset), s.filter_mask, s.byte_offset, s.size)))
            return out
        except (AttributeError, NotImplementedError, TypeError):
            out.clear()  # an HDF5 library without H5Dchunk_iter: ask chunk by chunk
    n = dsid.get_num_chunks()
    if n > MAX_MEMBERS:
        raise ValueError(f"{n} chunks is over the cap")
    for i in range(n):
        s = dsid.get_chunk_info(i)
        out.append((tuple(s.chunk_offset), s.filter_mask, s.byte_offset, s.size))
    return out


@guarded("HDF5")
def parse(path: str, size: int, fileobj=None) -> Layout:
    """``fileobj``: read the HDF5 file through it (one inside a .keras archive)."""
    import h5py  # here, not at import: every CLI command would pay for it (docs/benchmarks.md)

    regions: list[Region] = []
    try:
        f = h5py.File(path if fileobj is None else fileobj, "r")
    except OSError as e:
        raise FormatError(path, f"HDF5 file does not open ({str(e).splitlines()[0]})") from None
    with f:
        def visit(name, obj) -> None:
            if not isinstance(obj, h5py.Dataset) or obj.is_virtual or obj.external:
                return
            cdt = _cdt(obj.dtype)
            if cdt is None:
                return
            if obj.chunks is not None:
                _chunked(obj, "/" + name, cdt, regions)
                return
            if obj.compression:
                return
            off = obj.id.get_offset()
            if off is None:  # not yet allocated (empty dataset)
                return
            n = obj.id.get_storage_size()
            if n % cdt.width:
                return
            shape = tuple(obj.shape) if n == obj.size * cdt.width else (n // cdt.width,)
            regions.append(Region(off, n, "/" + name, cdt.name, shape))
        f.visititems(visit)
        if len(regions) > MAX_MEMBERS:
            raise FormatError(path, f"{len(regions)} HDF5 regions is over the cap")
    return Layout("hdf5", regions)


def _chunked(obj, name: str, cdt: dtypes.DType, regions: list[Region]) -> None:
    """The chunks of an unfiltered chunked dataset, one region each, named by the chunk's
    position (``/w:0,16``: stable across versions, so each chunk deltas its old self)."""
    if obj.id.get_create_plist().get_nfilters():
        return  # filtered chunks are encoded bytes: literal
    shape = tuple(obj.chunks)
    want = math.prod(shape) * cdt.width
    for where, _mask, off, n in _chunks(obj.id):
        if n != want or off is None:
            log.debug("%s: chunk %s of %d bytes (not %d) stays literal", name, where, n, want)
            continue
        regions.append(Region(off, n, f"{name}:{','.join(map(str, where))}", cdt.name, shape))
