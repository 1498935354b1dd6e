"""Comparing revisions file by file and tensor by tensor, and what storage they take.

Needs only the object layer (dtypes, tensors, files): it lives above it because these are
reports for people (the CLI's diff, preview and show, ``Repository.diff``), not storage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .objects import dtypes
from .objects.codecs import HEADER_SIZE
from .objects.fsck import read_link
from .objects.history import walk
from .objects.ids import ObjectId
from .objects.kinds import File, PackedTensor, Tensor, TensorSegment, Tree, TreeEntry
from .objects.reader import FileView
from .objects.repository import Repository


@dataclass
class TensorChange:
    name: str
    status: str  # added, removed, changed, unchanged
    dtype: str = ""
    shape: tuple = ()
    max_abs: float | None = None
    rel_l2: float | None = None
    stored: int = 0
    changed_frac: float | None = None  # share of elements whose value differs
    # A torch storage's tensors as the pickle names them (state-dict key, dtype, shape,
    # offset in the storage): ``name`` stays the stored region name (data/N).
    label: str = ""
    views: list[dict] = field(default_factory=list)


# Called with (element offset, |b - a| of the elements from there; 0 where not finite) as a
# tensor's chunks stream by: how analysis builds block heatmaps without a second decode.
DeltaSink = Callable[[int, np.ndarray], None]
# Asked once per compared tensor (file path, tensor name, shape): a sink, or None for none.
SinkFor = Callable[[str, str, tuple[int, ...]], DeltaSink | None]


@dataclass
class FileChange:
    path: str
    status: str  # added, removed, modified
    old: ObjectId | None = None
    new: ObjectId | None = None
    size_old: int = 0
    size_new: int = 0
    tensors: list[TensorChange] = field(default_factory=list)
    kind_old: str = ""   # "file", "link" or "dir" ("" where the path is absent)
    kind_new: str = ""
    target_old: bytes | None = None  # a link's target text
    target_new: bytes | None = None

    @property
    def special(self) -> bool:
        """A link or an empty directory on either side (no tensors to compare)."""
        return bool({self.kind_old, self.kind_new} & {"link", "dir"})


def kind_of(e: TreeEntry | None) -> str:
    """What a tree entry is: "file", "link" or "dir" ("" for none)."""
    if e is None:
        return ""
    return "link" if e.is_symlink else "dir" if e.is_dir else "file"


def _tensor_key(ref: TensorSegment | PackedTensor) -> tuple:
    """What makes two versions of a tensor equal: its id, or a packed tensor's dtype,
    shape and content digest (a tensor that moves in or out of a pack compares unequal,
    which only costs a 'changed' line)."""
    if isinstance(ref, TensorSegment):
        return ("t", ref.tensor)
    return ("p", ref.dtype, ref.shape, ref.digest)


def _dtype_shape(ref: TensorSegment | PackedTensor, t: Tensor | None) -> tuple[str, tuple[int, ...]]:
    if isinstance(ref, PackedTensor):
        return ref.dtype, ref.shape
    assert t is not None
    return t.dtype, t.shape


class DeltaStats:
    """Streaming max |b - a|, relative L2 change and fraction of changed elements of one
    tensor, fed chunk by chunk (never more than a chunk pair in memory)."""

    def __init__(self, sink: DeltaSink | None = None) -> None:
        self.max_abs, self.num, self.den = 0.0, 0.0, 0.0
        self.changed, self.count = 0, 0
        self.sink = sink

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        d = y - x
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(d)
            ad = np.where(finite, np.abs(d), 0.0)
            if finite.any():
                self.max_abs = max(self.max_abs, float(ad.max()))
            self.num += float(np.square(ad).sum())
            self.den += float(np.square(x[np.isfinite(x)]).sum())
            # NaN == NaN counts as unchanged: only a different value is a change.
            self.changed += int(np.count_nonzero((x != y) & ~(np.isnan(x) & np.isnan(y))))
        if self.sink is not None:
            self.sink(self.count, ad)
        self.count += x.size

    def result(self) -> tuple[float | None, float | None, float | None]:
        """(max |Δ|, relative L2 change or None for an all-zero base, changed fraction)."""
        rel = (self.num ** 0.5 / self.den ** 0.5) if self.den > 0 else None
        return self.max_abs, rel, (self.changed / self.count) if self.count else None


def _delta_of(dt: dtypes.DType, pairs: Iterable[tuple[bytes, bytes]],
              sink: DeltaSink | None = None) -> tuple[float | None, float | None, float | None]:
    """Max |b - a|, relative L2 change and changed fraction over (a bytes, b bytes) blocks
    of one dtype."""
    acc = DeltaStats(sink)
    for xa, yb in pairs:
        acc.add(np.frombuffer(xa, dt.numpy).astype(np.float64), np.frombuffer(yb, dt.numpy).astype(np.float64))
    return acc.result()


def _packed_delta_stats(views, name: str, dtype: str,
                        sink: DeltaSink | None) -> tuple[float | None, float | None, float | None]:
    dt = dtypes.lookup(dtype)
    if dt.numpy is None or dt.name == "BOOL":
        return None, None, None
    (va, offs_a), (vb, offs_b) = views
    (oa, ra), (ob, rb) = offs_a[name], offs_b[name]
    return _delta_of(dt, [(va.read(oa, ra.length), vb.read(ob, rb.length))], sink)


def tensor_stored_bytes(repo: Repository, tensor: Tensor) -> tuple[int, Counter]:
    total, codecs = 0, Counter()
    for c in tensor.chunks:
        total += repo.store.size(c)
        codecs[repo.odb.chunk_header(c).codec_name] += 1
    return total, codecs


def file_stored_bytes(repo: Repository, f: File) -> int:
    total = 0
    for s in f.segments:
        if isinstance(s, TensorSegment):
            total += tensor_stored_bytes(repo, repo.odb.get_object(s.tensor, Tensor))[0]
        else:
            total += sum(repo.store.size(c) for c, _ in s.chunks)
    return total


def diff(repo: Repository, a: str | None, b: str, *, tensors: bool = True,
         sink_for: SinkFor | None = None) -> list[FileChange]:
    """Per file and per tensor changes from ``a`` to ``b`` (``a`` None: empty).
    ``sink_for`` may ask for the |Δ| of chosen tensors while they stream (heatmaps)."""
    ta = repo.tree_of(a) if a else Tree({})
    tb = repo.tree_of(b)
    out = []
    for path in sorted(set(ta.entries) | set(tb.entries)):
        ea, eb = ta.entries.get(path), tb.entries.get(path)
        if ea == eb:
            continue
        ka, kb = kind_of(ea), kind_of(eb)
        # A link's text and a directory's empty file are not file contents to compare.
        fa = repo.read_file(ea.file) if ka == "file" else None
        fb = repo.read_file(eb.file) if kb == "file" else None
        status = "added" if ea is None else "removed" if eb is None else "modified"
        ch = FileChange(path, status, ea.file if ea else None, eb.file if eb else None,
                        fa.size if fa else 0, fb.size if fb else 0, kind_old=ka, kind_new=kb)
        if ka == "link":
            ch.target_old = read_link(repo, ea.file, path)
            ch.size_old = len(ch.target_old)
        if kb == "link":
            ch.target_new = read_link(repo, eb.file, path)
            ch.size_new = len(ch.target_new)
        if tensors:
            ch.tensors = tensor_changes(repo, fa, fb, path, sink_for)
        out.append(ch)
    return out


TORCH_FORMATS = ("torch", "torch-legacy")  # formats.torchnames.FORMATS


def storage_views(repo: Repository, f: File | None) -> dict[str, list]:
    """Region name -> the tensors viewing it (formats.torchpickle.View), for a stored
    torch file ({} for others). coralfs.formats is imported only then: analysis imports
    this module and must not pull in the readers."""
    if f is None or f.format not in TORCH_FORMATS:
        return {}
    from .formats import torchnames
    return torchnames.storage_views(f.format, FileView(repo.odb, f).read, f.size)


def tensor_changes(repo: Repository, fa: File | None, fb: File | None, path: str = "",
                   sink_for: SinkFor | None = None) -> list[TensorChange]:
    """The tensors that differ between two versions of a file (either may be None: added
    or removed), with their delta statistics; ``sink_for(path, name, shape)`` may give a
    DeltaSink that sees each changed tensor's values."""
    ta = fa.tensors() if fa else {}
    tb = fb.tensors() if fb else {}
    out = []
    names = storage_views(repo, fb) or storage_views(repo, fa)
    views = None
    for name in list(ta) + [n for n in tb if n not in ta]:
        sa, sb = ta.get(name), tb.get(name)
        if sa and sb and _tensor_key(sa) == _tensor_key(sb):
            continue
        t_b = repo.odb.get_object(sb.tensor, Tensor) if isinstance(sb, TensorSegment) else None
        t_a = repo.odb.get_object(sa.tensor, Tensor) if isinstance(sa, TensorSegment) else None
        dt, shape = _dtype_shape(sb or sa, t_b or t_a)
        ch = TensorChange(name, "added" if not sa else "removed" if not sb else "changed", dt, shape)
        if name in names:
            from .formats.torchnames import label
            ch.label = label(names[name])
            ch.views = [v._asdict() for v in names[name]]
        if t_b is not None:
            ch.stored = tensor_stored_bytes(repo, t_b)[0]
        sink = sink_for(path, name, shape) if sink_for is not None and sa and sb else None
        if t_a is not None and t_b is not None:
            ch.max_abs, ch.rel_l2, ch.changed_frac = delta_stats(repo, t_a, t_b, sink)
        elif sa and sb and _dtype_shape(sa, t_a) == (dt, shape):
            # A packed tensor on either side: compare its bytes read through the files.
            if views is None:
                views = [(FileView(repo.odb, f), f.tensor_offsets()) for f in (fa, fb)]
            ch.max_abs, ch.rel_l2, ch.changed_frac = _packed_delta_stats(views, name, dt, sink)
        out.append(ch)
    return out


def delta_stats(repo: Repository, a: Tensor, b: Tensor,
                sink: DeltaSink | None = None) -> tuple[float | None, float | None, float | None]:
    """(max |b - a|, ||b - a|| / ||a||, fraction of elements changed) of two tensors of one
    dtype, shape and chunking, read one chunk pair at a time; Nones when not comparable."""
    dt = dtypes.lookup(a.dtype)
    if a.dtype != b.dtype or a.shape != b.shape or dt.numpy is None or dt.name == "BOOL" \
            or a.chunk_size != b.chunk_size:
        return None, None, None
    # read_pair keeps the pass out of the shared chunk cache: memory stays at about one
    # chunk pair however large the two revisions are.
    return _delta_of(dt, (repo.odb.read_pair(ca, cb) for ca, cb in zip(a.chunks, b.chunks, strict=True)), sink)


def stats(repo: Repository) -> dict:
    """Logical bytes (every file of every reachable commit), stored bytes, objects by
    codec."""
    starts = list(repo.branches().values()) + [repo.peel(t) for t in repo.tags().values()]
    logical = 0
    for c in walk(repo, starts) if starts else []:
        for e in repo.read_tree(repo.read_commit(c).tree).entries.values():
            logical += repo.read_file(e.file).size
    stored, count = 0, 0
    by_codec: Counter = Counter()
    by_codec_bytes: Counter = Counter()
    for oid in repo.store:
        n = repo.store.size(oid)
        stored += n
        count += 1
        h = repo.odb.chunk_header(oid) if n >= HEADER_SIZE else None
        name = "object" if h and h.structured else h.codec_name if h else "?"
        by_codec[name] += 1
        by_codec_bytes[name] += n
    return {"logical_bytes": logical, "stored_bytes": stored, "objects": count,
            "ratio": (stored / logical) if logical else None,
            "objects_by_codec": dict(by_codec), "bytes_by_codec": dict(by_codec_bytes),
            "commits": sum(1 for _ in walk(repo, starts)) if starts else 0}


__all__ = ["DeltaSink", "DeltaStats", "FileChange", "SinkFor", "TensorChange", "diff", "file_stored_bytes", "kind_of",
           "stats", "storage_views", "tensor_stored_bytes"]
