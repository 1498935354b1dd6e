"""Entry point: ``coralfs`` and ``python -m coralfs``."""

from __future__ import annotations

import io
import os
import sys

import typer

from . import (  # noqa: F401  (importing registers the commands)
    admin_cmds,
    cache_cmds,
    ci_cmds,
    common,
    experiment_cmds,
    inspect_cmds,
    mount_cmds,
    publish_cmds,
    ref_cmds,
    remote_cmds,
    repo_cmds,
    staging_cmds,
    tui_cmds,
    workflow_cmds,
)
from .app import OVERRIDABLE, app
from .common import click, esc

# `coralfs --help` lists commands by task, in this order (typer's rich help panels).
PANELS: dict[str, tuple[str, ...]] = {
    "Start": ("init", "import", "import-pytorch", "clone", "config", "alias", "completions"),
    "Record": ("commit", "save", "status", "stash", "watch", "preview"),
    "Inspect": ("log", "show", "diff", "changelog", "lineage", "ancestry", "provenance", "stats", "browse", "ui"),
    "Branches and tags": ("branch", "tag", "checkout", "merge", "export"),
    "Mount": ("mount", "umount", "mounts"),
    "Experiments and releases": ("experiment", "release", "releases", "ci"),
    "Share": ("remote", "push", "fetch", "pull", "publish"),
    "Maintain": ("gc", "fsck", "optimize", "cache"),
}
PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


def assign_panels() -> None:
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


assign_panels()

# The root options (coralfs/cli/app.py) that take a value: skipped to find the command name.
_ROOT_VALUE_OPTIONS = frozenset({"-R", "--repo", "-c", "--config"})
_ROOT_FLAGS = frozenset({"-v", "--verbose"})


def invoked_name(args: list[str]) -> str | None:
    """The command or group name ``args`` run, when only root options come before it;
    None for anything else (`--help`, an option this does not know)."""
    i = 0
    while i < len(args):
        a = args[i]
        if a in _ROOT_VALUE_OPTIONS:
            i += 2
        elif a in _ROOT_FLAGS or a.startswith(("--repo=", "--config=")):
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
    from typer.main import get_command_name
    name = invoked_name(args)
    commands, groups = app.registered_commands, app.registered_groups
    if name is not None and name not in OVERRIDABLE and "_CORALFS_COMPLETE" not in os.environ:
        only_cmd = [c for c in commands if (c.name or get_command_name(c.callback.__name__)) == name]
        only_grp = [g for g in groups if g.name == name]
        if only_cmd or only_grp:
            app.registered_commands, app.registered_groups = only_cmd, only_grp
    try:
        return typer.main.get_command(app)
    finally:
        # Restored before the command runs: `coralfs alias` looks at the whole tree.
        app.registered_commands, app.registered_groups = commands, groups


def main(argv: list[str] | None = None) -> int:
    # Typer's shell-completion handlers (complete_bash, complete_zsh, ...) are registered
    # only on request; the scripts from `coralfs completions` call them.
    from typer._completion_classes import completion_init
    completion_init()
    args = argv if argv is not None else sys.argv[1:]
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
    if len(sys.argv) > 1 and sys.argv[1] not in ("--help", "-h"):
        from ..objects.memory import tune_allocator
        tune_allocator()  # coralfs' own process: buffers reused, not page-faulted again
    sys.exit(main())
