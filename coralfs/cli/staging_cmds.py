"""stash (push, pop, list); the staging side of commit and status lives with them."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated

import typer

from ..objects.errors import CoralError
from .app import app
from .common import JsonOpt, esc, open_repo

if TYPE_CHECKING:
    from ..objects.repository import Repository


def control(mountpoint: str, req: dict) -> dict:
    """Send ``req`` to the writable mount at ``mountpoint``; its error becomes ours."""
    from ..api import _mount_request
    return _mount_request(mountpoint, req)


def print_changes(changes: list[dict]) -> None:
    marks = {"added": "A", "modified": "M", "deleted": "D"}
    for c in changes:
        # An empty directory ends in "/", a symbolic link shows its target.
        name = esc(c["path"]) + ("/" if c.get("kind") == "d" else "")
        if c.get("kind") == "l" and c.get("target") is not None:
            name += f" -> {esc(c['target'])}"
        typer.echo(f"  {marks.get(c['status'], '?')} {name}")


MountOpt = Annotated[str | None, typer.Option("--mount", help="A writable mount (its daemon does it)")]
StashBranchOpt = Annotated[str | None, typer.Option("--branch", "-b", help="Branch whose staging area (default: HEAD's)")]

stash_app = typer.Typer(help="`coralfs stash` sets a branch's staged changes aside (the writable mount then shows "
                             "the branch head); `stash pop` brings them back; `stash list` lists them.",
                        invoke_without_command=True)
app.add_typer(stash_app, name="stash")


def _branch(repo: Repository, branch: str | None) -> str:
    b = branch or repo.head_branch()
    if b is None:
        raise CoralError("HEAD is detached: name the branch with --branch B")
    return b


def _offline(ctx: typer.Context, branch: str | None):
    from ..staging import StagingArea
    repo = open_repo(ctx)
    return repo, StagingArea.open(repo, _branch(repo, branch))


@stash_app.callback()
def stash(ctx: typer.Context, message: Annotated[str | None, typer.Option("--message", "-m", help="What the stash holds")] = None,
          mount: MountOpt = None, branch: StashBranchOpt = None) -> None:
    """Move the staged changes into a new stash (the mount then shows the branch head)."""
    if ctx.invoked_subcommand is not None:
        return
    if mount:
        got = control(mount, {"op": "stash", "message": message or ""})
        typer.echo(f"stashed as stash@{{{got['stash']}}}")
        return
    repo, st = _offline(ctx, branch)
    try:
        n = st.stash(message or "")
    finally:
        st.close()
        repo.close()
    typer.echo(f"stashed as stash@{{{n}}}")


@stash_app.command("pop")
def stash_pop(ctx: typer.Context, index: Annotated[int | None, typer.Argument(help="Which stash (default: the newest)")] = None,
              mount: MountOpt = None, branch: StashBranchOpt = None) -> None:
    """Apply a stash to the staging area and drop it."""
    if mount:
        got = control(mount, {"op": "stash-pop", "index": index})
    else:
        repo, st = _offline(ctx, branch)
        try:
            got = st.stash_pop(index)
        finally:
            st.close()
            repo.close()
    typer.echo(f"applied stash@{{{got.get('index', got.get('stash'))}}}:")
    print_changes(got["changes"])


@stash_app.command("list")
def stash_list(ctx: typer.Context, branch: StashBranchOpt = None, as_json: JsonOpt = False) -> None:
    """The stashes of a branch, newest first."""
    from ..staging import list_stashes
    repo = open_repo(ctx)
    items = list_stashes(repo, _branch(repo, branch))
    if as_json:
        typer.echo(json.dumps(items, indent=1))
        return
    if not items:
        typer.echo("no stashes")
    for s in items:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["time"]))
        typer.echo(f"stash@{{{s['index']}}}  {when}  {len(s['changes'])} change(s)  {esc(s['message'])}")
