"""mount, umount, mounts."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import app
from .common import JsonOpt


@app.command()
def mount(
    ctx: typer.Context,
    repo: Annotated[str, typer.Argument(help="Repository path")],
    target: Annotated[str, typer.Argument(help="MOUNTPOINT or MOUNTPOINT@REF (commit, branch, tag, REF~N)")],
    foreground: Annotated[bool, typer.Option("--foreground", "-f", help="Stay attached until unmounted")] = False,
    include: Annotated[list[str] | None, typer.Option("--include", help="Only tensors matching this glob (repeatable)")] = None,
    cache_size: Annotated[str | None, typer.Option("--cache-size", help="Decoded-chunk cache budget, e.g. 512m, 2g")] = None,
    log_file: Annotated[str | None, typer.Option("--log", help="Daemon log file")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Decoding threads")] = 2,
) -> None:
    """Mount a commit, branch or tag (MNT@REF) read-only, or the whole repository (MNT)."""
    from ..fs.daemon import MountSpec, mount as do_mount, split_target
    from ..objects.config import _parse_value
    mp, ref = split_target(target)
    size = _parse_value("--cache-size", cache_size, int) if cache_size else None
    spec = MountSpec(repo=repo, mountpoint=mp, ref=ref, include=include or None, cache_size=size,
                     log_file=log_file, threads=threads)
    spec = do_mount(spec, foreground=foreground)
    if not foreground:
        what = f"{ref} ({spec.commit[:12]})" if ref else "repository"
        typer.echo(f"mounted {what} at {spec.mountpoint} (pid {spec.pid}, log {spec.log_file})")


@app.command()
def umount(
    mountpoint: Annotated[str, typer.Argument(help="Where it is mounted")],
    lazy: Annotated[bool, typer.Option("--lazy", "-z", help="Detach now even if busy")] = False,
) -> None:
    """Unmount a coralfs mount (also one whose daemon was killed)."""
    from ..fs.daemon import unmount
    unmount(mountpoint, lazy=lazy)
    typer.echo(f"unmounted {mountpoint}")


@app.command()
def mounts(as_json: JsonOpt = False) -> None:
    """List active coralfs mounts."""
    from ..fs.daemon import list_mounts
    ms = list_mounts()
    if as_json:
        typer.echo(json.dumps(ms, indent=2))
        return
    if not ms:
        typer.echo("no coralfs mounts")
    for m in ms:
        ref = m.get("ref") or "(repository)"
        commit = (m.get("commit") or "")[:12]
        status = "" if m.get("alive", True) else "  [daemon dead: coralfs umount it]"
        typer.echo(f"{m['mountpoint']}  {ref} {commit}  repo {m.get('repo', '?')}  pid {m.get('pid', '?')}{status}")


