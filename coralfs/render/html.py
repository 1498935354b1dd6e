"""The visual diff as one self-contained HTML file: a sortable per-tensor table, collapsed
layer groups, a heatmap (inline PNG) and a histogram of |Δ| (inline SVG) per changed
tensor. Nothing is loaded from anywhere: no scripts, fonts or images outside the file."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .png import data_uri, heatmap_png


@dataclass
class Row:
    """One tensor as the report shows it (plain numbers; no repository types here)."""

    path: str
    name: str
    status: str
    shape: tuple[int, ...]
    rel_l2: float | None
    max_abs: float | None
    changed_frac: float | None
    heatmap: np.ndarray | None = None
    histogram: Sequence[int] | None = None
    group: str = ""


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3;cursor:pointer;user-select:none}td.n{text-align:right;font-family:monospace}
.bar{display:inline-block;height:10px;background:#e6550d}
img.hm{image-rendering:pixelated;width:640px;max-width:100%;border:1px solid #ccc}
section{margin:2em 0;border-top:1px solid #ddd}summary{cursor:pointer}
"""

# Sorting by a column header click (numbers by value, text by text): inline, no library.
_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click', function(){
    var i = th.cellIndex, t = th.closest('table'), b = t.tBodies[0], rows = Array.prototype.slice.call(b.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort(function(x, y){
      var a = x.cells[i].dataset.v || x.cells[i].textContent, c = y.cells[i].dataset.v || y.cells[i].textContent;
      var fa = parseFloat(a), fc = parseFloat(c);
      if (!isNaN(fa) && !isNaN(fc)) return (fa - fc) * dir;
      return a.localeCompare(c) * dir;
    });
    rows.forEach(function(r){ b.appendChild(r); });
  });
});
"""


def _num(v: float | None, fmt: str = "{:.4g}") -> str:
    return "-" if v is None else fmt.format(v)


def _sv(v: float | None) -> str:
    return "-1" if v is None else repr(float(v))


def histogram_svg(counts: Sequence[int], edges: Sequence[int], width: int = 480, height: int = 120) -> str:
    """Bars of counts per decade of |Δ| (log scale of the count), labelled 1e-12 .. 1e3."""
    n = len(counts)
    top = max((math.log10(c + 1) for c in counts), default=0.0) or 1.0
    bw = width / max(n, 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 18}" role="img">']
    for i, c in enumerate(counts):
        h = (math.log10(c + 1) / top) * height
        parts.append(f'<rect x="{i * bw:.1f}" y="{height - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" fill="#3182bd">'
                     f'<title>|d| in [1e{edges[i]}, 1e{edges[i + 1]}): {c}</title></rect>')
        if i % 3 == 0:
            parts.append(f'<text x="{i * bw:.1f}" y="{height + 14}" font-size="10">1e{edges[i]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def report(title: str, rows: Sequence[Row], other_files: Sequence[tuple[str, str]], hist_edges: Sequence[int],
           groups: Sequence[tuple[str, dict, float | None, int]] = ()) -> str:
    """The whole HTML document. ``groups``: (prefix, status counts, max rel L2, tensors)."""
    e = html.escape
    top = max((r.rel_l2 for r in rows if r.rel_l2 is not None), default=0.0) or 1.0
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           # No network: the page may load nothing but what it holds.
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
           'style-src \'unsafe-inline\'; script-src \'unsafe-inline\'">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    out.append("<p>" + ", ".join(f"{n} {e(s)}" for s, n in sorted(counts.items())) + " tensors"
               + (f"; {len(other_files)} other files" if other_files else "") + "</p>")
    if groups:
        out.append("<h2>Layers</h2><table class=\"sortable\"><thead><tr><th>layer</th><th>tensors</th>"
                   "<th>changed</th><th>added</th><th>removed</th><th>max rel. L2</th></tr></thead><tbody>")
        for prefix, cnt, rel, n in groups:
            out.append(f"<tr><td>{e(prefix)}</td><td class=n>{n}</td><td class=n>{cnt.get('changed', 0)}</td>"
                       f"<td class=n>{cnt.get('added', 0)}</td><td class=n>{cnt.get('removed', 0)}</td>"
                       f"<td class=n data-v=\"{_sv(rel)}\">{_num(rel)}</td></tr>")
        out.append("</tbody></table>")
    out.append("<h2>Tensors</h2><table class=\"sortable\" id=\"tensors\"><thead><tr><th>#</th><th>tensor</th>"
               "<th>status</th><th>shape</th><th>rel. L2</th><th></th><th>max |&Delta;|</th><th>changed</th>"
               "</tr></thead><tbody>")
    for i, r in enumerate(rows):
        label = f"{r.path}:{r.name}" if len({x.path for x in rows}) > 1 else r.name
        bar = "" if r.rel_l2 is None else f'<span class="bar" style="width:{max(1, round(120 * r.rel_l2 / top))}px"></span>'
        link = f'<a href="#t{i}">{e(label)}</a>' if r.heatmap is not None or r.histogram is not None else e(label)
        out.append(f"<tr><td class=n data-v=\"{i}\">{i}</td><td>{link}</td><td>{e(r.status)}</td>"
                   f"<td>{e(str(list(r.shape)))}</td><td class=n data-v=\"{_sv(r.rel_l2)}\">{_num(r.rel_l2)}</td>"
                   f"<td>{bar}</td><td class=n data-v=\"{_sv(r.max_abs)}\">{_num(r.max_abs)}</td>"
                   f"<td class=n data-v=\"{_sv(r.changed_frac)}\">{_num(r.changed_frac, '{:.1%}')}</td></tr>")
    out.append("</tbody></table>")
    for p, s in other_files:
        out.append(f"<p>{e(s)} {e(p)} (no tensors)</p>")
    for i, r in enumerate(rows):
        if r.heatmap is None and r.histogram is None:
            continue
        label = f"{r.path}:{r.name}"
        out.append(f'<section id="t{i}"><h3>{e(label)} {e(str(list(r.shape)))}</h3>')
        if r.heatmap is not None:
            hm = np.asarray(r.heatmap)
            out.append(f"<p>mean |&Delta;| in {hm.shape[0]} &times; {hm.shape[1]} blocks (white: unchanged; "
                       f"darkest red: {_num(float(hm.max()) if hm.size else None)})</p>")
            out.append(f'<img class="hm" alt="heatmap of |d| for {e(label)}" src="{data_uri(heatmap_png(hm))}">')
        if r.histogram is not None:
            out.append("<p>changed elements per decade of |&Delta;| (log scale)</p>")
            out.append(histogram_svg(list(r.histogram), list(hist_edges)))
        out.append("</section>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"
