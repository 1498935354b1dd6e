"""The browser's other screens: compare two commits (the per-layer bars of `coralfs diff
--visual` and a heatmap of the highlighted tensor), search hits, and the keys."""

from __future__ import annotations

import logging
import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..analysis.grouping import AUTO_GROUP
from ..analysis.visual import TensorDelta
from ..objects.errors import CoralError
from ..render import Style, bar_lines, heatmap_lines
from .data import Browser, Comparison, Hit
from .widgets import clean, when

log = logging.getLogger(__name__)
STYLE = Style(unicode=True, colour=True)   # textual reads the ANSI colours (Text.from_ansi)


def _ansi(lines: list[str]) -> Text:
    return Text.from_ansi("\n".join(lines))


class CompareScreen(Screen):
    """Two commits side by side and what changed between them, computed once by
    Browser.compare (coralfs.analysis) and drawn by coralfs.render.text."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("g", "toggle_group", "Layers/tensors")]

    def __init__(self, browser: Browser, a: bytes | None, b: bytes) -> None:
        super().__init__()
        self.browser, self.a, self.b = browser, a, b
        self.cmp: Comparison | None = None
        self.grouped: bool | None = None   # None until the numbers arrive (then: many tensors -> layers)
        self.rows: list[tuple[str, list[TensorDelta]]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="sides"):
            yield Static(self._side(self.a, "from"), id="side-a", classes="side")
            yield Static(self._side(self.b, "to"), id="side-b", classes="side")
        yield Label("comparing...", id="compare-status", classes="title")
        yield OptionList(id="bars")
        with VerticalScroll(id="heatmap-box"):
            yield Static("", id="heatmap")
        yield Footer()

    def _side(self, oid: bytes | None, what: str) -> Text:
        if oid is None:
            return Text(f"{what}: nothing (a root commit)")
        c = self.browser.repo.read_commit(oid)
        out = Text()
        out.append(f"{what}: {oid.hex()[:12]}\n", style="bold")
        out.append(f"{when(c.time)}  {clean(c.author)}\n{clean((c.message.splitlines() or [''])[0])}")
        return out

    def on_mount(self) -> None:
        self.compute()

    @work(thread=True, exclusive=True, group="compare")
    def compute(self) -> None:
        n = [0]

        def progress(path: str, name: str) -> None:
            n[0] += 1
            if n[0] % 50 == 0:
                self.app.call_from_thread(self._status, f"comparing tensor {n[0]}: {clean(name)}")
        try:
            cmp = self.browser.compare(self.a, self.b, progress)
        except (CoralError, OSError) as e:
            self.app.call_from_thread(self._status, f"cannot compare: {clean(e)}")
            return
        self.app.call_from_thread(self.show, cmp)

    def _status(self, text: str) -> None:
        if self.is_attached:   # the user may have left before the numbers came
            self.query_one("#compare-status", Label).update(Text(text))

    def show(self, cmp: Comparison) -> None:
        if not self.is_attached:
            return
        self.cmp = cmp
        if self.grouped is None:
            self.grouped = len(cmp.diff.tensors) > AUTO_GROUP
        self._fill()

    def _fill(self) -> None:
        cmp = self.cmp
        assert cmp is not None
        bars = self.query_one("#bars", OptionList)
        bars.clear_options()
        tensors = cmp.diff.tensors
        other = ", ".join(f"{s} {clean(p)}" for p, s in cmp.diff.other_files)
        if not tensors:
            self._status("no tensor changed" + (f" ({other})" if other else ""))
            self.query_one("#heatmap", Static).update("")
            return
        several = len({t.path for t in tensors}) > 1
        if self.grouped:
            self.rows = [(g.prefix, g.tensors) for g in cmp.groups]
            lines = bar_lines([(clean(f"{g.prefix}.* ({len(g.tensors)})"), _group_status(g.counts), g.max_rel_l2, g.max_abs,
                                g.changed_frac) for g in cmp.groups], self._bar_width(bars), STYLE)
            what = f"{len(tensors)} tensors changed in {len(cmp.groups)} layers (g: each tensor)"
        else:
            self.rows = [(t.name, [t]) for t in tensors]
            lines = bar_lines([(clean(f"{t.path}:{t.name}" if several else t.name), t.status, t.rel_l2, t.max_abs,
                                t.changed_frac) for t in tensors], self._bar_width(bars), STYLE)
            what = f"{len(tensors)} tensors changed (g: by layer)"
        self._status(what + (f"; other files: {other}" if other else ""))
        bars.add_options([Option(Text.from_ansi(line)) for line in lines])
        bars.highlighted = 0
        self._heatmap(0)

    @staticmethod
    def _bar_width(bars: OptionList) -> int:
        # bar_lines leaves about 42 columns for the numbers; they run a few longer.
        return max(60, bars.size.width - 12)

    def action_toggle_group(self) -> None:
        if self.cmp is not None:
            self.grouped = not self.grouped
            self._fill()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "bars" and event.option_index is not None:
            self._heatmap(event.option_index)

    def _heatmap(self, i: int) -> None:
        box = self.query_one("#heatmap", Static)
        if not 0 <= i < len(self.rows):
            return
        label, tensors = self.rows[i]
        drawn = [t for t in tensors if t.heatmap is not None]
        if not drawn:
            box.update(Text(f"{clean(label)}: no heatmap (added, removed, or shape or dtype changed)"))
            return
        t = max(drawn, key=lambda t: t.rel_l2 or 0.0)
        title = f"{clean(t.name)} {list(t.shape)}: |Δ| in {t.heatmap.shape[0]} x {t.heatmap.shape[1]} blocks"
        if len(tensors) > 1:
            title += f" (the layer's largest change of {len(tensors)})"
        box.update(_ansi(heatmap_lines(t.heatmap, STYLE, title)))


def _group_status(counts: dict[str, int]) -> str:
    if counts.get("changed"):
        return "changed"
    return "added" if counts.get("added") else "removed"


class SearchScreen(ModalScreen[Hit | None]):
    """Hits of a search through history, found in a worker thread as the list fills."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, browser: Browser, query: str, start: bytes) -> None:
        super().__init__()
        self.browser, self.query_text, self.start = browser, query, start
        self.hits: list[Hit] = []
        self.stop = threading.Event()

    def compose(self) -> ComposeResult:
        with Vertical(id="search-box"):
            yield Label(Text(f"search: {clean(self.query_text)}"), classes="title")
            yield OptionList(id="hits")
            yield Label("searching...", id="search-status")

    def on_mount(self) -> None:
        self.run_search()

    @work(thread=True, exclusive=True, group="search")
    def run_search(self) -> None:
        batch: list[Hit] = []
        try:
            for h in self.browser.search(self.query_text, self.start, self.stop):
                batch.append(h)
                if len(batch) >= 50:
                    self.app.call_from_thread(self._add, batch)
                    batch = []
        except (CoralError, OSError) as e:
            self.app.call_from_thread(self._done, f"search failed: {clean(e)}")
            return
        self.app.call_from_thread(self._add, batch)
        self.app.call_from_thread(self._done, None)

    def _add(self, hits: list[Hit]) -> None:
        if self.stop.is_set() or not self.is_attached:   # closed while the search ran
            return
        first = not self.hits
        self.hits += hits
        box = self.query_one("#hits", OptionList)
        box.add_options([Option(Text(f"{h.commit.hex()[:10]} {h.kind:<8} {clean(h.text)}")) for h in hits])
        if first and hits:
            box.highlighted = 0
            box.focus()

    def _done(self, error: str | None) -> None:
        if self.stop.is_set() or not self.is_attached:
            return
        text = error or (f"{len(self.hits)} hits (enter: go there, escape: close)" if self.hits else "no match")
        self.query_one("#search-status", Label).update(Text(text))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.stop.set()
        self.dismiss(self.hits[event.option_index])

    def action_close(self) -> None:
        self.stop.set()
        self.dismiss(None)


KEYS = [
    ("tab / shift+tab", "next / previous pane (the mouse works too)"),
    ("up / down, pgup / pgdn", "move in a list (more commits and tensors load as you go)"),
    ("home / end", "first / last row loaded (end again: the next page)"),
    ("enter on a ref", "show that branch's or tag's history"),
    ("/", "search history: messages, metadata (metrics), tensor names"),
    ("c", "compare the selected commit with its parent, or with the marked one"),
    ("m", "mark the selected commit for compare (again: unmark)"),
    ("g (compare)", "per layer or per tensor"),
    ("s / p", "stash / pop the staged changes of the --mount"),
    ("r", "reload refs, history and staged changes"),
    ("ctrl+p", "command palette"),
    ("?", "this help"),
    ("q, escape", "back / quit"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("coralfs browse: keys\n\n", style="bold")
        for k, what in KEYS:
            text.append(f"{k:<24}", style="bold cyan")
            text.append(f"{what}\n")
        with Vertical(id="help-box"):
            yield Static(text)


__all__ = ["CompareScreen", "HelpScreen", "SearchScreen"]
