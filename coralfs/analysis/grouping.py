"""Layer groups: tensors gathered by a name prefix (``encoder.layer.3.*``), so a diff of a
model with thousands of tensors shows one collapsed line per layer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .visual import TensorDelta

AUTO_GROUP = 60   # changed tensors above which the terminal view groups by default


@dataclass
class Group:
    prefix: str                       # e.g. encoder.layer.3 (the path too when several files changed)
    tensors: list[TensorDelta] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    @property
    def max_rel_l2(self) -> float | None:
        vals = [t.rel_l2 for t in self.tensors if t.rel_l2 is not None]
        return max(vals) if vals else None

    @property
    def max_abs(self) -> float | None:
        vals = [t.max_abs for t in self.tensors if t.max_abs is not None]
        return max(vals) if vals else None

    @property
    def changed_frac(self) -> float | None:
        """The share of changed elements over the group's compared tensors (by size)."""
        num = den = 0.0
        for t in self.tensors:
            if t.changed_frac is not None:
                n = 1
                for d in t.shape:
                    n *= d
                num += t.changed_frac * n
                den += n
        return num / den if den else None

    def to_json(self) -> dict:
        return {"prefix": self.prefix, "counts": self.counts, "max_rel_l2": self.max_rel_l2,
                "max_abs": self.max_abs, "changed_frac": self.changed_frac,
                "tensors": [t.name for t in self.tensors]}


def prefix_of(name: str, depth: int) -> str:
    """The first ``depth`` dotted parts of a name, numbered parts kept with the part before
    them (``encoder.layer.3``), so depth 2 of ``encoder.layer.3.attention.q.weight`` is
    ``encoder.layer.3``."""
    parts = name.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts) and len([p for p in out if not p.isdigit()]) < depth:
        out.append(parts[i])
        i += 1
    while i < len(parts) and parts[i].isdigit():
        out.append(parts[i])
        i += 1
    if i >= len(parts):   # the whole name: its layer is everything but the last part
        return ".".join(parts[:-1]) or name
    return ".".join(out)


def group(tensors: Sequence[TensorDelta], depth: int = 2) -> list[Group]:
    """Groups in the order their first tensor appears (model order is kept)."""
    several = len({t.path for t in tensors}) > 1
    groups: dict[str, Group] = {}
    for t in tensors:
        key = prefix_of(t.name, depth)
        if several:
            key = f"{t.path}:{key}"
        groups.setdefault(key, Group(key)).tensors.append(t)
    return list(groups.values())
