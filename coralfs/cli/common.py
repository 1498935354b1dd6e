"""Shared options, repository discovery, value parsing and output helpers."""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Annotated

import typer

try:  # typer >= 0.26 vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

from ..objects.errors import CoralError

log = logging.getLogger("coralfs")


@dataclass
class State:
    repo_path: str | None = None
    verbose: bool = False


def find_repo_path(explicit: str | None) -> str:
    from ..objects.repository import Repository as R
    if explicit:
        if not os.path.isdir(explicit):
            raise CoralError(f"--repo {explicit}: no such directory")
        return explicit
    env = os.environ.get("CORALFS_REPO")
    if env:
        return env
    return R.discover(".")


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def open_repo(ctx: typer.Context, *, tolerate_config: bool = False):
    from ..api import Repository
    return Repository.open(find_repo_path(state(ctx).repo_path), tolerate_config=tolerate_config)


def complete_ref(ctx: typer.Context, incomplete: str) -> list[str]:
    """Dynamic completion of branch and tag names (and REF:PATH after a colon)."""
    try:
        from ..api import Repository
        root = ctx.find_root()
        repo = Repository.open(find_repo_path(root.params.get("repo")))
        if ":" in incomplete:
            ref, _, prefix = incomplete.partition(":")
            return [f"{ref}:{p}" for p in repo.tree_of(ref).entries if p.startswith(prefix)]
        names = ["HEAD", *repo.branches(), *repo.tags()]
        return [n for n in names if n.startswith(incomplete)]
    except Exception:
        return []


def parse_kv(items: list[str], what: str) -> dict:
    """``k=v`` pairs; values that read as finite numbers become numbers."""
    out: dict = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise CoralError(f"--{what} takes KEY=VALUE, not {it!r}")
        val: object = v
        try:
            num = float(v)
            if math.isfinite(num):
                val = int(v) if v.lstrip("-").isdigit() else num
        except ValueError:
            pass
        out[k] = val
    return out


def human(n: int | float | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


__all__ = ["click"]  # the click that typer runs on, for app.py and main.py


def err(msg: str) -> None:
    typer.echo(msg, err=True)


def is_tty() -> bool:
    return sys.stderr.isatty()


RefArg = Annotated[str, typer.Argument(help="Commit id or short id, branch, tag, REF~N, REF^", autocompletion=complete_ref)]
MessageOpt = Annotated[str | None, typer.Option("--message", "-m", help="Commit message")]
BranchOpt = Annotated[str | None, typer.Option("--branch", "-b", help="Branch to commit on (default: HEAD's)")]
AuthorOpt = Annotated[str | None, typer.Option("--author", help="Author (default: user.name or user@host)")]
MetricOpt = Annotated[list[str] | None, typer.Option("--metric", help="KEY=VALUE metric recorded in metadata (repeatable)")]
MetaOpt = Annotated[list[str] | None, typer.Option("--meta", help="KEY=VALUE metadata (repeatable)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
