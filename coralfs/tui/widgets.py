"""The browser's widgets: a table that asks for its next page near its end, and the text of
the detail pane (a commit, a tensor's statistics and histogram)."""

from __future__ import annotations

import time

import numpy as np
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from ..analysis.values import ValueStats
from .data import CommitRow, FileRow, TensorRow

BARS = " ▁▂▃▄▅▆▇█"
NEAR_END = 20   # rows from the end at which the next page loads


class PagedTable(DataTable):
    """A DataTable (it draws only the rows in view) that posts :class:`NeedMore` when the
    cursor or the scroll position comes within NEAR_END rows of its end while ``more``."""

    # A list of rows: home and end go to its first and last row (as ctrl+home/end do).
    BINDINGS = [Binding("home", "scroll_top", "Top", show=False), Binding("end", "scroll_bottom", "Bottom", show=False)]

    class NeedMore(Message):
        def __init__(self, table: PagedTable) -> None:
            self.table = table
            super().__init__()

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(*args, **kwargs)
        self.more = False
        self._asked = False

    def loaded(self, more: bool) -> None:
        """A page was added; ``more``: another one exists."""
        self.more = more
        self._asked = False

    def _check_end(self) -> None:
        if not self.more or self._asked:
            return
        visible_end = int(self.scroll_y) + self.scrollable_content_region.height
        if max(self.cursor_row, visible_end) >= self.row_count - NEAR_END:
            self._asked = True
            self.post_message(self.NeedMore(self))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._check_end()

    def watch_cursor_coordinate(self, old, new) -> None:
        super().watch_cursor_coordinate(old, new)
        self._check_end()


def clean(text: object) -> str:
    """A name from a repository (path, tensor, ref, author, message line, error) safe to
    draw: a character Python deems non-printable (ESC, newline, bidi overrides, ...) becomes
    its escape, so nothing stored in a checkpoint reaches the terminal as a control code."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in text)


def size(n: int | None) -> str:
    """Bytes in binary units, for table cells."""
    if n is None:
        return "-"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024:
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"


def when(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def commit_text(row: CommitRow, files: list[FileRow] | None) -> Text:
    """A commit's fields (``files`` None: still being read)."""
    c = row.commit
    out = Text()
    out.append(f"commit {row.oid.hex()}\n", style="bold")
    for p in c.parents:
        out.append(f"parent {p.hex()[:12]}\n")
    if row.decorations:
        out.append(f"refs   {clean(', '.join(row.decorations))}\n", style="yellow")
    out.append(f"author {clean(c.author)}\ndate   {when(c.time)}\n")
    metrics = c.metadata.get("metrics") if isinstance(c.metadata.get("metrics"), dict) else None
    if metrics:
        out.append("metrics " + clean(", ".join(f"{k}={v}" for k, v in metrics.items())) + "\n", style="green")
    other = {k: v for k, v in c.metadata.items() if k != "metrics"}
    if other:
        out.append(f"meta   {clean(', '.join(sorted(other)))}\n")
    out.append("\n")
    for line in (c.message or "").splitlines() or [""]:
        out.append(f"    {clean(line)}\n")
    if files is None:
        out.append("\nreading its files...\n", style="italic")
    else:
        out.append(f"\n{len(files)} files, {sum(f.tensors for f in files)} tensors, {size(sum(f.size for f in files))}\n")
    return out


def tensor_text(row: TensorRow, stats: ValueStats | None, width: int) -> Text:
    out = Text()
    out.append(f"{clean(row.name)}\n", style="bold")
    out.append(f"{clean(row.dtype)} {list(row.shape)}  {size(row.nbytes)}, stored {size(row.stored)} ({row.codec})\n\n")
    if stats is None:
        out.append("computing statistics...\n", style="italic")
        return out
    if not stats.numeric:
        out.append(f"no statistics for dtype {clean(stats.dtype)}\n")
        return out
    out.append(f"elements {stats.count:,}   finite {stats.finite:,}   NaN {stats.nan:,}   Inf {stats.inf:,}\n")
    if stats.mean is None:
        out.append("no finite values\n")
        return out
    out.append(f"min  {stats.min:<12.6g} max {stats.max:.6g}\n")
    out.append(f"mean {stats.mean:<12.6g} std {stats.std:.6g}\n\n")
    out.append_text(histogram_text(stats, width))
    return out


def histogram_text(stats: ValueStats, width: int, height: int = 8) -> Text:
    """The finite values' histogram as columns of block characters (eighths of a cell),
    one column per bin scaled to the fullest bin, with the range under it."""
    assert stats.counts is not None and stats.edges is not None
    counts = stats.counts
    bins = counts.size
    cell = max(1, min(3, (width - 2) // max(1, bins)))
    top = int(counts.max()) or 1
    eighths = np.ceil(counts / top * height * 8).astype(int)
    out = Text()
    out.append("distribution of values\n", style="bold")
    for level in range(height - 1, -1, -1):
        line = "".join(BARS[int(min(8, max(0, e - level * 8)))] * cell for e in eighths)
        out.append("│" + line + "\n", style="cyan")
    axis = bins * cell
    lo, hi = f"{stats.edges[0]:.3g}", f"{stats.edges[-1]:.3g}"
    out.append("└" + "─" * axis + "\n")
    out.append(" " + lo + " " * max(1, axis - len(lo) - len(hi)) + hi + "\n")
    out.append(f" fullest bin: {top:,} values\n", style="dim")
    return out


__all__ = ["PagedTable", "clean", "commit_text", "histogram_text", "size", "tensor_text", "when"]
