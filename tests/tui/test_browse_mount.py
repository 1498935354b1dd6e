"""The browser on a real writable mount: its staged changes, stashed and popped with keys."""

from __future__ import annotations

import os
import time

import pytest
from textual.widgets import DataTable

from coralfs.tui.app import BrowserApp
from tests.conftest import run_cli
from tests.mount.conftest import mounted
from tests.tui.test_browse import drive, settle

pytestmark = pytest.mark.mount


def _staged(app) -> list[tuple[str, str]]:
    t = app.query_one("#staged", DataTable)
    return [(str(t.get_row_at(i)[0]), str(t.get_row_at(i)[1])) for i in range(t.row_count)]


def test_stash_and_pop_the_staged_changes_of_a_writable_mount(history, tmp_path):
    mp = str(tmp_path / "stage")
    with mounted(history["path"], mp, None, "--write"):
        with open(os.path.join(mp, "notes.txt"), "w") as f:
            f.write("try this")
        with open(os.path.join(mp, "README.txt"), "w") as f:
            f.write("changed")

        async def scenario(app: BrowserApp, pilot):
            assert sorted(_staged(app)) == [("A", "notes.txt"), ("M", "README.txt")]
            assert "2 change(s)" in str(app.query_one("#staged-title").render())
            await pilot.press("s")
            await settle(app, pilot)
            assert _staged(app) == []
            assert "0 change(s)" in str(app.query_one("#staged-title").render())
            listed = run_cli("stash", "list", repo=history["path"]).stdout
            assert "stash@{0}" in listed and "2 change(s)" in listed
            time.sleep(1.2)   # the kernel's attribute cache (1 s), then the mount shows the branch head
            assert not os.path.exists(os.path.join(mp, "notes.txt"))
            await pilot.press("p")
            await settle(app, pilot)
            assert sorted(_staged(app)) == [("A", "notes.txt"), ("M", "README.txt")]
            assert run_cli("stash", "list", repo=history["path"]).stdout.strip() == "no stashes"
            await pilot.press("ctrl+p")                    # the same through the command palette
            await settle(app, pilot)
            await pilot.press(*"stash the staged", "enter")
            await settle(app, pilot)
            assert _staged(app) == [] and "stash@{0}" in run_cli("stash", "list", repo=history["path"]).stdout
            await pilot.press("ctrl+p")
            await settle(app, pilot)
            await pilot.press(*"pop the newest", "enter")
            await settle(app, pilot)
            assert sorted(_staged(app)) == [("A", "notes.txt"), ("M", "README.txt")]
            await pilot.press("p")                         # nothing left to pop: the mount's error, the app stays
            await settle(app, pilot)
            assert sorted(_staged(app)) == [("A", "notes.txt"), ("M", "README.txt")]

        drive(history["repo"], scenario, mount=mp)
        time.sleep(1.2)
        with open(os.path.join(mp, "notes.txt")) as f:
            assert f.read() == "try this"
