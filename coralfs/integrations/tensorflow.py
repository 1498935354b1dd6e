"""TensorFlow without TensorFlow: import SavedModels and checkpoints, stream weights out.

``coralfs import tensorflow PATH`` takes a SavedModel directory, a checkpoint directory
(``checkpoint`` + ``PREFIX.index`` + data shards) or a checkpoint prefix. Its tensor
bundles are checked first (every shard the index names present, each tensor inside its
shard with the crc32c the index records: :mod:`coralfs.formats.tfbundle`); the commit then
stores each shard's tensors as typed regions, so the next version dedups and deltas.

:func:`tensors` yields (name, numpy array) of a commit's tensors one at a time, for any
format coralfs splits into tensors, so weights stream into a ``tf.data`` pipeline
(``tf.data.Dataset.from_generator``) without TensorFlow being needed to read them.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator

import numpy as np

from ..formats import tfbundle
from ..formats.base import FormatError
from ..objects import dtypes
from ..objects.errors import CoralError
from ..objects.kinds import PackedTensor, Tensor
from ..objects.repository import Repository
from . import ImportSource


def _bundle_prefixes(d: str) -> list[str]:
    """Prefixes (paths without ``.index``) of the bundles directly in directory ``d``."""
    return sorted(os.path.join(d, n[:-6]) for n in os.listdir(d) if n.endswith(".index") and
                  os.path.isfile(os.path.join(d, n)))


def check_bundle(prefix: str) -> dict:
    """Validate the bundle at ``prefix`` (index, every shard it names, every tensor's
    bounds, size and crc32c); what the commit's metadata records of it."""
    index = prefix + ".index"
    with open(index, "rb") as f:
        data = f.read(tfbundle.MAX_INDEX + 1)
    if len(data) > tfbundle.MAX_INDEX:
        raise FormatError(index, f"over the {tfbundle.MAX_INDEX >> 20} MiB cap of a tensor-bundle index")
    bundle = tfbundle.parse_index(index, data)
    tensors = 0
    for i, shard in enumerate(tfbundle.bundle_files(prefix, bundle)):
        if not os.path.isfile(shard):
            raise CoralError(f"{shard}: missing: {index} names {bundle.num_shards} data shards; nothing was committed")
        lay = tfbundle.shard_layout(shard, os.path.getsize(shard), bundle, i, bundle.num_shards, os.path.basename(index))
        lay.check(shard, os.path.getsize(shard))
        tensors += len(lay.regions)
    return {"shards": bundle.num_shards, "tensors": tensors,
            "entries": sum(1 for e in bundle.entries if not e.sliced)}


def prepare_import(path: str) -> ImportSource:
    """What ``coralfs import tensorflow PATH`` commits (see the module's docstring)."""
    path = path.rstrip("/") or path
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(os.path.join(path, "saved_model.pbtxt")):
            kind, bundles = "savedmodel", _bundle_prefixes(os.path.join(path, "variables")) \
                if os.path.isdir(os.path.join(path, "variables")) else []
        else:
            kind, bundles = "checkpoint", _bundle_prefixes(path)
            if not bundles:
                raise CoralError(f"{path}: neither a SavedModel (no saved_model.pb) nor a checkpoint directory "
                                 "(no *.index): give the SavedModel directory or the checkpoint prefix")
        paths = [path]
    else:
        prefix = path[:-6] if path.endswith(".index") else path
        if not os.path.isfile(prefix + ".index"):
            raise CoralError(f"{path}: no {os.path.basename(prefix)}.index beside it: give a SavedModel directory, "
                             "a checkpoint directory or a checkpoint prefix")
        kind, bundles = "checkpoint", [prefix]
        d = os.path.dirname(prefix) or "."
        base = os.path.basename(prefix)
        paths = sorted(os.path.join(d, n) for n in os.listdir(d)
                       if n == base + ".index" or tfbundle.SHARD_NAME.match(n) and n.startswith(base + ".data-"))
        if os.path.isfile(os.path.join(d, "checkpoint")):
            paths.append(os.path.join(d, "checkpoint"))  # the state file naming the latest prefix
    root = path if os.path.isdir(path) else os.path.dirname(path) or "."
    meta = {os.path.relpath(p, root): check_bundle(p) for p in bundles}
    name = os.path.basename(os.path.abspath(path))
    return ImportSource(paths, {"tensorflow": {"kind": kind, "bundles": meta}}, name)


def _array(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    d = dtypes.lookup(dtype).numpy
    if d is None:
        return np.frombuffer(raw, np.uint8)
    return np.frombuffer(raw, d).reshape(shape)


def tensors(repo: Repository, ref: str = "HEAD", pattern: str = "*", files: str = "*") -> Iterator[tuple[str, np.ndarray]]:
    """(tensor name, array) of each tensor of commit ``ref`` whose name matches
    ``pattern`` (and whose file's path matches ``files``), read one tensor at a time.

    Names are as the file's format gives them (a bundle key, a state-dict key); a name
    found in two files is yielded once per file. Arrays are read-only views of the bytes
    read for that tensor alone: nothing else of the commit is loaded.
    """
    tree = repo.tree_of(ref)
    for path in sorted(tree.entries):
        e = tree.entries[path]
        if e.is_dir or e.is_symlink or not fnmatch.fnmatchcase(path, files):
            continue
        f = repo.read_file(e.file)
        offsets = f.tensor_offsets()
        if not offsets:
            continue
        view = repo.open_file(e.file)
        for name, (pos, t) in offsets.items():
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            if isinstance(t, PackedTensor):
                dtype, shape, length = t.dtype, t.shape, t.length
            else:
                obj = repo.odb.get_object(t.tensor, Tensor)
                dtype, shape, length = obj.dtype, obj.shape, t.length
            yield name, _array(view.read(pos, length), dtype, shape)


__all__ = ["check_bundle", "prepare_import", "tensors"]
