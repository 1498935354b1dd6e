"""gc, fsck, stats, config, alias, completions."""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer

from ..objects.errors import CoralError
from ..staging import pin_legacy_roots
from .app import app
from .common import JsonOpt, err, esc, human, open_repo


@app.command()
def gc(
    ctx: typer.Context,
    prune_age: Annotated[float, typer.Option("--prune-age", help="Spare unreachable objects younger than this many seconds")] = 3600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only report what would be removed")] = False,
) -> None:
    """Remove objects no ref, reflog entry or staging area reaches."""
    repo = open_repo(ctx)
    pin_legacy_roots(repo)  # a damaged one refuses gc, as any damaged root does
    rep = repo.gc(prune_age, dry_run)
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"gc: {verb} {rep.removed} objects ({human(rep.freed)}), kept {rep.kept}")


class FsckFailed(CoralError):
    exit_code = 3


@app.command()
def fsck(ctx: typer.Context,
         remote: Annotated[str | None, typer.Option("--remote", help="Verify this remote instead (every pack, object and ref)")] = None,
         ) -> None:
    """Re-verify every object (SHA-256) and every reference; non-zero exit on damage."""
    if remote is not None:
        return _fsck_remote(ctx, remote)
    repo = open_repo(ctx, tolerate_config=True)
    problems = []
    try:
        pin_legacy_roots(repo)
    except CoralError as e:
        problems.append(str(e))
    rep = repo.fsck()
    problems += rep.problems
    for p in problems:
        err(f"fsck: {p}")
    if problems:
        raise FsckFailed(f"fsck found {len(problems)} problems in {rep.objects} objects (listed above)")
    typer.echo(f"fsck: {rep.objects} objects verified, no problems")


def _fsck_remote(ctx: typer.Context, name: str) -> None:
    from ..remote.sync import open_remote
    from ..remote.verify import fsck_remote
    name, blobs = open_remote(open_repo(ctx), name)
    rep = fsck_remote(blobs)
    for p in rep.problems:
        err(f"fsck: {p}")
    if rep.problems:
        raise FsckFailed(f"fsck --remote {name}: {len(rep.problems)} problems in {rep.objects} objects (listed above)")
    extra = f"; {len(rep.unindexed)} interrupted uploads ignored (the next push removes them)" if rep.unindexed else ""
    typer.echo(f"fsck --remote {esc(name)}: {rep.objects} objects in {rep.packs} packs verified, no problems{extra}")


@app.command()
def stats(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Logical vs stored bytes, ratio, objects by codec."""
    repo = open_repo(ctx)
    s = repo.stats()
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    ratio = f"{s['ratio']:.3f}" if s["ratio"] is not None else "-"
    typer.echo(f"commits {s['commits']}, logical {human(s['logical_bytes'])}, stored {human(s['stored_bytes'])}, "
               f"ratio {ratio}, objects {s['objects']}")
    for k, v in sorted(s["objects_by_codec"].items()):
        typer.echo(f"  {k:<8} {v:>7} objects {human(s['bytes_by_codec'][k]):>10}")


config_app = typer.Typer(help="Read and change the repository config (config.toml), or with --user the "
                         "user's own ($XDG_CONFIG_HOME/coralfs/config.toml).", no_args_is_help=True)
app.add_typer(config_app, name="config")

UserOpt = Annotated[bool, typer.Option("--user", "--global", help="The user's config (~/.config/coralfs/config.toml "
                                       "or $XDG_CONFIG_HOME/coralfs/config.toml), not the repository's")]


def _config(ctx: typer.Context, user: bool):
    from ..objects.config import user_config
    return user_config() if user else open_repo(ctx).config


@config_app.command("get")
def config_get(ctx: typer.Context, key: str, user: UserOpt = False) -> None:
    """Print one value."""
    try:
        typer.echo(esc(_config(ctx, user).get(key)))
    except KeyError:
        raise CoralError(f"config {key} is not set (see `coralfs config list`)") from None


@config_app.command("set")
def config_set(ctx: typer.Context, key: str, value: str, user: UserOpt = False) -> None:
    """Set one value (validated: `coralfs config list` shows the keys, README their ranges)."""
    typer.echo(esc(f"{key} = {_config(ctx, user).set(key, value)}"))


@config_app.command("unset")
def config_unset(ctx: typer.Context, key: str, user: UserOpt = False) -> None:
    """Remove one value (back to its default)."""
    _config(ctx, user).unset(key)


@config_app.command("list")
def config_list(ctx: typer.Context, user: UserOpt = False) -> None:
    """Every value, defaults included."""
    for k, v in _config(ctx, user).items().items():
        typer.echo(esc(f"{k} = {v}"))


@app.command()
def alias(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Alias name")] = None,
    command: Annotated[str | None, typer.Argument(help='What it runs, e.g. "commit -m checkpoint"')] = None,
    delete: Annotated[bool, typer.Option("-d", "--delete", help="Remove the alias")] = False,
) -> None:
    """List, define or remove command aliases (stored in the repo config)."""
    repo = open_repo(ctx)
    if name is None:
        for k, v in repo.config.data.get("alias", {}).items():
            typer.echo(esc(f"{k} = {v}"))
        return
    from .app import app as root_app
    group = typer.main.get_command(root_app)
    if name in group.commands:  # type: ignore[attr-defined]
        raise CoralError(f"{name} is a coralfs command; pick another alias name")
    if delete:
        repo.config.unset(f"alias.{name}")
        typer.echo(f"removed alias {name}")
        return
    if not command:
        raise CoralError(f"give the command for alias {name}, e.g. coralfs alias {name} \"commit -m checkpoint\"")
    first = shlex.split(command)[0]
    if first not in group.commands:  # type: ignore[attr-defined]
        raise CoralError(f"alias {name}: {first!r} is not a coralfs command")
    repo.config.set(f"alias.{name}", command)
    typer.echo(f"alias {name} = {command}")


@app.command()
def completions(shell: Annotated[str, typer.Argument(help="bash, zsh, fish or powershell")]) -> None:
    """Print a shell completion script (completes commands, options, refs and paths)."""
    from typer._completion_shared import get_completion_script
    shells = {"bash": "bash", "zsh": "zsh", "fish": "fish", "powershell": "pwsh", "pwsh": "pwsh"}
    if shell not in shells:
        raise CoralError(f"unknown shell {shell!r}; use bash, zsh, fish or powershell")
    typer.echo(get_completion_script(prog_name="coralfs", complete_var="_CORALFS_COMPLETE", shell=shells[shell]))


