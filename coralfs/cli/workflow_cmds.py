"""release, releases: semantic-version tags (coralfs.workflow.releases)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from ..objects.ids import short
from .app import app
from .common import JsonOpt, complete_ref, esc, first_line, open_repo


@app.command()
def release(
    ctx: typer.Context,
    part: Annotated[str, typer.Argument(help="What to bump: major, minor or patch", metavar="major|minor|patch")],
    ref: Annotated[str, typer.Argument(help="Commit to release (default HEAD)", autocompletion=complete_ref)] = "HEAD",
    pre: Annotated[str | None, typer.Option("--pre", help="Pre-release LABEL: vX.Y.Z-LABEL.N, N counting up")] = None,
    build: Annotated[str | None, typer.Option("--build", help="Build metadata: vX.Y.Z+META (no effect on ordering)")] = None,
    message: Annotated[str, typer.Option("-m", "--message", help="Release message (default 'Release vX.Y.Z')")] = "",
) -> None:
    """Tag a commit as the next semantic version (an annotated tag that is never moved)."""
    from ..workflow.releases import create_release
    r = create_release(open_repo(ctx), part, ref, pre=pre, build=build, message=message)
    typer.echo(f"Released {short(r.commit)} as {esc(r.tag)}")


@app.command()
def releases(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List release tags (vX.Y.Z...) in semantic-version order, lowest first."""
    from ..workflow.releases import list_releases
    rs = list_releases(open_repo(ctx))
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rs], indent=2))
        return
    for r in rs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.time))
        typer.echo(f"{esc(r.tag):<24} {short(r.commit)} {when} {first_line(r.message)}")
