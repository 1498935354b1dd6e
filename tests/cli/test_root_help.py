"""`coralfs --help` is drawn from a table (coralfs/cli/catalog.py) without importing the
commands (issue 16: a git-like tool answers at once). The table cannot drift from the
commands: it is checked against the real command tree, and the drawing against typer's
own rich help of that tree, byte for byte, at several widths, with and without colour."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys

import pytest

from coralfs.cli import catalog
from coralfs.cli.main import build_command
from coralfs.cli.root_help import exit_code_of
from tests.conftest import run_cli


def no_styles(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def real_tree():
    """(usage, help, options, commands) of the whole command tree as typer shows them."""
    group = build_command(["--help"])
    ctx = group.make_context("coralfs", [], resilient_parsing=True)
    options = []
    for p in group.get_params(ctx):
        long = ",".join(o for o in p.opts if "--" in o)
        short = ",".join(o for o in p.opts if "--" not in o)
        options.append((long, short, p.display_type_rich(ctx=ctx) or "", p.help or ""))
    commands = []
    for name in group.list_commands(ctx):
        c = group.get_command(ctx, name)
        if not c.hidden:
            commands.append((name, c.rich_help_panel, inspect.cleandoc(c.short_help or c.help or "").split("\n\n")[0].strip()))
    return group.get_usage(ctx), group.help, tuple(options), tuple(commands)


def test_the_table_lists_every_command_with_its_panel_and_help():
    usage, help_, options, commands = real_tree()
    assert (catalog.USAGE, catalog.HELP) == (usage, help_)
    assert catalog.OPTIONS == options
    # Name, panel and help of every listed command, in typer's order; on a mismatch the
    # message gives the rows to paste into coralfs/cli/catalog.py.
    assert catalog.COMMANDS == commands, "COMMANDS in coralfs/cli/catalog.py should be:\n" + "\n".join(
        f"    {row!r}," for row in commands)
    assert {name for name, _, _ in commands} <= set(catalog.PANEL_OF)
    # A command whose help breaks its first paragraph over lines is listed on one line.
    ancestry = {n: h for n, _, h in commands}["ancestry"]
    assert "\n" not in ancestry and "how it is stored" in ancestry


DRAW = r"""
import contextlib, io, json, os, sys
from coralfs.cli import root_help
from coralfs.cli.main import build_command
out = {}
for width in ("40", "80", "133", "200"):
    os.environ["COLUMNS"] = width
    typer_out, fast_out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(typer_out):
        build_command(["--help"]).main(["--help"], prog_name="coralfs", standalone_mode=False)
    with contextlib.redirect_stdout(fast_out):
        root_help.show(blank_line=True)
    out[width] = [typer_out.getvalue(), fast_out.getvalue()]
print(json.dumps(out))
"""


@pytest.mark.parametrize("env", [{}, {"FORCE_COLOR": "1"}, {"FORCE_COLOR": "1", "NO_COLOR": "1"},
                                 {"TERMINAL_WIDTH": "70"}, {"FORCE_COLOR": "1", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}])
def test_the_root_help_is_typers_byte_for_byte(env):
    # typer reads its colour settings when rich_utils is imported: a fresh interpreter each.
    e = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "PY_COLORS", "GITHUB_ACTIONS",
                                                             "TERMINAL_WIDTH", "TYPER_USE_RICH")}
    p = subprocess.run([sys.executable, "-c", DRAW], capture_output=True, text=True, env={**e, **env})
    assert p.returncode == 0, p.stderr
    for width, (typer_out, fast_out) in json.loads(p.stdout).items():
        assert fast_out == typer_out, width
        plain = no_styles(fast_out)
        assert "╭─ Start" in plain and "╭─ Maintain" in plain and " save " in plain
    if env in ({}, {"TERMINAL_WIDTH": "70"}):
        assert "\x1b[" not in fast_out          # not a terminal: no colour, no styles
    if env == {"FORCE_COLOR": "1"}:
        assert "\x1b[1;36m" in fast_out         # the command names in bold cyan


def test_help_h_and_no_arguments_through_the_command_line():
    out = run_cli("--help").stdout
    assert out == run_cli("-h").stdout == run_cli("-R", "/nowhere", "-v", "-c", "k=v", "--help").stdout
    assert not any(ch in out for ch in "\x1b")       # not a terminal: no colour
    for name, _, _ in catalog.COMMANDS:
        assert f" {name} " in out
    p = run_cli(check=False)
    assert p.returncode == 2 and p.stdout == out[:-1] and p.stderr == ""   # a usage error, as typer's
    p = run_cli("--help", env={"COLUMNS": "100", "FORCE_COLOR": "1"})
    assert "\x1b[1;36m" in p.stdout and "╭─ Experiments and releases" in no_styles(p.stdout)


def test_the_fast_root_help_is_only_for_root_help():
    assert exit_code_of(["--help"]) == exit_code_of(["-h"]) == exit_code_of(["-v", "-R", "r", "-h"]) == 0
    assert exit_code_of(["--repo=r", "--config=a=b", "--help"]) == 0
    assert exit_code_of([]) == 2
    for args in (["log"], ["log", "--help"], ["--help", "log"], ["-R", "--help"], ["-R"], ["-v"],
                 ["--bogus", "--help"], ["-vh"], ["--", "--help"]):
        assert exit_code_of(args) is None, args


def test_the_fast_root_help_leaves_completion_and_plain_help_to_typer(monkeypatch):
    monkeypatch.setenv("_CORALFS_COMPLETE", "complete_bash")
    assert exit_code_of([]) is None
    monkeypatch.delenv("_CORALFS_COMPLETE")
    monkeypatch.setenv("TYPER_USE_RICH", "0")
    assert exit_code_of(["--help"]) is None
    p = run_cli("--help", env={"TYPER_USE_RICH": "0"})
    assert "╭─" not in p.stdout and "Commands:" in p.stdout and "  init " in p.stdout


def test_a_user_alias_does_not_change_the_root_help(tmp_path):
    # As with typer's listing, the root help lists the built-in commands, not the
    # repository's aliases (`coralfs alias` lists those).
    repo = str(tmp_path / "r")
    run_cli("init", repo)
    run_cli("alias", "hist", "log --oneline", repo=repo)
    assert run_cli("--help", repo=repo).stdout == run_cli("--help").stdout
    assert run_cli("alias", repo=repo).stdout == "hist = log --oneline\n"


def test_help_to_a_reader_that_went_away_exits_quietly():
    r, w = os.pipe()
    os.close(r)   # every write fails with EPIPE, as after `| head` has exited
    try:
        p = subprocess.run([sys.executable, "-m", "coralfs", "--help"], stdout=w, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (1, "")   # rich's answer, as when typer drew it
