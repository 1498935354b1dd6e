"""The browser through textual's Pilot on a real repository: navigate refs -> commit ->
file -> tensor, search, compare, the palette, help, lazy pages; bad input of the command."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from textual.widgets import DataTable, OptionList, Static

from coralfs import Repository
from coralfs.analysis.values import value_stats
from coralfs.tui import Browser
from coralfs.tui.app import BrowserApp
from coralfs.tui.data import PAGE
from coralfs.tui.screens import CompareScreen, HelpScreen, SearchScreen
from tests.conftest import run_cli


def drive(repo: Repository, scenario, size=(140, 44), **kw) -> None:
    """Run ``scenario(app, pilot)`` against a headless browser of ``repo``."""
    async def go() -> None:
        app = BrowserApp(Browser(repo, **kw))
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            await scenario(app, pilot)
    asyncio.run(go())


async def settle(app, pilot) -> None:
    """Let every key, worker thread (statistics, compare, search) and repaint finish."""
    for _ in range(3):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


def detail(app) -> str:
    return str(app.query_one("#detail", Static).render())


def finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)].astype(np.float64)


def test_navigate_refs_commit_file_tensor_and_see_its_statistics(history):
    m = history["model"]
    ids = history["ids"]

    async def scenario(app, pilot):
        assert app.focused.id == "commits"
        commits = app.query_one("#commits", DataTable)
        assert commits.row_count == 2 and app.pager.loaded[0].oid == ids["c2"]
        await pilot.press("shift+tab")                    # the refs
        assert app.focused.id == "refs"
        names = [r.name for r in app.ref_rows]
        await pilot.press(*["down"] * names.index("exp", 1), "enter")   # the branch exp
        await settle(app, pilot)
        assert [r.oid for r in app.pager.loaded] == [ids["c3"], ids["c1"]]
        assert "scaled attention" in detail(app)
        await pilot.press("tab", "down")                  # c1, the tagged commit
        await settle(app, pilot)
        assert app.current_commit().oid == ids["c1"]
        assert "tag: v1" in detail(app) and "loss=1.25" in detail(app)
        await pilot.press("tab", "down")                  # files: README.txt, model.safetensors
        await settle(app, pilot)
        assert "model.safetensors" in detail(app) and f"{len(m)} tensors" in detail(app)
        await pilot.press("tab")                          # the tensors: the first one's statistics
        await settle(app, pilot)
        tensors = app.query_one("#tensors", DataTable)
        assert [str(tensors.get_row_at(i)[0]) for i in range(tensors.row_count)] == sorted(m)
        name = sorted(m)[0]
        x = finite(m[name])
        text = detail(app)
        assert name in text and "F32 [16, 16]" in text
        assert f"min  {x.min():<12.6g}" in text and f"max {x.max():.6g}" in text
        assert f"mean {x.mean():<12.6g}" in text and f"std {x.std():.6g}" in text
        assert "NaN 0" in text and "distribution of values" in text
        await pilot.press(*["down"] * sorted(m).index("head.bias"))  # with a NaN and an Inf
        await settle(app, pilot)
        text = detail(app)
        hb = finite(m["head.bias"])
        assert "head.bias" in text and "NaN 1" in text and "Inf 1" in text and "finite 6" in text
        assert f"mean {hb.mean():<12.6g}" in text
        assert f"fullest bin: {int(np.histogram(hb, bins=32, range=(hb.min(), hb.max()))[0].max()):,} values" in text

    drive(history["repo"], scenario)


def test_value_statistics_match_numpy_for_stored_and_packed_tensors(history):
    repo = history["repo"]
    f = repo.read_file(repo.tree_of(history["ids"]["c2"].hex()).entries["model.safetensors"].file)
    packed = {n for n, r in f.tensors().items() if type(r).__name__ == "PackedTensor"}
    assert packed and packed != set(f.tensors())   # both kinds are checked
    for name in f.tensors():
        want = history["model2"][name].astype(np.float64)
        s = value_stats(repo, f, name, bins=16)
        fin = want[np.isfinite(want)]
        assert (s.count, s.nan, s.inf) == (want.size, int(np.isnan(want).sum()), int(np.isinf(want).sum()))
        assert s.min == fin.min() and s.max == fin.max()
        assert s.mean == pytest.approx(fin.mean(), rel=1e-12) and s.std == pytest.approx(fin.std(), rel=1e-12)
        assert s.counts.tolist() == np.histogram(fin, bins=16, range=(fin.min(), fin.max()))[0].tolist()


def test_search_finds_a_commit_by_message_metadata_and_a_tensor_by_name(history):
    ids = history["ids"]

    async def scenario(app, pilot):
        await pilot.press("down")                          # start on the older commit: search looks from the top
        await pilot.press("slash", *"initial", "enter")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, SearchScreen)
        assert [(h.kind, h.commit) for h in screen.hits] == [("message", ids["c1"])]
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.current_commit().oid == ids["c1"]

        await pilot.press("slash", *"ACCURACY", "enter")  # metrics, case-insensitive
        await settle(app, pilot)
        assert [(h.kind, h.commit, h.text) for h in app.screen.hits] == [("metadata", ids["c2"], "metrics.accuracy=0.875")]
        await pilot.press("escape")
        await settle(app, pilot)
        assert not isinstance(app.screen, SearchScreen)

        await pilot.press("slash", *"mlp.bias", "enter")
        await settle(app, pilot)
        hits = app.screen.hits
        assert [(h.kind, h.path, h.tensor) for h in hits] == [("tensor", "model.safetensors", "encoder.layer.1.mlp.bias")]
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.focused.id == "tensors"
        assert "encoder.layer.1.mlp.bias" in detail(app) and "F32 [32]" in detail(app)

        await pilot.press("slash", *"no such thing", "enter")
        await settle(app, pilot)
        assert app.screen.hits == [] and "no match" in str(app.screen.query_one("#search-status").render())

    drive(history["repo"], scenario)


def _bars(screen) -> list[str]:
    box = screen.query_one("#bars", OptionList)
    return [str(box.get_option_at_index(i).prompt) for i in range(box.option_count)]


def test_compare_mode_shows_bars_and_a_heatmap_of_the_changed_tensors(history):
    ids = history["ids"]
    a = history["model"]["encoder.layer.1.mlp.weight"].astype(np.float64)
    b = history["model2"]["encoder.layer.1.mlp.weight"].astype(np.float64)
    rel = np.linalg.norm(b - a) / np.linalg.norm(a)

    async def scenario(app, pilot):
        await pilot.press("c")                             # HEAD (fine-tune) against its parent
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen) and (screen.a, screen.b) == (ids["c1"], ids["c2"])
        bars = _bars(screen)
        assert len(bars) == 1 and bars[0].startswith("encoder.layer.1.mlp.weight █")
        assert f"relL2={rel:.3g}" in bars[0] and "max|Δ|=0.5" in bars[0] and "changed=3.1%" in bars[0]
        heat = str(screen.query_one("#heatmap", Static).render())
        assert "encoder.layer.1.mlp.weight [32, 16]: |Δ| in 16 x 16 blocks" in heat
        rows = [ln for ln in heat.splitlines() if ln.startswith("|")]
        assert [i for i, ln in enumerate(rows) if ln.strip("| ")] == [1]   # row 3 of 32 is block row 1 of 16
        await pilot.press("g")                             # one line per layer
        assert _bars(screen)[0].startswith("encoder.layer.1.* (1)")
        await pilot.press("escape")

        # mark HEAD, then compare exp's head with it: two tensors differ
        await pilot.press("m", "shift+tab")
        names = [r.name for r in app.ref_rows]
        await pilot.press(*["down"] * names.index("exp", 1), "enter")
        await settle(app, pilot)
        await pilot.press("tab", "c")
        await settle(app, pilot)
        screen = app.screen
        assert (screen.a, screen.b) == (ids["c2"], ids["c3"])
        got = sorted(line.split()[0] for line in _bars(screen))
        assert got == ["encoder.layer.0.attn.q.weight", "encoder.layer.1.mlp.weight"]
        await pilot.press("down")
        await settle(app, pilot)
        assert "encoder.layer.1.mlp.weight [32, 16]" in str(screen.query_one("#heatmap", Static).render())

    drive(history["repo"], scenario)


def test_help_and_the_command_palette_view_a_tag(history):
    async def scenario(app, pilot):
        await pilot.press("question_mark")
        await settle(app, pilot)
        assert isinstance(app.screen, HelpScreen)
        assert "search history" in str(app.screen.query_one(Static).render())
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await settle(app, pilot)
        await pilot.press(*"view tag v1")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert str(app.query_one("#commits-title").render()) == "Commits from v1"
        assert [r.oid for r in app.pager.loaded] == [history["ids"]["c1"]]

    drive(history["repo"], scenario)


def test_commits_load_a_page_at_a_time_as_the_list_scrolls(history):
    repo = history["repo"]
    tree = repo.read_commit(history["ids"]["c2"]).tree
    n = 2 * PAGE + 50
    with repo.write_session():
        for i in range(n):
            repo.commit(tree, f"step {i}", author="bot", time=1_770_000_000 + i, metadata={"metrics": {"step": i}})

    async def scenario(app, pilot):
        commits = app.query_one("#commits", DataTable)
        assert commits.row_count == PAGE and not app.pager.done
        await pilot.press(*["down"] * 10)
        await settle(app, pilot)
        assert commits.row_count == PAGE                   # not near the end yet
        await pilot.press("end")
        await settle(app, pilot)
        assert commits.row_count == 2 * PAGE
        await pilot.press("end")
        await settle(app, pilot)
        assert commits.row_count == 2 * PAGE + 52 and app.pager.done
        assert app.pager.loaded[-1].oid == history["ids"]["c1"]
        await pilot.press("slash", *"step 3", "enter")     # a hit on a later page is found and selected
        await settle(app, pilot)
        newest = max(i for i in range(n) if f"step {i}".startswith("step 3"))
        assert app.screen.hits[0].text == f"step {newest}"
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.current_commit().summary == f"step {newest}"

    drive(repo, scenario)


def test_tensors_load_a_page_at_a_time(tmp_path):
    from safetensors.numpy import save_file

    from tests.tui.conftest import commit_dir
    repo = Repository.init(str(tmp_path / "repo"))
    src = tmp_path / "src"
    src.mkdir()
    save_file({f"t{i:04d}": np.full(4, i, np.float32) for i in range(PAGE + 30)}, str(src / "m.safetensors"))
    commit_dir(repo, str(src), "many", 1_760_000_000)

    async def scenario(app, pilot):
        tensors = app.query_one("#tensors", DataTable)
        assert tensors.row_count == PAGE
        await pilot.press("tab", "tab", "end")
        await settle(app, pilot)
        assert tensors.row_count == PAGE + 30
        await pilot.press("end")
        await settle(app, pilot)
        assert f"t{PAGE + 29:04d}" in detail(app) and f"mean {PAGE + 29:<12.6g}" in detail(app)

    drive(repo, scenario)
    repo.close()


# -- the command ---------------------------------------------------------------------------
def _one_line_error(p) -> str:
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_browse_outside_a_repository_an_unknown_ref_and_a_mount_that_is_not_one(history, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    line = _one_line_error(run_cli("browse", check=False, cwd=str(elsewhere)))
    assert "not a coralfs repository" in line or "repository" in line
    line = _one_line_error(run_cli("ui", "--ref", "X", repo=history["path"], check=False))
    assert "X" in line
    line = _one_line_error(run_cli("browse", "--mount", str(elsewhere), repo=history["path"], check=False))
    assert "not a writable coralfs mount" in line


def test_the_mouse_selects_a_file_and_a_tensor(history):
    m = history["model"]

    async def scenario(app, pilot):
        await pilot.click("#files", offset=(2, 2))         # the header is line 0; model.safetensors line 2
        await settle(app, pilot)
        assert app.focused.id == "files"
        assert str(app.query_one("#tensors-title").render()) == f"Tensors of model.safetensors ({len(m)})"
        k = sorted(m).index("encoder.layer.1.mlp.weight")
        await pilot.click("#tensors", offset=(2, 1 + k))
        await settle(app, pilot)
        assert app.focused.id == "tensors"
        x = m["encoder.layer.1.mlp.weight"].astype(np.float64)
        assert "encoder.layer.1.mlp.weight" in detail(app) and f"max {x.max():.6g}" in detail(app)

    drive(history["repo"], scenario)


def test_compare_a_root_commit_lists_its_tensors_as_added_and_escape_closes_the_search_box(history):
    m = history["model"]

    async def scenario(app, pilot):
        await pilot.press("slash", *"xyz", "escape")
        await settle(app, pilot)
        assert not app.query_one("#search").has_class("open") and not isinstance(app.screen, SearchScreen)
        assert app.focused.id == "commits"
        await pilot.press("down", "c")                     # the root commit: against nothing
        await settle(app, pilot)
        screen = app.screen
        assert screen.a is None and screen.b == history["ids"]["c1"]
        bars = _bars(screen)
        assert sorted(b.split()[0] for b in bars) == sorted(m) and all("(added)" in b for b in bars)
        assert "no heatmap" in str(screen.query_one("#heatmap", Static).render())

    drive(history["repo"], scenario)


def test_the_lane_graph_of_a_merge(history):
    repo = history["repo"]
    ids = history["ids"]
    tree = repo.read_commit(ids["c2"]).tree
    merge = repo.commit(tree, "merge exp", parents=[ids["c2"], ids["c3"]], author="bot", time=1_760_100_000)
    rows = Browser(repo).pager(merge).next_page()
    assert [(r.graph, r.summary) for r in rows] == [
        ("*", "merge exp"), ("|*", "scaled attention"), ("*|", "fine-tune layer 1"), ("*", "initial model")]


def test_the_browser_imports_without_torch():
    import subprocess
    import sys
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import coralfs.tui.app, coralfs.tui.screens, coralfs.analysis.values, coralfs.cli.tui_cmds\n"
            "print('torch' in sys.modules)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


def test_names_from_the_repository_are_drawn_as_text_never_as_markup_or_control_codes(history):
    repo = history["repo"]
    tree = repo.read_commit(history["ids"]["c2"]).tree
    msg = "[bold red]boom[/] \x1b[2J\x1b]0;title\x07 done"
    repo.commit(tree, msg, author="[i]eve\x1b[31m", time=1_760_100_000)

    async def scenario(app, pilot):
        text = detail(app)
        assert "[bold red]boom[/] \\x1b[2J\\x1b]0;title\\x07 done" in text
        assert "author [i]eve\\x1b[31m" in text and "\x1b" not in text
        row = app.query_one("#commits", DataTable).get_row_at(0)
        assert "\x1b" not in str(row[3]) and "[bold red]boom[/]" in str(row[3])
        await pilot.press("slash", *"boom", "enter")
        await settle(app, pilot)
        assert [h.kind for h in app.screen.hits] == ["message"]

    drive(repo, scenario)


def test_reload_shows_the_commits_a_ref_gained(history):
    repo = history["repo"]

    async def scenario(app, pilot):
        await pilot.press("shift+tab", *["down"] * [r.name for r in app.ref_rows].index("exp", 1), "enter")
        await settle(app, pilot)
        assert app.pager.loaded[0].summary == "scaled attention"
        tree = repo.read_commit(history["ids"]["c3"]).tree
        repo.commit(tree, "more attention", branch="exp", author="bot", time=1_760_200_000)
        await pilot.press("r")
        await settle(app, pilot)
        assert [r.summary for r in app.pager.loaded] == ["more attention", "scaled attention", "initial model"]
        assert str(app.query_one("#commits-title").render()) == "Commits from exp"

    drive(repo, scenario)


def test_leaving_a_compare_or_a_search_before_its_worker_ends_keeps_the_browser_running(history):
    release = threading.Event()

    class Slow(Browser):
        """Compare and search finish only once the test has closed their screens."""

        def compare(self, *args, **kw):
            release.wait(30)
            return super().compare(*args, **kw)

        def search(self, *args, **kw):
            release.wait(30)
            yield from super().search(*args, **kw)

    async def go() -> None:
        app = BrowserApp(Slow(history["repo"]))
        async with app.run_test(size=(140, 44)) as pilot:
            await settle_ui(pilot)
            await pilot.press("c")
            await settle_ui(pilot)
            assert isinstance(app.screen, CompareScreen)
            await pilot.press("escape", "slash", *"model", "enter")
            await settle_ui(pilot)
            assert isinstance(app.screen, SearchScreen)
            await pilot.press("escape")
            await settle_ui(pilot)
            release.set()
            await settle(app, pilot)
            assert app.is_running and app.return_code is None
            assert app.screen is app.screen_stack[0] and app.focused.id == "commits"
    asyncio.run(go())


async def settle_ui(pilot) -> None:
    for _ in range(3):
        await pilot.pause()


def test_value_statistics_of_bf16_and_integer_tensors(tmp_path):
    import ml_dtypes
    from safetensors.numpy import save_file

    from tests.tui.conftest import commit_dir
    rng = np.random.default_rng(3)
    want = {"w": rng.standard_normal((64, 8)).astype(ml_dtypes.bfloat16), "i": rng.integers(-100, 100, 50).astype(np.int8)}
    src = tmp_path / "src"
    src.mkdir()
    save_file(want, str(src / "m.safetensors"))
    repo = Repository.init(str(tmp_path / "repo"))
    commit_dir(repo, str(src), "two dtypes", 1_760_000_000)
    f = repo.read_file(repo.tree_of("HEAD").entries["m.safetensors"].file)
    for name, x in want.items():
        x = x.astype(np.float64)
        s = value_stats(repo, f, name, bins=8)
        assert (s.min, s.max, s.count) == (x.min(), x.max(), x.size)
        assert s.mean == pytest.approx(x.mean(), rel=1e-12) and s.std == pytest.approx(x.std(), rel=1e-12)
        assert s.counts.tolist() == np.histogram(x, bins=8, range=(x.min(), x.max()))[0].tolist()
    repo.close()
