"""The lineage graph: commits, their parent edges (merges included), the branches and tags
on them, and the derived-from edges commits record (another commit of this repository, or
a source model outside it), as plain data that render/graph.py draws."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..objects import history
from ..objects.ids import ObjectId, to_hex
from ..objects.repository import Repository


@dataclass
class Node:
    id: str                 # commit hex, or "ext:..." for a source outside the repository
    label: str              # first line of the message, or the source's name
    time: int = 0
    refs: list[str] = field(default_factory=list)   # branch and tag names on it
    merge: str | None = None   # the strategy, for merge commits
    external: bool = False


@dataclass
class Edge:
    src: str    # the newer commit
    dst: str    # its parent or source
    kind: str   # parent, merge (second and later parents), derived
    label: str = ""


@dataclass
class Lineage:
    nodes: list[Node]
    edges: list[Edge]

    def to_json(self) -> dict:
        return {"nodes": [vars(n) for n in self.nodes], "edges": [vars(e) for e in self.edges]}


def derived_sources(metadata: dict) -> list[tuple[str, str]]:
    """(id, relation) of each source a commit records under ``derived_from`` (a dict or a
    list of dicts with ``commit`` hex, or ``source``/``model`` text: id "ext:TEXT")."""
    d = metadata.get("derived_from")
    items = d if isinstance(d, list) else [d] if isinstance(d, dict) else []
    out = []
    for it in items:
        if not isinstance(it, dict):
            continue
        rel = str(it.get("relation") or "derived")
        if isinstance(it.get("commit"), str) and not it.get("repository"):
            out.append((it["commit"], rel))
        elif isinstance(it.get("source") or it.get("model") or it.get("repository"), str):
            text = it.get("source") or it.get("model") or f"{it['repository']}@{str(it.get('commit', ''))[:12]}"
            out.append(("ext:" + str(text), rel))
    return out


def lineage(repo: Repository, revs: list[str] | None = None) -> Lineage:
    """The graph of every commit reachable from ``revs`` (default: all branches and tags),
    in a stable order: by time, then id."""
    labels: dict[ObjectId, list[str]] = {}
    for name, oid in sorted(repo.branches().items()):
        labels.setdefault(oid, []).append(name)
    for name, oid in sorted(repo.tags().items()):
        labels.setdefault(repo.peel(oid), []).append(f"tag: {name}")
    starts = [repo.resolve(r) for r in revs] if revs else list(labels)
    commits = sorted(history.walk(repo, list(dict.fromkeys(starts))),
                     key=lambda o: (repo.read_commit(o).time, to_hex(o)))
    known = {to_hex(o) for o in commits}
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    for oid in commits:
        c = repo.read_commit(oid)
        hx = to_hex(oid)
        merge = c.metadata.get("merge")
        nodes[hx] = Node(hx, (c.message.splitlines() or [""])[0], c.time, labels.get(oid, []),
                         merge.get("strategy") if isinstance(merge, dict) else None)
        for i, p in enumerate(c.parents):
            edges.append(Edge(hx, to_hex(p), "parent" if i == 0 else "merge"))
        for src, rel in derived_sources(c.metadata):
            if src not in known and src not in nodes:
                nodes[src] = Node(src, src[4:] if src.startswith("ext:") else src[:12], 0, [], None, True)
            edges.append(Edge(hx, src, "derived", rel))
    return Lineage(list(nodes.values()), edges)
