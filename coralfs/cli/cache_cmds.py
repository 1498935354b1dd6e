"""cache ls, cache prune, cache clear: the materialization cache of mounts."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..objects.errors import CoralError
from .app import app
from .common import JsonOpt, esc, human, open_repo

cache_app = typer.Typer(help="The materialization cache of mounts: decoded chunks kept on local disk, "
                        "reused by every later mount (REPO/cache/materialized unless --cache-dir).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")

CacheDirOpt = Annotated[str | None, typer.Option("--cache-dir", help="The cache a mount's --cache-dir named "
                                                 "(default REPO/cache)")]


def _cache(ctx: typer.Context, cache_dir: str | None, budget: int | None = None):
    from ..fs.materialize import DEFAULT_SIZE, MaterializedCache, materialized_dir
    root = materialized_dir(cache_dir, None if cache_dir else open_repo(ctx).path)
    try:
        return MaterializedCache(root, budget or DEFAULT_SIZE)
    except OSError as e:
        raise CoralError(f"cannot open the cache {root}: {e.strerror or e}") from None


def _size(option: str, text: str | None) -> int | None:
    from ..objects.config import _parse_value
    return _parse_value(option, text, int) if text is not None else None


@cache_app.command("ls")
def cache_ls(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="Also show how much of each file of this commit is materialized")] = None,
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the cache holds: entries and bytes; with REF, each file's materialized share."""
    from ..fs.materialize import coverage, segment_chunks
    cache = _cache(ctx, cache_dir)
    try:
        entries = cache.entries()
        out: dict = {"dir": cache.root, "entries": len(entries), "bytes": sum(e.size for e in entries),
                     "oldest_use": min((e.mtime for e in entries), default=None)}
        if ref is not None:
            repo = open_repo(ctx)
            tree = repo.tree_of(ref)
            files = []
            for path, e in sorted(tree.entries.items()):
                if e.is_dir or e.is_symlink:
                    continue
                f = repo.read_file(e.file)
                have, total = coverage(cache, (c for seg in f.segments for c in segment_chunks(repo.odb, seg)))
                files.append({"path": path, "bytes": total, "materialized_bytes": have})
            out["ref"], out["files"] = ref, files
    finally:
        cache.close()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{esc(out['dir'])}: {out['entries']} entries, {human(out['bytes'])}")
    for f in out.get("files", []):
        share = f"{100 * f['materialized_bytes'] / f['bytes']:.0f}%" if f["bytes"] else "-"
        typer.echo(f"  {share:>5}  {human(f['materialized_bytes']):>10} of {human(f['bytes']):>10}  {esc(f['path'])}")


@cache_app.command("prune")
def cache_prune(
    ctx: typer.Context,
    size: Annotated[str | None, typer.Option("--size", help="Remove least recently used entries down to this size, "
                                             "e.g. 2g (default: 90% of 16g)")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Also read every entry and remove damaged ones")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Shrink the cache (safe while mounts use it: they decode what they miss again), and
    remove temp files left by killed mounts."""
    target = _size("--size", size)
    if target is not None and target < 0:
        raise CoralError("--size takes a size >= 0, e.g. 2g")
    cache = _cache(ctx, cache_dir)
    try:
        checked = damaged = 0
        if verify:
            checked, damaged = cache.verify()
        removed, used = cache.prune(target)
    finally:
        cache.close()
    extra = f"; {checked} entries checked, {damaged} damaged removed" if verify else ""
    typer.echo(f"removed {removed} entries; {human(used)} in use{extra}")


@cache_app.command("clear")
def cache_clear(ctx: typer.Context, cache_dir: CacheDirOpt = None) -> None:
    """Remove every entry (mounts using the cache decode again)."""
    cache = _cache(ctx, cache_dir)
    try:
        n = cache.clear()
    finally:
        cache.close()
    typer.echo(f"removed {n} entries from {esc(cache.root)}")
