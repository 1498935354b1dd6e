"""The release bump the weights themselves ask for, from tensor metadata alone (names,
dtypes, shapes and ids; nothing is decoded):

- a tensor or a file with tensors removed, or a tensor's dtype or shape changed: major
  (code that loads the previous release's names and shapes breaks);
- tensors or files added, nothing removed: minor (old loaders keep working);
- values only (or files without tensors) changed: patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..objects.kinds import File, PackedTensor, Tensor, TensorSegment
from ..objects.reader import FileView
from ..objects.repository import Repository

PARTS = ("patch", "minor", "major")


@dataclass
class Suggestion:
    part: str | None                       # None: nothing changed
    reasons: list[str] = field(default_factory=list)  # one line each, most severe first

    def to_json(self) -> dict:
        return {"part": self.part, "reasons": self.reasons}


def tensor_signatures(repo: Repository, f: File) -> dict[str, tuple[str, tuple[int, ...], object]]:
    """name -> (dtype, shape, identity) for every tensor of a file (identity: equal
    exactly when the values are equal)."""
    out = {}
    for name, ref in f.tensors().items():
        if isinstance(ref, PackedTensor):
            out[name] = (ref.dtype, tuple(ref.shape), ("p", ref.digest))
        else:
            assert isinstance(ref, TensorSegment)
            t = repo.odb.get_object(ref.tensor, Tensor)
            out[name] = (t.dtype, tuple(t.shape), ("t", ref.tensor))
    return out


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def suggest_bump(repo: Repository, base: str | None, ref: str = "HEAD", limit: int = 5) -> Suggestion:
    """The bump from ``base`` (None: an empty repository) to ``ref``, with the reasons
    (at most ``limit`` examples per kind of change, then a count)."""
    ta = repo.tree_of(base).entries if base else {}
    tb = repo.tree_of(ref).entries
    found: dict[str, list[str]] = {p: [] for p in PARTS}
    for path in sorted(set(ta) | set(tb)):
        ea, eb = ta.get(path), tb.get(path)
        if ea == eb:
            continue
        fa = repo.read_file(ea.file) if ea and not (ea.is_symlink or ea.is_dir) else None
        fb = repo.read_file(eb.file) if eb and not (eb.is_symlink or eb.is_dir) else None
        sa = tensor_signatures(repo, fa) if fa else {}
        sb = tensor_signatures(repo, fb) if fb else {}
        if eb is None:
            found["major" if sa else "patch"].append(f"{path} removed" + (f" ({len(sa)} tensors)" if sa else ""))
            continue
        if ea is None:
            found["minor" if sb else "patch"].append(f"{path} added" + (f" ({len(sb)} tensors)" if sb else ""))
            continue
        if not sa and not sb:
            found["patch"].append(f"{path} changed")
            continue
        values = 0
        views = None
        for name in list(sa) + [n for n in sb if n not in sa]:
            a, b = sa.get(name), sb.get(name)
            if b is None:
                found["major"].append(f"{path}: tensor {name} removed")
            elif a is None:
                found["minor"].append(f"{path}: tensor {name} added ({b[0]} {_shape(b[1])})")
            elif a[:2] != b[:2]:
                found["major"].append(f"{path}: tensor {name} {a[0]} {_shape(a[1])} -> {b[0]} {_shape(b[1])}")
            elif a[2] != b[2]:
                if a[2][0] != b[2][0]:
                    # A small tensor that moved into or out of a pack has another kind of
                    # identity: compare its bytes (packed tensors are small).
                    views = views or [(FileView(repo.odb, f), f.tensor_offsets()) for f in (fa, fb)]
                    (va, oa), (vb, ob) = views
                    if va.read(oa[name][0], oa[name][1].length) == vb.read(ob[name][0], ob[name][1].length):
                        continue
                values += 1
        if values:
            found["patch"].append(f"{path}: values of {values} of {len(sb)} tensors changed")
    for part in reversed(PARTS):
        if found[part]:
            reasons = found[part][:limit]
            if len(found[part]) > limit:
                reasons.append(f"... and {len(found[part]) - limit} more {part}-level changes")
            return Suggestion(part, reasons)
    return Suggestion(None, [])
