"""How a new model relates to one already in the repository, from its tensors: recorded
as ``derived_from`` when a commit brings a file with no same-path predecessor (an import,
a new branch, a new path) whose tensors match a file the repository already holds.

- copy: the same tensors, the same values;
- fine-tune: the same names, shapes and dtypes, values changed;
- quantized: the same names and shapes, a narrower dtype;
- pruned / extended: tensors removed / many added;
- adapter: a few tensors added (or named lora/adapter);
- merge: the values lie on the line between two existing models (a weighted average),
  checked on a few small tensors.
Only names, shapes, dtypes and ids are compared, except for the merge check.
"""

from __future__ import annotations

import numpy as np

from ..objects import dtypes
from ..objects.ids import ObjectId, to_hex
from ..objects.kinds import File, Tensor, TensorSegment, Tree
from ..objects.reader import FileView
from ..objects.repository import Repository
from .bump import tensor_signatures

MIN_SHARE = 0.5          # share of the new file's (name, shape) pairs a candidate must hold
MERGE_RESIDUAL = 1e-3    # relative distance from the line between the two parents


def classify(new: dict, old: dict) -> str:
    """The relation of a file's tensor signatures (``tensor_signatures``) to an older one's."""
    nn, on = set(new), set(old)
    if nn == on:
        if all(new[k][1] == old[k][1] for k in nn):
            if all(new[k][0] == old[k][0] for k in nn):
                return "copy" if all(new[k][2] == old[k][2] for k in nn) else "fine-tune"
            narrower = [k for k in nn if dtypes.lookup(new[k][0]).width < dtypes.lookup(old[k][0]).width]
            if narrower:
                return "quantized"
        return "derived"
    if nn < on:
        return "pruned"
    if on < nn:
        added = nn - on
        if len(added) <= max(2, len(on) // 10) or any("lora" in n.lower() or "adapter" in n.lower() for n in added):
            return "adapter"
        return "extended"
    return "derived"


def _values(repo: Repository, f: File, name: str) -> np.ndarray | None:
    ref = f.tensors()[name]
    dt = dtypes.lookup(ref.dtype if not isinstance(ref, TensorSegment) else repo.odb.get_object(ref.tensor, Tensor).dtype)
    if dt.numpy is None or dt.name == "BOOL":
        return None
    if isinstance(ref, TensorSegment):
        data = b"".join(repo.odb.read_chunk(c) for c in repo.odb.get_object(ref.tensor, Tensor).chunks)
    else:
        off, r = f.tensor_offsets()[name]
        data = FileView(repo.odb, f).read(off, r.length)
    return np.frombuffer(data, dt.numpy).astype(np.float64)


def merge_weight(repo: Repository, new: File, a: File, b: File, names: list[str]) -> float | None:
    """alpha if ``new`` = a + alpha (b - a) on the given tensors (0 < alpha < 1), else None."""
    alphas = []
    for name in names:
        x, y, z = _values(repo, a, name), _values(repo, b, name), _values(repo, new, name)
        if x is None or y is None or z is None or x.shape != y.shape or x.shape != z.shape:
            return None
        d = y - x
        dd = float(d @ d)
        if dd == 0.0:
            continue
        alpha = float((z - x) @ d) / dd
        resid = np.linalg.norm(z - x - alpha * d) / max(np.linalg.norm(z), 1e-30)
        if resid > MERGE_RESIDUAL or not 0.0 < alpha < 1.0:
            return None
        alphas.append(alpha)
    return float(np.mean(alphas)) if alphas else None


def _same(sig: dict, other: dict) -> int:
    """How many tensors two files share exactly (same name and values)."""
    return sum(1 for n, v in sig.items() if n in other and other[n][2] == v[2])


def _distance(repo: Repository, a: File, b: File, name: str) -> float:
    x, y = _values(repo, a, name), _values(repo, b, name)
    if x is None or y is None or x.shape != y.shape:
        return float("inf")
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))


def _candidates(repo: Repository) -> list[tuple[ObjectId, str, File, dict]]:
    """(commit, path, file, signatures) of every tensor file at a branch or tag head."""
    out, seen = [], set()
    heads = [oid for _, oid in sorted(repo.branches().items())]
    heads += [repo.peel(oid) for _, oid in sorted(repo.tags().items())]
    for head in dict.fromkeys(heads):
        for path, e in repo.tree_of(head).entries.items():
            if e.is_symlink or e.is_dir or e.file in seen:
                continue
            seen.add(e.file)
            f = repo.read_file(e.file)
            sig = tensor_signatures(repo, f)
            if sig:
                out.append((head, path, f, sig))
    return out


def infer(repo: Repository, tree: Tree, parent: Tree | None) -> list[dict]:
    """``derived_from`` records for the tensor files of ``tree`` that ``parent`` does not
    have at their path, matched against the files at the repository's branch and tag heads."""
    had = parent.entries if parent else {}
    cands = None
    out: list[dict] = []
    for path, e in tree.entries.items():
        if e.is_symlink or e.is_dir or path in had:
            continue
        f = repo.read_file(e.file)
        sig = tensor_signatures(repo, f)
        if not sig:
            continue
        cands = _candidates(repo) if cands is None else cands
        pairs = {(n, s[1]) for n, s in sig.items()}
        scored = []
        for commit, cpath, cf, csig in cands:
            share = len(pairs & {(n, s[1]) for n, s in csig.items()}) / len(pairs)
            if share >= MIN_SHARE:
                scored.append((share, to_hex(commit), cpath, cf, csig, commit))
        if not scored:
            continue
        scored.sort(key=lambda t: (-t[0], -_same(sig, t[4]), t[1], t[2]))
        top = [t for t in scored if t[0] == scored[0][0] and _same(sig, t[4]) == _same(sig, scored[0][4])]
        if len(top) > 1:
            # Equally good by names and ids (a quantized copy shares no id): the nearest by
            # value on the smallest shared tensor.
            probe = min((n for n in sig if all(n in t[4] for t in top)), key=lambda n: int(np.prod(sig[n][1] or (1,))),
                        default=None)
            if probe is not None:
                top.sort(key=lambda t: (_distance(repo, f, t[3], probe), t[1], t[2]))
            scored = top + [t for t in scored if t not in top]
        share, chex, cpath, cf, csig, _ = scored[0]
        rel = classify(sig, csig)
        if rel == "fine-tune":
            for _share2, chex2, cpath2, cf2, csig2, _ in scored[1:]:
                if chex2 == chex or classify(sig, csig2) != "fine-tune":
                    continue
                differ = sorted((n for n in sig if csig[n][2] != csig2[n][2]),
                                key=lambda n: int(np.prod(sig[n][1] or (1,))))[:3]
                alpha = merge_weight(repo, f, cf, cf2, differ) if differ else None
                if alpha is not None:
                    # new = (1 - alpha) * first + alpha * second
                    out.append({"file": path, "relation": "merge", "weight": round(1 - alpha, 4),
                                "commit": chex, "path": cpath})
                    out.append({"file": path, "relation": "merge", "weight": round(alpha, 4),
                                "commit": chex2, "path": cpath2})
                    break
            else:
                out.append({"file": path, "relation": rel, "commit": chex, "path": cpath, "share": round(share, 3)})
            continue
        out.append({"file": path, "relation": rel, "commit": chex, "path": cpath, "share": round(share, 3)})
    return out
