"""Magnitude bars and block heatmaps as terminal text: Unicode shades with ANSI colour on a
terminal, plain ASCII (no escape bytes) for pipes and files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ASCII_SHADES = " .:-=+*#%@"
UNICODE_SHADES = " ░▒▓█"
# 256-colour foregrounds from cool to hot, one per non-blank shade level.
_HEAT = (27, 39, 48, 190, 208, 196)
_RESET = "\x1b[0m"


@dataclass(frozen=True)
class Style:
    unicode: bool = False
    colour: bool = False

    @property
    def delta(self) -> str:
        """The name of the difference: ASCII output stays ASCII all through."""
        return "Δ" if self.unicode else "d"

    @property
    def shades(self) -> str:
        return UNICODE_SHADES if self.unicode else ASCII_SHADES

    def paint(self, text: str, level: float) -> str:
        """``text`` coloured for a heat ``level`` in [0, 1] (unchanged without colour)."""
        if not self.colour or not text.strip():
            return text
        return f"\x1b[38;5;{_HEAT[min(len(_HEAT) - 1, int(level * len(_HEAT)))]}m{text}{_RESET}"


def _num(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def bar_lines(rows: Sequence[tuple[str, str, float | None, float | None, float | None]],
              width: int, style: Style) -> list[str]:
    """One line per (label, status, relative L2, max |Δ|, changed fraction): the bar length
    is the relative L2 change scaled to the largest one shown."""
    if not rows:
        return []
    label_w = min(max(len(r[0]) for r in rows), max(12, width // 3))
    bar_w = max(10, width - label_w - 42)
    top = max((r[2] for r in rows if r[2] is not None), default=0.0)
    full = "█" if style.unicode else "#"
    out = []
    for label, status, rel, mx, frac in rows:
        # Long names keep their end (the distinguishing part: ...layer.3.attn.q.weight).
        name = label if len(label) <= label_w else ("…" if style.unicode else "~") + label[-(label_w - 1):]
        if status != "changed":
            out.append(f"{name:<{label_w}} {'(' + status + ')':<{bar_w}}")
            continue
        n = 0 if rel is None or top <= 0 else max(1 if rel > 0 else 0, round(rel / top * bar_w))
        bar = style.paint(full * n, rel / top if rel and top else 0.0) + " " * (bar_w - n)
        frac_s = "-" if frac is None else f"{frac * 100:.1f}%"
        out.append(f"{name:<{label_w}} {bar} relL2={_num(rel):<9} max|{style.delta}|={_num(mx):<9} changed={frac_s}")
    return out


def heatmap_lines(values: np.ndarray, style: Style, title: str = "") -> list[str]:
    """A (rows x cols) grid of block values as characters, darker = larger, scaled to the
    largest block; a block is blank only if it is exactly zero. Ends with a legend."""
    shades = style.shades
    levels = len(shades) - 1
    top = float(values.max()) if values.size else 0.0
    out = [title] if title else []
    for row in np.atleast_2d(values):
        cells = []
        for v in row:
            k = 0 if v <= 0 or top <= 0 else max(1, min(levels, int(np.ceil(v / top * levels))))
            cells.append(style.paint(shades[k], k / levels))
        out.append("|" + "".join(cells) + "|")
    scale = "".join(style.paint(shades[k], k / levels) for k in range(levels + 1))
    out.append(f"legend: [{scale}] mean |{style.delta}| per block, low to high; blank = 0, last = {top:.3g}")
    return out
