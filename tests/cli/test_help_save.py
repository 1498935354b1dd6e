"""`coralfs --help` groups commands by task; `coralfs save` is a built-in alias that a
repository's own alias of that name replaces."""

from __future__ import annotations

import re

from coralfs.cli.main import PANEL_OF, PANELS, app
from tests.cli.test_cli import _ckpt, cli
from tests.conftest import run_cli


def test_every_command_sits_in_a_task_panel():
    names = [c.name or c.callback.__name__ for c in app.registered_commands] + [g.name for g in app.registered_groups]
    missing = [n for n in names if n not in PANEL_OF]
    assert not missing, f"add these commands to PANELS in coralfs/cli/main.py: {missing}"
    out = run_cli("--help").stdout
    titles = [t for t in re.findall(r"╭─ (.+?) ─", out) if t != "Options"]
    assert titles == [p for p in PANELS if any(n in names for n in PANELS[p])]
    start = out.index("╭─ Start")
    assert out.index(" init ", start) < out.index("╭─ Record") < out.index(" gc ")   # init first, gc last


def test_save_commits_the_checkpoint_directory(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    ck = _ckpt(tmp_path / "checkpoint-500", 0, n=8)
    p = run_cli("save", repo=repo, cwd=ck)
    assert "save checkpoint-500 at " in p.stdout
    log = cli(repo, "log", "--oneline").output
    assert re.search(r"save checkpoint-500 at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", log)
    cli(repo, "alias", "save", "commit . -m mine")
    _ckpt(ck, 1, n=8)
    run_cli("save", repo=repo, cwd=ck)
    assert cli(repo, "log", "--oneline").output.splitlines()[0].endswith(" mine")
    r = run_cli("alias", "log", "show", repo=repo, check=False)
    assert r.returncode != 0 and "is a coralfs command" in r.stderr   # other built-ins stay protected
