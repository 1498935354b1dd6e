"""Walking history: resolving revision specs, log order, merge bases."""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import CoralError
from .ids import ObjectId

if TYPE_CHECKING:
    from .repository import Repository

_OPS = re.compile(r"(~\d*|\^\d*)")


class BadRevision(CoralError):
    exit_code = 2

    def __init__(self, spec: str, why: str) -> None:
        self.spec = spec
        super().__init__(f"bad revision {spec!r}: {why}")


def split_spec(spec: str) -> tuple[str, list[tuple[str, int]]]:
    """``main~2^2`` -> ("main", [("~", 2), ("^", 2)])."""
    m = re.search(r"[~^]", spec)
    if not m:
        return spec, []
    name, rest = spec[: m.start()], spec[m.start():]
    ops = []
    pos = 0
    for tok in _OPS.finditer(rest):
        if tok.start() != pos:
            raise BadRevision(spec, f"cannot parse {rest[pos:]!r}")
        t = tok.group()
        ops.append((t[0], int(t[1:]) if len(t) > 1 else 1))
        pos = tok.end()
    if pos != len(rest):
        raise BadRevision(spec, f"cannot parse {rest[pos:]!r}")
    return name, ops


def walk(repo: Repository, starts: list[ObjectId], first_parent: bool = False) -> Iterator[ObjectId]:
    """Commits reachable from ``starts``, newest first (by time, then id), each once."""
    seen: set[ObjectId] = set()
    heap: list[tuple[int, bytes]] = []
    for s in starts:
        if s not in seen:
            seen.add(s)
            heapq.heappush(heap, (-repo.read_commit(s).time, s))
    while heap:
        _, oid = heapq.heappop(heap)
        c = repo.read_commit(oid)
        yield ObjectId(oid)
        parents = c.parents[:1] if first_parent else c.parents
        if oid in getattr(repo, "shallow", ()):  # a shallow clone's boundary: its parents were not fetched
            parents = []
        for p in parents:
            if p not in seen:
                seen.add(p)
                heapq.heappush(heap, (-repo.read_commit(p).time, p))


def ancestors(repo: Repository, oid: ObjectId) -> set[ObjectId]:
    return set(walk(repo, [oid]))


def is_ancestor(repo: Repository, a: ObjectId, b: ObjectId) -> bool:
    """Is ``a`` reachable from ``b`` (a commit is its own ancestor)?"""
    return a in ancestors(repo, b)


def merge_bases(repo: Repository, a: ObjectId, b: ObjectId) -> list[ObjectId]:
    """Best common ancestors: common ancestors that are not ancestors of another one."""
    common = ancestors(repo, a) & ancestors(repo, b)
    best = []
    for c in common:
        if not any(c != o and c in ancestors(repo, o) for o in common):
            best.append(c)
    return sorted(best, key=lambda o: (-repo.read_commit(o).time, o))


def topo_order(repo: Repository, starts: list[ObjectId]) -> list[ObjectId]:
    """Commits reachable from ``starts``, every commit before its parents (children first),
    independent of timestamps (commits made within one second keep their order); among
    unrelated commits the newer by time comes first."""
    order = {oid: i for i, oid in enumerate(walk(repo, starts))}   # time order, the tie-break
    children: dict[ObjectId, int] = dict.fromkeys(order, 0)
    for oid in order:
        for p in repo.read_commit(oid).parents:
            if p in children:
                children[p] += 1
    ready = [(order[o], o) for o, n in children.items() if n == 0]
    heapq.heapify(ready)
    out: list[ObjectId] = []
    while ready:
        _, oid = heapq.heappop(ready)
        out.append(oid)
        for p in repo.read_commit(oid).parents:
            if p in children:
                children[p] -= 1
                if children[p] == 0:
                    heapq.heappush(ready, (order[p], p))
    return out
