"""Entry point: ``coralfs`` and ``python -m coralfs``.

Importing this module imports neither typer nor a command module: `coralfs --help` and
`coralfs` alone are drawn from coralfs/cli/catalog.py (coralfs/cli/root_help.py); anything
else loads the command modules first (``load_commands()``). ``app``, as an attribute of this
module, is the root typer app with every command registered."""

from __future__ import annotations

import importlib
import inspect
import io
import os
import sys
from typing import TYPE_CHECKING

from . import root_help
from .catalog import PANEL_OF, PANELS  # noqa: F401  (re-exported: where the panels are)
from .root_help import ROOT_FLAGS, ROOT_VALUE_OPTIONS

if TYPE_CHECKING:
    import typer

    from .common import click

# The modules whose import registers the commands on the root app (coralfs/cli/app.py).
COMMAND_MODULES = ("admin_cmds", "cache_cmds", "ci_cmds", "experiment_cmds", "inspect_cmds", "mount_cmds",
                   "publish_cmds", "ref_cmds", "remote_cmds", "repo_cmds", "staging_cmds", "tui_cmds",
                   "workflow_cmds")
_loaded: typer.Typer | None = None


def load_commands() -> typer.Typer:
    """The root app with every command registered and put in its panel (done once)."""
    global _loaded
    if _loaded is None:
        for name in COMMAND_MODULES:
            importlib.import_module(f"{__package__}.{name}")
        from .app import app
        assign_panels(app)
        _loaded = app
    return _loaded


def __getattr__(name: str):
    # `from coralfs.cli.main import app` (tests, typer's CliRunner) gets the whole tree.
    if name == "app":
        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def assign_panels(app: typer.Typer) -> None:
    """Put every registered command and group in its panel; commands are listed by panel
    in PANELS order, then by the order within it."""
    order = {name: i for i, name in enumerate(n for names in PANELS.values() for n in names)}
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        info.rich_help_panel = PANEL_OF.get(name, "Other")
    for group in app.registered_groups:
        group.rich_help_panel = PANEL_OF.get(group.name, "Other")
    app.registered_commands.sort(key=lambda c: order.get(c.name or c.callback.__name__, len(order)))
    app.registered_groups.sort(key=lambda g: order.get(g.name, len(order)))


def invoked_name(args: list[str]) -> str | None:
    """The command or group name ``args`` run, when only root options come before it;
    None for anything else (`--help`, an option this does not know)."""
    i = 0
    while i < len(args):
        a = args[i]
        if a in ROOT_VALUE_OPTIONS:
            i += 2
        elif a in ROOT_FLAGS or a.startswith(("--repo=", "--config=")):
            i += 1
        elif a.startswith("-"):
            return None
        else:
            return a
    return None


def build_command(args: list[str]) -> click.Command:
    """The click group that runs ``args``. Building a click object for each of the ~70
    commands costs more than the rest of `coralfs log` together (docs/benchmarks.md), so
    when ``args`` name a built-in command (not an alias, not a custom command, not a
    completion request), the group holds only that one; `--help` and everything else get
    the whole tree."""
    import typer.main

    from .app import OVERRIDABLE
    app = load_commands()
    name = invoked_name(args)
    commands, groups = app.registered_commands, app.registered_groups
    if name is not None and name not in OVERRIDABLE and "_CORALFS_COMPLETE" not in os.environ:
        only_cmd = [c for c in commands if (c.name or typer.main.get_command_name(c.callback.__name__)) == name]
        only_grp = [g for g in groups if g.name == name]
        if only_cmd or only_grp:
            app.registered_commands, app.registered_groups = only_cmd, only_grp
    try:
        group = typer.main.get_command(app)
    finally:
        # Restored before the command runs: `coralfs alias` looks at the whole tree.
        app.registered_commands, app.registered_groups = commands, groups
    for cmd in group.commands.values():  # type: ignore[attr-defined]
        if not cmd.short_help and cmd.help:
            cmd.short_help = one_line(cmd.help)
    return group


def one_line(help_text: str) -> str:
    """The first paragraph of a help text on one line: what `coralfs --help` lists for the
    command. typer's rich markup keeps a docstring's single line breaks, which cut a
    listed help in the middle of its column."""
    return inspect.cleandoc(help_text).split("\n\n")[0].replace("\n", " ").strip()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    rc = root_help.exit_code_of(args)
    if rc is not None:
        root_help.show(blank_line=rc == 0)   # a reader gone away (| head): rich exits 1 quietly
        return rc
    import typer
    from typer._completion_classes import completion_init

    from . import common
    from .common import click, esc
    # Typer's shell-completion handlers (complete_bash, complete_zsh, ...) are registered
    # only on request; the scripts from `coralfs completions` call them.
    completion_init()
    cmd = build_command(args)
    common.COMMAND_LINE = ["coralfs", *args]   # what a commit's provenance records
    try:
        rc = cmd.main(args=args, prog_name="coralfs",
                      standalone_mode=False, complete_var="_CORALFS_COMPLETE")
    except typer.Abort:
        typer.echo("coralfs: aborted", err=True)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except click.ClickException as e:  # usage errors: click's own message, exit 2
        buf = io.StringIO()
        e.show(file=buf)
        for line in buf.getvalue().splitlines():
            click.echo(esc(line), err=True)  # it quotes what was typed, control bytes too
        return e.exit_code
    return rc if isinstance(rc, int) else 0


def run() -> None:
    if root_help.exit_code_of(sys.argv[1:]) is None:  # a command to run, not the root help
        from ..objects.memory import tune_allocator
        tune_allocator()  # coralfs' own process: buffers reused, not page-faulted again
    sys.exit(main())
