"""browse (alias ui): the interactive browser of coralfs.tui."""

from __future__ import annotations

from typing import Annotated

import typer

from ..objects.errors import CoralError
from .app import app
from .common import complete_ref, open_repo

RefOpt = Annotated[str | None, typer.Option("--ref", help="Where the history starts (default: HEAD)",
                                            autocompletion=complete_ref)]
MountOpt = Annotated[str | None, typer.Option("--mount", help="A writable mount: show its staged changes, stash/pop them")]


def _browse(ctx: typer.Context, ref: str | None, mount: str | None) -> None:
    try:
        import textual  # noqa: F401
    except ImportError:
        raise CoralError("the browser needs textual: pip install 'coralfs[tui]'") from None
    from ..tui import Browser, run
    repo = open_repo(ctx)
    # Everything that can be wrong (the ref, the mount) fails here, as one line, before
    # the screen is taken over.
    browser = Browser(repo, ref, mount)
    try:
        run(browser)
    finally:
        repo.close()


@app.command()
def browse(ctx: typer.Context, ref: RefOpt = None, mount: MountOpt = None) -> None:
    """Browse refs, commits, files and tensors (statistics, histograms), compare commits
    (per-layer bars, heatmaps), search history, stash/pop a writable mount's changes."""
    _browse(ctx, ref, mount)


@app.command("ui")
def ui(ctx: typer.Context, ref: RefOpt = None, mount: MountOpt = None) -> None:
    """The same as `coralfs browse`."""
    _browse(ctx, ref, mount)
