"""Pick the reader of a file by its name and its first bytes."""

from __future__ import annotations

import importlib
import os
import posixpath
import re
from collections.abc import Callable, Iterable

from . import gguf, hdf5, keras, npy, onnx, safetensors, torchlegacy, ziparchive
from .base import MAX_HEADER, FormatError, Layout

STRICT = {".safetensors": safetensors.parse, ".npy": npy.parse, ".npz": ziparchive.parse,
          ".h5": hdf5.parse, ".hdf5": hdf5.parse, ".gguf": gguf.parse, ".onnx": onnx.parse,
          ".keras": keras.parse}


class Siblings:
    """The other files of the tree a file is committed in, as a reader may see them.

    Some formats split one checkpoint over several files (a TensorFlow bundle's shards
    are described by its ``.index``, a DCP shard by ``.metadata``, ONNX external data by
    its model file): the reader of one file needs to read another. ``here`` is the
    file's tree path; :meth:`path` resolves a name relative to its directory and gives a
    readable copy of that file, never anything outside the committed tree.
    """

    def __init__(self, here: str, names: Iterable[str], open_: Callable[[str], str]) -> None:
        self.here = here
        # (a commit's _TreeFiles passes one frozenset for all its files: not copied)
        self._names = names if isinstance(names, frozenset) else frozenset(names)
        self._open = open_

    def resolve(self, name: str) -> str | None:
        """The tree path of ``name`` (relative to ``here``'s directory), or None when it
        names no file of the tree or would leave it (absolute, or '..' past the root)."""
        if not name or name.startswith("/") or "\\" in name or "\0" in name:
            return None
        p = posixpath.normpath(posixpath.join(posixpath.dirname(self.here), name))
        if p == ".." or p.startswith("../") or p.startswith("/"):
            return None
        return p if p in self._names and p != self.here else None

    def names(self) -> list[str]:
        """Tree paths of the other files of the tree, sorted."""
        return sorted(self._names - {self.here})

    def path(self, name: str) -> str | None:
        """A path on disk holding the bytes of sibling ``name`` (readable while the
        reader runs), or None when there is no such file inside the tree."""
        p = self.resolve(name)
        return None if p is None else self._open(p)

    def read(self, name: str, path: str, limit: int = MAX_HEADER) -> bytes | None:
        """The bytes of sibling ``name`` (None when the tree has none). One over
        ``limit`` bytes is refused: a FormatError naming ``path``, the file it describes."""
        p = self.path(name)
        if p is None:
            return None
        with open(p, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise FormatError(path, f"its {name} is over the {limit >> 20} MiB cap")
        return data


def disk_siblings(path: str) -> Siblings:
    """Siblings of a file on disk: the regular files of its own directory only."""
    root = os.path.dirname(os.path.abspath(path))
    names = [n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n)) and not os.path.islink(os.path.join(root, n))]
    return Siblings(os.path.basename(path), names, lambda p: os.path.join(root, p))


# Readers that need a sibling file, tried in order on the file's name (not its path):
# each takes (path, size, siblings) and returns a Layout, or None when the name only
# looked like its format (no sibling index: then the file is read as any other). A reader
# is named "module:function" and imported on its first match, so a commit of files none
# of these names match never imports it.
SiblingReader = Callable[[str, int, Siblings], "Layout | None"]
BY_NAME: list[tuple[Callable[[str], bool], SiblingReader | str]] = [
    (re.compile(r"^.+\.data-\d{5}-of-\d{5}$").match, "tfbundle:parse_shard"),   # TensorFlow bundle shards
    (re.compile(r"^__\d+_\d+\.distcp$").match, "dcp:parse_shard"),              # torch.distributed.checkpoint
]


def _reader(read: SiblingReader | str) -> SiblingReader:
    if isinstance(read, str):
        module, func = read.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), func)
    return read


def layout_of(path: str, name: str | None = None, siblings: Siblings | None = None) -> Layout:
    """The layout of the file at ``path`` (recognised by ``name``, default ``path``).

    Files named as a format (.safetensors, .npy, .npz, .h5, .gguf) must be valid or a
    FormatError names the problem. Others are recognised by their magic (zip, GGUF,
    legacy torch, HDF5, npy); anything else is a generic file of content-defined chunks.
    ``siblings``: the other files of the commit, for formats whose layout another file
    describes (:data:`BY_NAME`).
    """
    size = os.stat(path).st_size
    ext = os.path.splitext(name or path)[1].lower()
    if siblings is not None:
        base = posixpath.basename(name or path)
        for match, read in BY_NAME:
            if match(base):
                lay = _reader(read)(path, size, siblings)
                if lay is not None:
                    return lay.check(path, size)
    with open(path, "rb") as f:
        magic = f.read(24)
    if ext in STRICT:
        if ext in (".h5", ".hdf5") and magic[:8] != hdf5.MAGIC:
            raise FormatError(path, "not an HDF5 file (bad signature)")
        return STRICT[ext](path, size).check(path, size)
    if magic[:4] == b"PK\x03\x04":
        return ziparchive.parse(path, size).check(path, size)
    if magic[:4] == gguf.MAGIC:
        return gguf.parse(path, size).check(path, size)
    if torchlegacy.sniff(magic):
        return torchlegacy.parse(path, size).check(path, size)
    if magic[:8] == hdf5.MAGIC:
        return hdf5.parse(path, size).check(path, size)
    if magic[:6] == npy.MAGIC:
        return npy.parse(path, size).check(path, size)
    return Layout("bytes")


__all__ = ["BY_NAME", "FormatError", "Siblings", "disk_siblings", "layout_of"]
