"""Shared options, repository discovery, value parsing and output helpers."""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

try:  # typer >= 0.26 vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

from ..objects.errors import CoralError

if TYPE_CHECKING:
    from ..objects.repository import Repository

log = logging.getLogger("coralfs")


# The command line as typed (set by coralfs.cli.main.main; None when the app is invoked
# another way, e.g. by a test runner).
COMMAND_LINE: list[str] | None = None


@dataclass
class State:
    repo_path: str | None = None
    verbose: bool = False
    overrides: dict = field(default_factory=dict)   # -c KEY=VALUE


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


def open_repo(ctx: typer.Context, *, tolerate_config: bool = False) -> Repository:
    from ..objects.repository import Repository  # not ..api: that imports the format layer and numpy
    st = state(ctx)
    return Repository.open(find_repo_path(st.repo_path), tolerate_config=tolerate_config, overrides=st.overrides)


def complete_ref(ctx: typer.Context, incomplete: str) -> list[str]:
    """Dynamic completion of branch and tag names (and REF:PATH after a colon)."""
    try:
        from ..objects.repository import Repository
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


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def esc(text: object) -> str:
    """``text`` safe to print on a terminal, on one line: every character Python deems
    non-printable (C0 and C1 controls such as ESC, newline, CR, DEL, Unicode separators,
    bidi overrides, unassigned code points) becomes ``\\n``/``\\xNN``/``\\uNNNN``, and a
    byte that was not UTF-8 (a surrogateescape'd file name) becomes ``\\xNN``. Names from
    a repository (paths, tensor names, refs, authors, one-line messages) and error messages
    go through here before the CLI prints them; JSON output escapes by itself."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
            continue
        o = ord(c)
        if c in _NAMED:
            out.append(_NAMED[c])
        elif 0xDC80 <= o <= 0xDCFF:  # surrogateescape: the original byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out)


def first_line(message: str | None) -> str:
    """The first line of a commit or stash message, escaped."""
    return esc(message.splitlines()[0]) if message else ""


def err(msg: str) -> None:
    typer.echo(esc(msg), err=True)


def is_tty() -> bool:
    return sys.stderr.isatty()


RefArg = Annotated[str, typer.Argument(help="Commit id or short id, branch, tag, REF~N, REF^", autocompletion=complete_ref)]
MessageOpt = Annotated[str | None, typer.Option("--message", "-m", help="Commit message")]
BranchOpt = Annotated[str | None, typer.Option("--branch", "-b", help="Branch to commit on (default: HEAD's)")]
AuthorOpt = Annotated[str | None, typer.Option("--author", help="Author (default: user.name or user@host)")]
MetricOpt = Annotated[list[str] | None, typer.Option("--metric", help="KEY=VALUE metric recorded in metadata (repeatable)")]
MetaOpt = Annotated[list[str] | None, typer.Option("--meta", help="KEY=VALUE metadata (repeatable)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
