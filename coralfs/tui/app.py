"""`coralfs browse`: refs and commits | files and tensors | details, in three panes.

Every list is a DataTable (it draws only the rows in view), and the long ones, commits and
a file's tensors, are filled a page at a time as the cursor or the scroll position nears
their end. Decoding (a tensor's statistics, a compare) runs in worker threads."""

from __future__ import annotations

import os
import time
from functools import partial

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from ..objects.errors import CoralError
from .data import PAGE, Browser, CommitPager, CommitRow, FileRow, RefRow, TensorRow
from .data import Hit as SearchHit
from .screens import CompareScreen, HelpScreen, SearchScreen
from .widgets import PagedTable, clean, commit_text, size, tensor_text, when

MARKS = {"added": "A", "modified": "M", "deleted": "D"}
MAIN_ONLY = frozenset({"search", "compare", "mark", "stash", "pop", "reload"})

CSS = """
#left { width: 32%; }
#middle { width: 40%; }
#right { width: 1fr; border-left: solid $primary-darken-2; padding: 0 1; }
.title { background: $primary-darken-2; color: $text; width: 100%; padding: 0 1; }
#refs { height: 7; }
#staged { height: 6; }
#files { height: 7; }
#search { dock: bottom; display: none; }
#search.open { display: block; }
#sides { height: 4; }
.side { width: 1fr; padding: 0 1; border-bottom: solid $primary-darken-2; }
#bars { height: 1fr; }
#heatmap-box { height: auto; max-height: 50%; padding: 0 1; }
#search-box, #help-box { width: 90%; height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
SearchScreen, HelpScreen { align: center middle; }
#hits { height: 1fr; }
"""


class CoralCommands(Provider):
    """coralfs's entries in the command palette (ctrl+p): view a ref, compare, search,
    stash and pop."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        assert isinstance(app, BrowserApp)
        out: list[tuple[str, object, str]] = [
            (f"view {r.kind} {clean(r.name)}", partial(app.view_ref, r), "show this ref's history") for r in app.ref_rows]
        out += [("compare with parent (or the marked commit)", app.action_compare, "per-layer bars and heatmaps"),
                ("search history", app.action_search, "messages, metadata, tensor names"),
                ("keys", app.action_help, "the keyboard help")]
        if app.browser.mount is not None:
            out += [("stash the staged changes", app.action_stash, f"of {app.browser.mount}"),
                    ("pop the newest stash", app.action_pop, f"into {app.browser.mount}")]
        return out

    async def discover(self) -> Hits:
        for name, cb, help_text in self._commands():
            yield DiscoveryHit(name, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, cb, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), cb, text=name, help=help_text)


class BrowserApp(App):
    TITLE = "coralfs browse"
    CSS = CSS
    COMMANDS = App.COMMANDS | {CoralCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("slash", "search", "Search"),
        Binding("question_mark", "help", "Help"),
        Binding("c", "compare", "Compare"),
        Binding("m", "mark", "Mark"),
        Binding("s", "stash", "Stash"),
        Binding("p", "pop", "Pop"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, browser: Browser) -> None:
        super().__init__()
        self.browser = browser
        self.sub_title = clean(f"{os.path.basename(browser.repo.path)} @ {browser.ref}")
        self.ref_rows: list[RefRow] = []
        self.pager: CommitPager | None = None
        self.file_rows: list[FileRow] = []
        self.tensor_rows: list[TensorRow] = []
        self.shown_commit: bytes | None = None
        self.shown_file: bytes | None = None
        self.marked: bytes | None = None
        self.detail_key: tuple | None = None   # what the detail pane shows now
        self.viewing: RefRow | None = None     # the ref whose history is shown (None: --ref)
        self.pending: SearchHit | None = None  # a search hit to select once its files are read
        self.painted_at: float | None = None   # perf_counter() of the first frame, and of the first files
        self.files_at: float | None = None
        self.staged: list[dict] = []

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="left"):
                yield Label("Refs", classes="title")
                yield DataTable(id="refs", cursor_type="row")
                yield Label("Commits", id="commits-title", classes="title")
                yield PagedTable(id="commits")
                if self.browser.mount is not None:
                    yield Label(Text(clean(f"Staged in {self.browser.mount}")), id="staged-title", classes="title")
                    yield DataTable(id="staged", cursor_type="row")
            with Vertical(id="middle"):
                yield Label("Files", classes="title")
                yield DataTable(id="files", cursor_type="row")
                yield Label("Tensors", id="tensors-title", classes="title")
                yield PagedTable(id="tensors")
            with VerticalScroll(id="right"):
                yield Static("", id="detail")
        yield Input(id="search", placeholder="search messages, metadata and tensor names; enter to search, escape to cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#refs", DataTable).add_columns("", "ref", "commit")
        self.query_one("#commits", PagedTable).add_columns("graph", "commit", "date", "message")
        self.query_one("#files", DataTable).add_columns("path", "format", "size", "tensors")
        self.query_one("#tensors", PagedTable).add_columns("name", "dtype", "shape", "stored", "codec")
        if self.browser.mount is not None:
            self.query_one("#staged", DataTable).add_columns("", "path", "size")
            self.load_staged()
        self.load_refs()
        self.view(self.browser.start)
        self.query_one("#commits", PagedTable).focus()

    def say(self, message: str, severity: str = "information") -> None:
        """A notification of plain text (an error may quote a name with brackets)."""
        self.notify(clean(message), severity=severity, markup=False)

    def on_ready(self) -> None:
        # textual sends Ready once the first frame is on the terminal: the moment
        # scripts/bench_tui.py calls first paint.
        self.painted_at = time.perf_counter()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("stash", "pop") and self.browser.mount is None:
            return False   # hidden from the footer: no writable mount to ask
        if action in MAIN_ONLY and self.screen is not self.screen_stack[0]:
            return False   # the compare, search and help screens have their own keys
        return True

    # -- refs and commits -----------------------------------------------------------------
    def load_refs(self) -> None:
        table = self.query_one("#refs", DataTable)
        table.clear()
        self.ref_rows = self.browser.refs()
        for r in self.ref_rows:
            table.add_row({"HEAD": "@", "branch": "b", "tag": "t"}[r.kind], Text(clean(r.name)), r.commit.hex()[:10])

    def view_ref(self, ref: RefRow) -> None:
        self.view(ref.commit, ref.name)
        self.viewing = ref

    def view(self, start: bytes, label: str | None = None) -> None:
        """Show the history from ``start`` (its first page now, the rest as it scrolls)."""
        self.pager = self.browser.pager(start)
        self.viewing = None
        self.shown_commit = None
        table = self.query_one("#commits", PagedTable)
        table.clear()
        self.query_one("#commits-title", Label).update(Text(clean(f"Commits from {label or self.browser.ref}")))
        self.more_commits()
        if self.pager.loaded:
            self.show_commit(0)

    def more_commits(self) -> int:
        assert self.pager is not None
        table = self.query_one("#commits", PagedTable)
        page = self.pager.next_page()
        for row in page:
            deco = f"({', '.join(row.decorations)}) " if row.decorations else ""
            msg = Text(clean(deco), style="yellow")
            msg.append(clean(row.summary))
            table.add_row(row.graph, row.short, when(row.commit.time), msg)
        table.loaded(not self.pager.done)
        return len(page)

    def on_paged_table_need_more(self, event: PagedTable.NeedMore) -> None:
        if event.table.id == "commits":
            self.more_commits()
        elif event.table.id == "tensors":
            self.more_tensors()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # The table's cursor now, not the event's row: an event queued by a clear() may
        # arrive after the cursor moved on (a search hit selects rows directly).
        table = event.data_table
        i = table.cursor_row
        if table.id == "commits":
            self.show_commit(i)
        elif table.id == "files":
            self.show_file(i)
            if self.focused is table:
                self.detail_file(i)
        elif table.id == "tensors" and self.focused is table:
            self.show_tensor(i)

    def on_descendant_focus(self, event) -> None:
        """The detail pane follows the focused list."""
        wid = getattr(event.widget, "id", None)
        if wid == "commits":
            row = self.current_commit()
            if row is not None:
                self.detail_commit(row)
        elif wid == "files":
            self.detail_file(self.query_one("#files", DataTable).cursor_row)
        elif wid == "tensors":
            self.show_tensor(self.query_one("#tensors", PagedTable).cursor_row)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "refs" and 0 <= event.cursor_row < len(self.ref_rows):
            self.view_ref(self.ref_rows[event.cursor_row])

    def current_commit(self) -> CommitRow | None:
        if self.pager is None or not self.pager.loaded:
            return None
        i = self.query_one("#commits", PagedTable).cursor_row
        return self.pager.loaded[i] if 0 <= i < len(self.pager.loaded) else None

    def show_commit(self, i: int) -> None:
        """Select commit ``i``: its files (and the first file's tensors) are read in a
        worker, so neither the first paint nor scrolling waits on a large File object."""
        if self.pager is None or not 0 <= i < len(self.pager.loaded):
            return
        row = self.pager.loaded[i]
        if self.shown_commit == row.oid:
            return
        self.shown_commit = row.oid
        self.file_rows = []
        self.query_one("#files", DataTable).clear()
        self._clear_tensors()
        self.detail_commit(row, loading=True)
        self.load_files(row)

    @work(thread=True, exclusive=True, group="files")
    def load_files(self, row: CommitRow) -> None:
        try:
            files = self.browser.files(row.oid)
            first = self.browser.tensors(files[0].file_id, 0, PAGE) if files else []
        except (CoralError, OSError) as e:
            self.call_from_thread(self.say, str(e), "error")
            return
        self.call_from_thread(self._files_loaded, row, files, first)

    def _files_loaded(self, row: CommitRow, files: list[FileRow], first: list[TensorRow]) -> None:
        if self.shown_commit != row.oid:   # the cursor moved on meanwhile
            return
        self.file_rows = files
        if self.files_at is None:
            self.files_at = time.perf_counter()
        table = self.query_one("#files", DataTable)
        for f in files:
            table.add_row(Text(clean(f.path)), clean(f.format), size(f.size), f.tensors)
        if self.detail_key == ("commit", row.oid):
            self.detail_commit(row, force=True)
        if files:
            self.show_file(0, first)
        hit, self.pending = self.pending, None
        if hit is not None and hit.commit == row.oid:
            self._select_tensor(hit)

    def detail_commit(self, row: CommitRow, loading: bool = False, force: bool = False) -> None:
        if force or self.detail_key != ("commit", row.oid):
            self.detail_key = ("commit", row.oid)
            self.query_one("#detail", Static).update(commit_text(row, None if loading else self.file_rows))

    def detail_file(self, i: int) -> None:
        if not 0 <= i < len(self.file_rows) or self.detail_key == ("file", self.file_rows[i].file_id):
            return
        f = self.file_rows[i]
        self.detail_key = ("file", f.file_id)
        self.query_one("#detail", Static).update(
            Text(f"{clean(f.path)}\n{clean(f.format)}, {size(f.size)}, {f.tensors} tensors\n\n"
                 "tab to the tensors, then up/down: statistics and a histogram of each"))

    # -- files and tensors ----------------------------------------------------------------
    def _clear_tensors(self) -> None:
        self.tensor_rows = []
        self.shown_file = None
        self.query_one("#tensors", PagedTable).clear()
        self.query_one("#tensors-title", Label).update("Tensors")

    def show_file(self, i: int, first: list[TensorRow] | None = None) -> None:
        """Show file ``i``'s tensors (``first``: their first page, read already)."""
        if not 0 <= i < len(self.file_rows):
            return
        f = self.file_rows[i]
        if self.shown_file == f.file_id:
            return
        self._clear_tensors()
        self.shown_file = f.file_id
        self.query_one("#tensors-title", Label).update(Text(f"Tensors of {clean(f.path)} ({f.tensors})"))
        self.more_tensors(first)

    def more_tensors(self, page: list[TensorRow] | None = None) -> int:
        if self.shown_file is None:
            return 0
        table = self.query_one("#tensors", PagedTable)
        if page is None:
            page = self.browser.tensors(self.shown_file, len(self.tensor_rows), PAGE)
        self.tensor_rows += page
        for t in page:
            table.add_row(Text(clean(t.name)), clean(t.dtype), "x".join(map(str, t.shape)) or "scalar", size(t.stored), t.codec)
        table.loaded(len(self.tensor_rows) < len(self.browser.tensor_names(self.shown_file)))
        return len(page)

    def show_tensor(self, i: int) -> None:
        if self.shown_file is None or not 0 <= i < len(self.tensor_rows):
            return
        t = self.tensor_rows[i]
        key = (self.shown_file, t.name)
        if self.detail_key == ("tensor", *key):
            return
        self.detail_key = ("tensor", *key)
        detail = self.query_one("#detail", Static)
        detail.update(tensor_text(t, None, self._detail_width()))
        self.compute_stats(self.shown_file, t)

    def _detail_width(self) -> int:
        return max(20, self.query_one("#right").size.width - 4)

    @work(thread=True, exclusive=True, group="stats")
    def compute_stats(self, file_id: bytes, t: TensorRow) -> None:
        try:
            stats = self.browser.stats(file_id, t.name)
        except (CoralError, OSError) as e:
            self.call_from_thread(self.say, str(e), "error")
            return
        self.call_from_thread(self._show_stats, file_id, t, stats)

    def _show_stats(self, file_id: bytes, t: TensorRow, stats) -> None:
        if self.detail_key == ("tensor", file_id, t.name):   # still the one shown
            self.query_one("#detail", Static).update(tensor_text(t, stats, self._detail_width()))

    # -- search ---------------------------------------------------------------------------
    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.add_class("open")
        box.value = ""
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        box = event.input
        box.remove_class("open")
        query = event.value.strip()
        self.query_one("#commits", PagedTable).focus()
        if query and self.pager is not None and self.pager.loaded:
            self.push_screen(SearchScreen(self.browser, query, self.pager.loaded[0].oid), self.go_to)

    def on_key(self, event) -> None:
        box = self.query_one("#search", Input)
        if event.key == "escape" and box.has_class("open"):
            box.remove_class("open")
            self.query_one("#commits", PagedTable).focus()
            event.stop()

    def go_to(self, hit: SearchHit | None) -> None:
        """Select the commit of a search hit (loading pages up to it), and its tensor."""
        if hit is None or self.pager is None:
            return
        ids = [r.oid for r in self.pager.loaded]
        while hit.commit not in ids and not self.pager.done:
            self.more_commits()
            ids = [r.oid for r in self.pager.loaded]
        if hit.commit not in ids:
            self.say("that commit is not in this history", "warning")
            return
        i = ids.index(hit.commit)
        commits = self.query_one("#commits", PagedTable)
        commits.move_cursor(row=i)
        commits.focus()
        if hit.path is None:
            self.show_commit(i)
            return
        if self.shown_commit == hit.commit and self.file_rows:
            self._select_tensor(hit)
        else:
            self.pending = hit       # selected once the commit's files are read
            self.show_commit(i)

    def _select_tensor(self, hit: SearchHit) -> None:
        fi = next((k for k, f in enumerate(self.file_rows) if f.path == hit.path), None)
        if fi is None or hit.tensor is None:
            return
        self.query_one("#files", DataTable).move_cursor(row=fi)
        self.show_file(fi)
        ti = self.browser.tensor_names(self.file_rows[fi].file_id).index(hit.tensor)
        while len(self.tensor_rows) <= ti and self.more_tensors():
            pass
        tensors = self.query_one("#tensors", PagedTable)
        tensors.move_cursor(row=ti)
        tensors.focus()
        self.show_tensor(ti)

    # -- compare, help --------------------------------------------------------------------
    def action_mark(self) -> None:
        row = self.current_commit()
        if row is None:
            return
        self.marked = None if self.marked == row.oid else row.oid
        self.say(f"marked {row.short} for compare (c)" if self.marked else "mark cleared")

    def action_compare(self) -> None:
        row = self.current_commit()
        if row is None:
            return
        a = self.marked if self.marked is not None and self.marked != row.oid else (
            row.commit.parents[0] if row.commit.parents else None)
        self.push_screen(CompareScreen(self.browser, a, row.oid))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_reload(self) -> None:
        """Refs, history and staged changes read again: a ref that moved shows its new
        commits."""
        viewing = self.viewing
        self.load_refs()
        now = next((r for r in self.ref_rows if viewing and (r.kind, r.name) == (viewing.kind, viewing.name)), None)
        if now is not None:
            self.view_ref(now)
        else:
            try:
                self.view(self.browser.repo.resolve(self.browser.ref))
            except (CoralError, OSError) as e:
                self.say(str(e), "error")
        self.load_staged()

    # -- a writable mount -----------------------------------------------------------------
    def load_staged(self) -> None:
        if self.browser.mount is None:
            return
        try:
            self.staged = self.browser.staged()
        except (CoralError, OSError) as e:
            self.say(str(e), "error")
            return
        table = self.query_one("#staged", DataTable)
        table.clear()
        for c in self.staged:
            table.add_row(MARKS.get(c["status"], "?"), Text(clean(c["path"])), size(c.get("size")))
        self.query_one("#staged-title", Label).update(
            Text(clean(f"Staged in {self.browser.mount}") + f": {len(self.staged)} change(s) (s: stash, p: pop)"))

    def action_stash(self) -> None:
        self.run_control("stash")

    def action_pop(self) -> None:
        self.run_control("pop")

    @work(thread=True, exclusive=True, group="control")
    def run_control(self, what: str) -> None:
        try:
            if what == "stash":
                msg = f"stashed as stash@{{{self.browser.stash()}}}"
            else:
                got = self.browser.pop()
                msg = f"applied stash@{{{got.get('stash')}}}: {len(got.get('changes') or [])} change(s)"
        except (CoralError, OSError) as e:
            self.call_from_thread(self.say, str(e), "error")
            return
        self.call_from_thread(self.say, msg)
        self.call_from_thread(self.load_staged)


__all__ = ["BrowserApp", "CoralCommands"]
