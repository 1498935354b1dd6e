"""Lineage graphs as Graphviz DOT and Mermaid text: byte-stable for the same history (the
input order is kept, every label escaped the same way). No repository access here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol


class NodeLike(Protocol):
    id: str
    label: str
    refs: list[str]
    merge: str | None
    external: bool


class EdgeLike(Protocol):
    src: str
    dst: str
    kind: str
    label: str


def _dot_id(x: str) -> str:
    return '"' + (x[4:] if x.startswith("ext:") else x[:12]).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_text(s: str) -> str:
    s = "".join(ch if ch.isprintable() else "?" for ch in s)
    return s.replace("\\", "\\\\").replace('"', '\\"')[:80]


def to_dot(nodes: Sequence[NodeLike], edges: Sequence[EdgeLike]) -> str:
    lines = ["digraph lineage {", "  rankdir=BT;", '  node [shape=box, fontname="monospace"];']
    for n in nodes:
        if n.external:
            lines.append(f'  {_dot_id(n.id)} [label="{_dot_text(n.label)}", shape=ellipse, style=dashed];')
            continue
        text = n.id[:12] + "\\n" + _dot_text(n.label)
        if n.refs:
            text += "\\n(" + _dot_text(", ".join(n.refs)) + ")"
        if n.merge:
            text += "\\nmerge: " + _dot_text(n.merge)
        lines.append(f'  {_dot_id(n.id)} [label="{text}"{", style=bold" if n.refs else ""}];')
    for e in edges:
        attrs = {"parent": "", "merge": " [style=dashed]",
                 "derived": f' [style=dotted, label="{_dot_text(e.label)}"]'}[e.kind]
        lines.append(f"  {_dot_id(e.src)} -> {_dot_id(e.dst)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mm_id(x: str) -> str:
    return "x" + re.sub(r"[^0-9A-Za-z]", "_", x[4:]) if x.startswith("ext:") else "c" + x[:12]


def _mm_text(s: str) -> str:
    return "".join(ch if ch.isprintable() and ch not in '"[]{}()<>|#`' else " " for ch in s)[:60]


def to_mermaid(nodes: Sequence[NodeLike], edges: Sequence[EdgeLike]) -> str:
    lines = ["graph BT"]
    for n in nodes:
        if n.external:
            lines.append(f'  {_mm_id(n.id)}(["{_mm_text(n.label)}"])')
            continue
        text = f"{n.id[:12]} {_mm_text(n.label)}"
        if n.refs:
            text += " - " + _mm_text(", ".join(n.refs))
        lines.append(f'  {_mm_id(n.id)}["{text}"]')
    for e in edges:
        arrow = {"parent": "-->", "merge": "-.->", "derived": f"-. {_mm_text(e.label) or 'derived'} .->"}[e.kind]
        lines.append(f"  {_mm_id(e.src)} {arrow} {_mm_id(e.dst)}")
    return "\n".join(lines) + "\n"
