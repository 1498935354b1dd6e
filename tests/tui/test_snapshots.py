"""Screens of the browser as SVG snapshots (pytest-textual-snapshot), the same every run:
fixed seeds, commit times and author (so fixed ids), dates in UTC, a fixed terminal size.
`pytest tests/tui/test_snapshots.py --snapshot-update` rewrites them after a deliberate
change; look at the SVGs in __snapshots__/ before committing them."""

from __future__ import annotations

from coralfs.tui import Browser
from coralfs.tui.app import BrowserApp
from tests.tui.test_browse import settle

SIZE = (150, 42)


def test_snapshot_main_screen_on_a_tensor(history, snap_compare):
    async def to_head_bias(pilot):
        app = pilot.app
        await settle(app, pilot)
        await pilot.press("tab", "down", "tab", *["down"] * sorted(history["model"]).index("head.bias"))
        await settle(app, pilot)

    assert snap_compare(BrowserApp(Browser(history["repo"])), terminal_size=SIZE, run_before=to_head_bias)


def test_snapshot_compare_screen(history, snap_compare):
    async def compare(pilot):
        app = pilot.app
        await settle(app, pilot)
        await pilot.press("c")
        await settle(app, pilot)

    assert snap_compare(BrowserApp(Browser(history["repo"], "exp")), terminal_size=SIZE, run_before=compare)


def test_snapshot_help(history, snap_compare):
    async def help_screen(pilot):
        await settle(pilot.app, pilot)
        await pilot.press("question_mark")
        await settle(pilot.app, pilot)

    assert snap_compare(BrowserApp(Browser(history["repo"])), terminal_size=SIZE, run_before=help_screen)
