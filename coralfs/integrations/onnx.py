"""ONNX: `coralfs import onnx MODEL.onnx` and `coralfs export onnx REF OUT.onnx --graph T`.

Import needs no extra package: the model is validated by coralfs's own reader
(coralfs/formats/onnx.py: every tensor's bytes match its dims and data_type, external data
files exist and hold what the model says) and committed as it is, with its external data
files, so its initializers become tensor regions and the graph stays in the file.

Export takes a template model (the graph) and writes the commit's weights into its
initializers, by name: names, shapes and dtypes are checked first, every mismatch
named, and nothing is written unless all fit. The model's ``metadata_props`` record the
coralfs commit, its release tag and its lineage. ``--external-data`` writes the weights
to ``OUT.onnx.data`` beside the model (needed past protobuf's 2 GB), streamed from the
store without holding them in memory. Both files are written durably (temp, fsync,
rename), the data file first, so a crash never leaves a model pointing at missing data.
Export uses the ``onnx`` package (``coralfs[onnx]``) to edit the template.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from ..formats import onnx as onnx_format
from ..objects import dtypes
from ..objects.errors import CoralError
from ..objects.ids import to_hex
from ..objects.kinds import PackedTensor, Tensor, TensorSegment
from ..objects.reader import FileView
from ..objects.repository import Repository
from . import ImportSource, need

log = logging.getLogger(__name__)

# Protobuf refuses to serialize a message of 2 GiB or more.
PROTOBUF_LIMIT = (2 << 30) - 1
# External data: each tensor starts at a multiple of this (what onnx's own writer aligns
# large tensors to, so the data file can be memory-mapped per tensor).
ALIGN = 4096
BLOCK = 8 << 20

METADATA_KEYS = ("coralfs.commit", "coralfs.ref", "coralfs.release", "coralfs.lineage")


# -- import ---------------------------------------------------------------------------------

def prepare_import(path: str) -> ImportSource:
    """The model and its external data files, validated; a staging directory keeps data
    files in subdirectories where the model names them."""
    if not os.path.isfile(path):
        raise CoralError(f"{path}: not a file (give the .onnx model)")
    model = _read(path)
    base = os.path.dirname(os.path.abspath(path))
    locations: dict[str, int] = {}
    for t in model.tensors:
        if t.location is None:
            continue
        data = os.path.join(base, *t.location.split("/"))
        real = os.path.realpath(data)
        if os.path.islink(data) or not real.startswith(os.path.realpath(base) + os.sep):
            # the model named this path, the user did not: a link is not followed out
            raise CoralError(f"{path}: external data file {t.location!r} is a symbolic link or lies outside the "
                             f"model's directory; nothing was committed")
        if not os.path.isfile(data):
            raise CoralError(f"{path}: external data file {t.location!r} of tensor {t.name!r} is missing next to "
                             f"the model; nothing was committed")
        size = os.path.getsize(data)
        end = t.ext_offset + (t.ext_length if t.ext_length is not None else 0)
        if t.ext_offset > size or end > size:
            raise CoralError(f"{path}: tensor {t.name!r} ends at byte {end} of {t.location!r}, past its end "
                             f"({size} bytes); nothing was committed")
        locations[t.location] = size
    info = {"ir_version": model.ir_version, "producer": model.producer, "opsets": model.opsets,
            "tensors": len(model.tensors),
            "parameters": sum(_count(t.dims) for t in model.tensors),
            "external_data": sorted(locations)}
    name = os.path.basename(path)
    if all("/" not in loc for loc in locations):
        return ImportSource([path] + [os.path.join(base, loc) for loc in sorted(locations)], {"onnx": info}, name)
    stage = tempfile.mkdtemp(prefix="coralfs-onnx-")
    try:
        for rel in [name, *sorted(locations)]:
            dst = os.path.join(stage, *rel.split("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            src = path if rel == name else os.path.join(base, *rel.split("/"))
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ImportSource([stage], {"onnx": info}, name, cleanup=[stage])


def _read(path: str) -> onnx_format.ModelInfo:
    return onnx_format.model_info(path, os.path.getsize(path))


def _count(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


# -- the tensors of a commit ----------------------------------------------------------------

@dataclass
class CommitTensor:
    path: str               # the file of the commit holding it
    dtype: str
    shape: tuple[int, ...]
    offset: int             # of its bytes in that file
    length: int
    view: FileView

    def blocks(self) -> Iterator[bytes]:
        pos, end = self.offset, self.offset + self.length
        while pos < end:
            n = min(BLOCK, end - pos)
            yield self.view.read(pos, n)
            pos += n


def commit_tensors(repo: Repository, rev: str, paths: list[str] | None = None) -> dict[str, CommitTensor]:
    """Name -> tensor of every file of ``rev`` (or of ``paths``) that has named tensors
    (safetensors, onnx, npz, h5, keras ...). A name held by two files with different
    values is refused (name the file with ``paths``)."""
    out: dict[str, CommitTensor] = {}
    ids: dict[str, tuple] = {}
    for path, e in sorted(repo.tree_of(rev).entries.items()):
        if e.is_symlink or e.is_dir:
            continue
        if paths and not any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths):
            continue
        f = repo.read_file(e.file)
        view = None
        for name, (off, ref) in f.tensor_offsets().items():
            if isinstance(ref, PackedTensor):
                dtype, shape, ident = ref.dtype, tuple(ref.shape), ("p", ref.digest)
            else:
                assert isinstance(ref, TensorSegment)
                t = repo.odb.get_object(ref.tensor, Tensor)
                dtype, shape, ident = t.dtype, tuple(t.shape), ("t", ref.tensor)
            if name in out:
                if ids[name] != ident:
                    raise CoralError(f"tensor {name!r} is in both {out[name].path} and {path} with different values: "
                                     f"choose the file with --path")
                continue
            view = view or FileView(repo.odb, f)
            out[name] = CommitTensor(path, dtype, shape, off, ref.length, view)
            ids[name] = ident
    return out


# -- export ---------------------------------------------------------------------------------

@dataclass
class Exported:
    out: str
    data: str | None        # the external data file, if any
    tensors: int
    unused: int             # tensors of the commit the template does not name
    bytes: int


def export(repo: Repository, rev: str, out: str, graph: str, *, external_data: bool = False,
           paths: list[str] | None = None) -> Exported:
    """Write ``graph`` with the weights of ``rev`` to ``out`` (see the module docstring)."""
    onnx = need("onnx", "ONNX export", "onnx")
    if not os.path.isfile(graph):
        raise CoralError(f"--graph {graph}: no such file (give the template .onnx model)")
    if os.path.isdir(out):
        raise CoralError(f"{out}: is a directory; give the .onnx file to write")
    commit = repo.resolve(rev)
    have = commit_tensors(repo, to_hex(commit), paths)
    try:
        model = onnx.load(graph, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - the template is untrusted input too
        raise CoralError(f"--graph {graph}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    inits = list(model.graph.initializer)
    problems = _mismatches(inits, have, onnx)
    if problems:
        raise CoralError(f"{out} not written: {len(problems)} initializer(s) of {graph} do not fit {rev}: "
                         + "; ".join(problems))
    total = sum(have[t.name].length for t in inits)
    if not external_data and total > PROTOBUF_LIMIT - 64 * 1024 * 1024:
        raise CoralError(f"{out} not written: {total} bytes of weights is past protobuf's 2 GB limit; "
                         f"add --external-data")
    _stamp(repo, model, commit, rev)
    dest = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(dest):
        raise CoralError(f"{out}: its directory does not exist")
    from ..objects.durable import fsync_dir, write_durable
    data_path = None
    earlier = _data_files_of(onnx, out, dest)
    if external_data:
        data_name = _data_name(out, commit, graph, paths)
        data_path = os.path.join(dest, data_name)
        write_durable(data_path, _external_blocks(inits, have, data_name), mode=0o644, sync_dir=False)
    else:
        for t in inits:
            _clear(t)
            t.raw_data = b"".join(have[t.name].blocks())
    write_durable(os.path.abspath(out), model.SerializeToString(), mode=0o644, sync_dir=False)
    fsync_dir(dest)
    stale = [p for p in earlier if p != data_path]
    for p in stale:
        os.unlink(p)
    if stale:
        fsync_dir(dest)
    return Exported(out, data_path, len(inits), len(set(have) - {t.name for t in inits}), total)


def _data_name(out: str, commit: bytes, graph: str, paths: list[str] | None) -> str:
    """``OUT.onnx.<digest>.data``, the digest of what decides the data file's bytes (the
    commit, the template, the files chosen). A model names its data file, and two files
    cannot be renamed into place at once: with one fixed name, a crash between the two
    renames of a re-export would pair the earlier model with the new data. Distinct names
    make every model on disk name data that matches it; the same export twice writes the
    same bytes under the same name."""
    import hashlib
    h = hashlib.sha256(commit)
    with open(graph, "rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())
    h.update("\0".join(sorted(paths or [])).encode())
    return f"{os.path.basename(out)}.{h.hexdigest()[:12]}.data"


def _data_files_of(onnx, out: str, dest: str) -> list[str]:
    """The data files an earlier export to ``out`` wrote (named as :func:`_data_name`
    names them, or ``OUT.onnx.data``), removed once the new model is in place; files of
    other names the earlier model may point at are not ours to remove."""
    if not os.path.isfile(out):
        return []
    try:
        old = onnx.load(out, load_external_data=False)
    except Exception:  # noqa: BLE001 - whatever is there is replaced; its data is not guessed at
        return []
    base = os.path.basename(out)
    ours = re.compile(re.escape(base) + r"(\.[0-9a-f]{12})?\.data")
    found = set()
    for t in old.graph.initializer:
        for e in t.external_data:
            if e.key == "location" and ours.fullmatch(e.value) and os.path.isfile(os.path.join(dest, e.value)):
                found.add(os.path.join(dest, e.value))
    return sorted(found)


def _mismatches(inits, have: dict[str, CommitTensor], onnx) -> list[str]:
    out = []
    for t in inits:
        got = have.get(t.name)
        want_type = onnx.TensorProto.DataType.Name(t.data_type) if t.data_type in \
            onnx.TensorProto.DataType.values() else str(t.data_type)
        if got is None:
            out.append(f"{t.name!r} ({want_type} {list(t.dims)}) is not in the commit")
            continue
        ours = onnx_format.ONNX_TYPE.get(got.dtype)
        if ours != t.data_type:
            out.append(f"{t.name!r} is {want_type} in the template, {got.dtype} in {got.path}")
        elif tuple(t.dims) != got.shape:
            out.append(f"{t.name!r} has shape {list(t.dims)} in the template, {list(got.shape)} in {got.path}")
        elif got.length != _count(tuple(t.dims)) * dtypes.lookup(got.dtype).width:
            out.append(f"{t.name!r}: {got.length} bytes in {got.path} for shape {list(got.shape)}")
    return out


def _clear(t) -> None:
    """The tensor's data fields emptied (typed lists, raw bytes, external references)."""
    for name in ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data",
                 "external_data"):
        t.ClearField(name)
    t.ClearField("raw_data")
    t.data_location = 0


def _external_blocks(inits, have: dict[str, CommitTensor], location: str) -> Iterator[bytes]:
    """The data file's bytes, each tensor at an ALIGN boundary, setting each initializer's
    external reference as it goes (the model is serialized after the data is written)."""
    pos = 0
    for t in inits:
        src = have[t.name]
        pad = -pos % ALIGN
        if pad:
            yield b"\0" * pad
            pos += pad
        _clear(t)
        t.data_location = 1
        for key, value in (("location", location), ("offset", str(pos)), ("length", str(src.length))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        yield from src.blocks()
        pos += src.length


def _stamp(repo: Repository, model, commit: bytes, rev: str) -> None:
    """metadata_props: the coralfs commit, the ref given, the release tag at the commit
    (or the last one before it) and the lineage (parents and derived_from records)."""
    from ..workflow.releases import last_release_before, list_releases
    c = repo.read_commit(commit)
    releases = list_releases(repo)
    exact = [r.tag for r in releases if r.commit == commit]
    before = None if exact else last_release_before(repo, commit, releases)
    lineage = {"parents": [to_hex(p) for p in c.parents],
               "derived_from": (c.metadata or {}).get("derived_from", [])}
    values = {"coralfs.commit": to_hex(commit), "coralfs.ref": rev,
              "coralfs.release": exact[-1] if exact else (f"after {before.tag}" if before else ""),
              "coralfs.lineage": json.dumps(lineage, sort_keys=True)}
    keep = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in values.items():
        model.metadata_props.add(key=k, value=v)


__all__ = ["CommitTensor", "Exported", "commit_tensors", "export", "prepare_import"]
