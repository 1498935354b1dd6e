"""Three-way, per-tensor merge of trees.

For each path the usual three-way rules apply (a side equal to the base yields the
other side). When both sides changed a file whose layout matches (the same segments,
tensor names and byte lengths), the merge goes tensor by tensor: a tensor changed on one
side only is taken from that side; a tensor changed on both is resolved by the strategy:

- ``ours`` / ``theirs``: take that side's tensor;
- ``fail``: report a conflict and change nothing;
- ``average`` / ``weighted:A``: ``(1 - A) * ours + A * theirs`` computed in float64 and
  rounded back to the tensor's dtype (floating-point tensors only).

Combining goes through :func:`combine`, which takes any number of inputs and weights, so
model soups of more than two parents fit the same path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import codecs, dtypes
from .errors import CoralError
from .ids import hash_bytes
from .kinds import BytesSegment, File, PackSegment, Segment, Tensor, TensorSegment, Tree, TreeEntry
from .lazy import lazy_module
from .odb import ObjectDB

np = lazy_module("numpy")  # imported on first use: commands that never compute start without it


class MergeConflict(CoralError):
    exit_code = 5

    def __init__(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        more = f" (+{len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
        super().__init__(
            "merge conflict in " + "; ".join(conflicts[:3]) + more
            + "; nothing was changed: choose --strategy ours|theirs|average|weighted:A"
        )


@dataclass(frozen=True)
class Strategy:
    kind: str
    alpha: float = 0.5

    @property
    def combines(self) -> bool:
        return self.kind in ("average", "weighted")


def parse_strategy(text: str) -> Strategy:
    if text in ("ours", "theirs", "fail", "average"):
        return Strategy(text)
    if text.startswith("weighted:"):
        try:
            a = float(text.split(":", 1)[1])
        except ValueError:
            a = -1.0
        if not 0.0 <= a <= 1.0:
            raise CoralError(f"bad strategy {text!r}: weighted:A takes A between 0 and 1 (weight of theirs)")
        return Strategy("weighted", a)
    raise CoralError(f"unknown merge strategy {text!r}; use ours, theirs, fail, average or weighted:A")


@dataclass
class MergeReport:
    from_ours: list[str] = field(default_factory=list)
    from_theirs: list[str] = field(default_factory=list)
    combined: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)  # conflicts resolved by ours/theirs
    conflicts: list[str] = field(default_factory=list)


def combine(odb: ObjectDB, tensors: list[Tensor], weights: list[float], name: str) -> Tensor:
    """A new tensor: sum of weights[i] * tensors[i], chunk by chunk, in float64."""
    first = tensors[0]
    dt = dtypes.lookup(first.dtype)
    for t in tensors[1:]:
        if (t.dtype, t.shape, t.chunk_size) != (first.dtype, first.shape, first.chunk_size):
            raise MergeConflict([f"{name}: dtype/shape differ ({first.dtype}{list(first.shape)} vs "
                                 f"{t.dtype}{list(t.shape)})"])
    if not dt.is_float or dt.numpy is None:
        raise MergeConflict([f"{name}: cannot average a {dt.name} tensor"])
    out = []
    for i in range(len(first.chunks)):
        acc = None
        for t, w in zip(tensors, weights):
            a = np.frombuffer(odb.read_chunk(t.chunks[i]), dtype=dt.numpy).astype(np.float64)
            acc = a * w if acc is None else acc + a * w
        data = acc.astype(dt.numpy).tobytes()
        oid = hash_bytes(data)
        base_oid = first.chunks[i]
        base = codecs.Base(base_oid, odb.read_chunk(base_oid), odb.chain_depth(base_oid))
        odb.put_chunk(data, oid, width=dt.width, key=dt.key, base=base, level=1)
        out.append(oid)
    return Tensor(first.dtype, first.shape, first.chunk_size, out)


def _same_layout(a: File, b: File) -> bool:
    if len(a.segments) != len(b.segments):
        return False
    for x, y in zip(a.segments, b.segments):
        if type(x) is not type(y) or x.length != y.length:
            return False
        if isinstance(x, TensorSegment) and x.name != y.name:  # type: ignore[union-attr]
            return False
    return True


def _pick3(b, o, t):
    """Three-way on equal-comparable values: (value, side) or None when both changed."""
    if o == t:
        return o, "same"
    if o == b:
        return t, "theirs"
    if t == b:
        return o, "ours"
    return None


def merge_file(odb: ObjectDB, path: str, base: File | None, ours: File, theirs: File, s: Strategy,
               rep: MergeReport) -> File | None:
    """Merge two versions of one file; None if there is an unresolved conflict."""
    if not _same_layout(ours, theirs):
        if s.kind in ("ours", "theirs"):
            rep.resolved.append(f"{path} (whole file from {s.kind})")
            return ours if s.kind == "ours" else theirs
        rep.conflicts.append(f"{path}: both sides changed it and its layouts differ")
        return None
    base_tensors = base.tensors() if base is not None else {}
    base_layout = base is not None and _same_layout(base, ours)
    segs: list[Segment] = []
    ok = True
    for i, (o, t) in enumerate(zip(ours.segments, theirs.segments)):
        if isinstance(o, (BytesSegment, PackSegment)):
            # A pack of small tensors merges as a whole, like literal bytes.
            b = base.segments[i] if base_layout else None
            pick = _pick3(b, o, t)
            if pick is None:
                if s.kind == "theirs":
                    segs.append(t)
                else:
                    if s.kind == "fail":
                        rep.conflicts.append(f"{path}: literal bytes of segment {i} changed on both sides")
                        ok = False
                    else:
                        rep.resolved.append(f"{path}: literal bytes of segment {i} from ours")
                    segs.append(o)
            else:
                segs.append(pick[0])
            continue
        assert isinstance(t, TensorSegment)
        b = base_tensors.get(o.name)
        b = b if isinstance(b, TensorSegment) else None  # packed in the base: no tensor id
        label = f"{path}[{o.name}]"
        pick = _pick3(b.tensor if b else None, o.tensor, t.tensor)
        if pick is not None:
            if pick[1] == "theirs":
                rep.from_theirs.append(label)
            segs.append(TensorSegment(o.name, pick[0], o.length))
            continue
        if s.kind in ("ours", "theirs"):
            rep.resolved.append(f"{label} from {s.kind}")
            segs.append(o if s.kind == "ours" else t)
        elif s.kind == "fail":
            rep.conflicts.append(f"{label} changed on both sides")
            ok = False
        else:
            try:
                tensors = [odb.get_object(x.tensor, Tensor) for x in (o, t)]
                new = combine(odb, tensors, [1.0 - s.alpha, s.alpha], label)
            except MergeConflict as e:
                rep.conflicts.extend(e.conflicts)
                ok = False
                continue
            rep.combined.append(label)
            segs.append(TensorSegment(o.name, odb.put_object(new), o.length))
    return File(ours.format, segs) if ok else None


def merge_trees(odb: ObjectDB, base: Tree | None, ours: Tree, theirs: Tree, s: Strategy) -> tuple[Tree | None, MergeReport]:
    rep = MergeReport()
    b_e = base.entries if base is not None else {}
    out: dict[str, TreeEntry] = {}
    for path in sorted(set(ours.entries) | set(theirs.entries)):
        b, o, t = b_e.get(path), ours.entries.get(path), theirs.entries.get(path)
        pick = _pick3(b, o, t)
        if pick is not None:
            if pick[0] is not None:
                out[path] = pick[0]
            if pick[1] == "theirs":
                rep.from_theirs.append(path)
            continue
        if o is None or t is None:
            if s.kind in ("ours", "theirs"):
                keep = o if s.kind == "ours" else t
                rep.resolved.append(f"{path} ({'kept' if keep else 'deleted'}, from {s.kind})")
                if keep is not None:
                    out[path] = keep
            else:
                rep.conflicts.append(f"{path}: deleted on one side, changed on the other")
            continue
        bf = odb.get_object(b.file, File) if b is not None else None
        merged = merge_file(odb, path, bf, odb.get_object(o.file, File), odb.get_object(t.file, File), s, rep)
        if merged is not None:
            out[path] = TreeEntry(odb.put_object(merged), o.mode)
    if rep.conflicts:
        return None, rep
    return Tree(out), rep


__all__ = ["MergeConflict", "MergeReport", "Strategy", "combine", "merge_trees", "parse_strategy"]
