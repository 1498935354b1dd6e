"""HDF5 through h5py: contiguous, unfiltered datasets are numeric regions at their file
offset; chunked or compressed datasets and all metadata stay literal bytes."""

from __future__ import annotations

from ..objects import dtypes
from ..objects.regions import Region
from .base import FormatError, Layout, guarded

MAGIC = b"\x89HDF\r\n\x1a\n"


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
            if not isinstance(obj, h5py.Dataset):
                return
            if obj.chunks is not None or obj.compression or obj.is_virtual or obj.external:
                return
            off = obj.id.get_offset()
            if off is None:  # not yet allocated (empty dataset)
                return
            n = obj.id.get_storage_size()
            dt = obj.dtype
            if not 0 < dt.itemsize < 256:
                return
            cdt = dtypes.from_array_dtype(dt) if dt.kind in "fiubc" else dtypes.lookup(f"B{dt.itemsize}")
            if n % cdt.width:
                return
            shape = tuple(obj.shape) if n == obj.size * cdt.width else (n // cdt.width,)
            regions.append(Region(off, n, "/" + name, cdt.name, shape))
        f.visititems(visit)
    return Layout("hdf5", regions)
