"""`coralfs browse` (alias `coralfs ui`): the textual browser of a repository. It reads
through the api, takes its numbers from coralfs.analysis and its drawings from
coralfs.render; only the CLI imports it (textual is the optional ``tui`` extra)."""

from __future__ import annotations

from .data import Browser

__all__ = ["Browser", "run"]


def run(browser: Browser) -> None:
    """Run the browser on the terminal until the user quits."""
    from .app import BrowserApp
    BrowserApp(browser).run()
