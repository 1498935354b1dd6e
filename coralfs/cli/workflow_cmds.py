"""release, releases: semantic-version tags (coralfs.workflow.releases)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from ..objects.errors import CoralError
from ..objects.ids import short
from .app import app
from .common import JsonOpt, complete_ref, esc, first_line, open_repo


@app.command()
def release(
    ctx: typer.Context,
    part: Annotated[str | None, typer.Argument(help="What to bump: major, minor, patch, or auto (what --suggest says)",
                                               metavar="major|minor|patch|auto")] = None,
    ref: Annotated[str, typer.Argument(help="Commit to release (default HEAD)", autocompletion=complete_ref)] = "HEAD",
    pre: Annotated[str | None, typer.Option("--pre", help="Pre-release LABEL: vX.Y.Z-LABEL.N, N counting up")] = None,
    build: Annotated[str | None, typer.Option("--build", help="Build metadata: vX.Y.Z+META (no effect on ordering)")] = None,
    message: Annotated[str, typer.Option("-m", "--message", help="Release message (default 'Release vX.Y.Z')")] = "",
    suggest: Annotated[bool, typer.Option("--suggest", help="Print the bump the weights ask for (and why); tag nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tag a commit as the next semantic version (an annotated tag that is never moved).

    --suggest derives the bump from the weights since the last release: tensors removed
    or their dtype/shape changed -> major; tensors added -> minor; values only -> patch."""
    from ..workflow import releases as rel
    repo = open_repo(ctx)
    if suggest:
        if part is not None and part not in ("major", "minor", "patch", "auto"):
            ref, part = part, None   # `release --suggest REF`
        if part is not None:
            raise CoralError("--suggest takes a REF, not a part: coralfs release --suggest [REF]")
        base, s = rel.suggest(repo, ref)
        if as_json:
            typer.echo(json.dumps(dict(s.to_json(), since=base.tag if base else None), indent=2))
            return
        since = f"since {esc(base.tag)}" if base else "(no earlier release)"
        if s.part is None:
            typer.echo(f"nothing changed {since}: no release needed")
            return
        typer.echo(f"suggested: {s.part} {since}")
        for reason in s.reasons:
            typer.echo(f"  {esc(reason)}")
        return
    if part is None:
        raise CoralError("say what to bump: coralfs release major|minor|patch|auto (or --suggest to see which)")
    r = rel.create_release(repo, part, ref, pre=pre, build=build, message=message)
    typer.echo(f"Released {short(r.commit)} as {esc(r.tag)}")


@app.command()
def changelog(
    ctx: typer.Context,
    spec: Annotated[str | None, typer.Argument(help="FROM..TO, or FROM (to HEAD); default: since the last release",
                                               metavar="[FROM..TO]")] = None,
    fmt: Annotated[str, typer.Option("--format", help="md or json")] = "md",
) -> None:
    """What changed between releases: commits, metrics before/after, changes per layer."""
    from ..workflow.changelog import changelog as make
    from ..workflow.changelog import to_markdown
    if fmt not in ("md", "json"):
        raise CoralError(f"--format {fmt!r}: use md or json")
    cl = make(open_repo(ctx), spec)
    typer.echo(json.dumps(cl.to_json(), indent=2) if fmt == "json" else to_markdown(cl, esc), nl=fmt == "json")


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
        metrics = "  [" + ", ".join(esc(f"{k}={v}") for k, v in r.metrics.items()) + "]" if r.metrics else ""
        typer.echo(f"{esc(r.tag):<24} {short(r.commit)} {when} {first_line(r.message)}{metrics}")
