"""Entry point: ``coralfs`` and ``python -m coralfs``."""

from __future__ import annotations

import io
import sys

import typer

from . import admin_cmds, experiment_cmds, mount_cmds, ref_cmds, remote_cmds, repo_cmds, staging_cmds, workflow_cmds  # noqa: F401  (importing registers the commands)
from .app import app
from .common import click, esc


def main(argv: list[str] | None = None) -> int:
    # Typer's shell-completion handlers (complete_bash, complete_zsh, ...) are registered
    # only on request; the scripts from `coralfs completions` call them.
    from typer._completion_classes import completion_init
    completion_init()
    cmd = typer.main.get_command(app)
    try:
        rc = cmd.main(args=argv if argv is not None else sys.argv[1:], prog_name="coralfs",
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
    sys.exit(main())
