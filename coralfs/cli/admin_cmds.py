"""gc, fsck, stats, config, alias, completions."""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer

from ..objects.errors import CoralError
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
    from ..staging import pin_legacy_roots
    pin_legacy_roots(repo)  # a damaged one refuses gc, as any damaged root does
    rep = repo.gc(prune_age, dry_run)
    verb = "would remove" if dry_run else "removed"
    temps = f"; {verb} {rep.temps} temp files of killed writers ({human(rep.temps_freed)})" if rep.temps else ""
    typer.echo(f"gc: {verb} {rep.removed} objects ({human(rep.freed)}), kept {rep.kept}{temps}")


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
        from ..staging import pin_legacy_roots
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
    from ..remote.graph import naming, open_remote
    from ..remote.verify import fsck_remote
    name, blobs = open_remote(open_repo(ctx), name)
    with naming(name):
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
    s["materialized"] = _materialized(repo.path)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    ratio = f"{s['ratio']:.3f}" if s["ratio"] is not None else "-"
    typer.echo(f"commits {s['commits']}, logical {human(s['logical_bytes'])}, stored {human(s['stored_bytes'])}, "
               f"ratio {ratio}, objects {s['objects']}")
    for k, v in sorted(s["objects_by_codec"].items()):
        typer.echo(f"  {k:<8} {v:>7} objects {human(s['bytes_by_codec'][k]):>10}")
    m = s["materialized"]
    if m is not None:
        typer.echo(f"materialization cache {esc(m['dir'])}: {m['entries']} entries, {human(m['bytes'])} "
                   "(`coralfs cache ls`)")


def _materialized(repo_path: str) -> dict | None:
    """The repository's own materialization cache (None if no mount made one)."""
    import os

    from ..fs.materialize import MaterializedCache, materialized_dir
    root = materialized_dir(None, repo_path)
    if not os.path.isdir(root):
        return None
    try:
        cache = MaterializedCache(root)
    except OSError:
        return None
    try:
        entries = cache.entries(sweep=False)
    finally:
        cache.close()
    return {"dir": root, "entries": len(entries), "bytes": sum(e.size for e in entries)}


config_app = typer.Typer(help="Read and change the repository config (config.toml), or with --user the "
                         "user's own ($XDG_CONFIG_HOME/coralfs/config.toml).", no_args_is_help=True)
app.add_typer(config_app, name="config")

UserOpt = Annotated[bool, typer.Option("--user", "--global", help="The user's config (~/.config/coralfs/config.toml "
                                       "or $XDG_CONFIG_HOME/coralfs/config.toml), not the repository's")]


ProfileOpt = Annotated[str | None, typer.Option("--profile", help="A profile of the repository (REPO/profiles/NAME.toml)")]


def _config(ctx: typer.Context, user: bool, profile: str | None = None):
    from ..objects.config import load_profile, user_config
    if user and profile:
        raise CoralError("--user and --profile name two different files: give one")
    if user:
        return user_config()
    if profile:
        return load_profile(open_repo(ctx).path, profile)
    return open_repo(ctx).config


@config_app.command("get")
def config_get(ctx: typer.Context, key: str, user: UserOpt = False, profile: ProfileOpt = None) -> None:
    """Print one value (for the repository: the value in effect; `config explain` says why)."""
    try:
        typer.echo(esc(_config(ctx, user, profile).get(key)))
    except KeyError:
        raise CoralError(f"config {key} is not set (see `coralfs config list`)") from None


@config_app.command("set")
def config_set(ctx: typer.Context, key: str, value: str, user: UserOpt = False, profile: ProfileOpt = None) -> None:
    """Set one value (validated: `coralfs config list` shows the keys, README their ranges)."""
    typer.echo(esc(f"{key} = {_config(ctx, user, profile).set(key, value)}"))


@config_app.command("unset")
def config_unset(ctx: typer.Context, key: str, user: UserOpt = False, profile: ProfileOpt = None) -> None:
    """Remove one value (back to its default)."""
    _config(ctx, user, profile).unset(key)


@config_app.command("list")
def config_list(ctx: typer.Context, user: UserOpt = False, profile: ProfileOpt = None) -> None:
    """Every value, defaults included (for the repository: the values in effect)."""
    for k, v in _config(ctx, user, profile).items().items():
        typer.echo(esc(f"{k} = {v}"))


@config_app.command("explain")
def config_explain(ctx: typer.Context, key: str, as_json: JsonOpt = False) -> None:
    """Every scope a value is looked up in (default < user < repository < profile <
    environment < command line), what each sets and which one wins."""
    chain = open_repo(ctx).config.explain(key)
    winner = max((i for i, (_, has, _) in enumerate(chain) if has), default=None)
    if as_json:
        typer.echo(json.dumps([{"scope": layer.scope, "source": layer.source, "set": has, "value": value,
                                "wins": i == winner} for i, (layer, has, value) in enumerate(chain)], indent=2))
        return
    if winner is None:
        typer.echo(esc(f"{key} is not set in any scope"))
    else:
        layer, _, value = chain[winner]
        typer.echo(esc(f"{key} = {value}  (from {layer.scope})"))
    for i, (layer, has, value) in enumerate(chain):
        shown = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else value
        mark = "  <- wins" if i == winner else ""
        typer.echo(esc(f"  {layer.scope:<16} {shown if has else '-':<14} {layer.source}{mark}"))


profile_app = typer.Typer(help="Configuration profiles: named sets of settings (storage, mounts, remotes, "
                               "auto-commit) above the repository's config, chosen by `profile use` or "
                               "$CORALFS_PROFILE.", no_args_is_help=True)
config_app.add_typer(profile_app, name="profile")


@profile_app.command("create")
def profile_create(ctx: typer.Context, name: str,
                   source: Annotated[str | None, typer.Option("--from", help="Start as a copy of this profile")] = None) -> None:
    """A new profile (empty, or a copy of --from); set its values with `config set --profile NAME`."""
    from ..objects.config import create_profile
    p = create_profile(open_repo(ctx).path, name, source)
    typer.echo(esc(f"Created profile {name} ({p.path})"))


@profile_app.command("use")
def profile_use(ctx: typer.Context,
                name: Annotated[str | None, typer.Argument(help="Profile to use (omit with --none)")] = None,
                none: Annotated[bool, typer.Option("--none", help="Use no profile")] = False) -> None:
    """Make a profile the repository's active one ($CORALFS_PROFILE still overrides it)."""
    from ..objects.config import load_profile
    repo = open_repo(ctx)
    if none == (name is not None):
        raise CoralError("give a profile name, or --none for no profile")
    if name is None:
        if "core.profile" in repo.config.flat():
            repo.config.unset("core.profile")
        typer.echo("No profile in use")
        return
    load_profile(repo.path, name)   # refuses a missing one
    repo.config.set("core.profile", name)
    typer.echo(esc(f"Using profile {name}"))


@profile_app.command("list")
def profile_list(ctx: typer.Context) -> None:
    """The repository's profiles; * marks the one in use."""
    from ..objects.config import active_profile, profile_names
    repo = open_repo(ctx)
    active, _ = active_profile(repo.config)
    for n in profile_names(repo.path):
        typer.echo(esc(f"{'*' if n == active else ' '} {n}"))


@profile_app.command("show")
def profile_show(ctx: typer.Context, name: Annotated[str | None, typer.Argument(help="Profile (default: the one in use)")] = None,
                 as_json: JsonOpt = False) -> None:
    """A profile's own values."""
    from ..objects.config import active_profile, load_profile
    repo = open_repo(ctx)
    name = name or active_profile(repo.config)[0]
    if not name:
        raise CoralError("no profile in use: name one (`coralfs config profile list` shows them)")
    values = load_profile(repo.path, name).flat()
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    typer.echo(esc(f"profile {name}"))
    for k, v in sorted(values.items()):
        typer.echo(esc(f"  {k} = {v}"))


@profile_app.command("export")
def profile_export(ctx: typer.Context, name: str) -> None:
    """Print a profile as TOML (`> prod.toml`; `profile import` reads it back)."""
    from ..objects.config import export_profile
    typer.echo(export_profile(open_repo(ctx).path, name), nl=False)


@profile_app.command("import")
def profile_import(ctx: typer.Context, path: str,
                   name: Annotated[str | None, typer.Option("--name", help="Profile name (default: the file's name)")] = None,
                   force: Annotated[bool, typer.Option("--force", help="Replace a profile of that name")] = False) -> None:
    """Add a profile from a TOML file (checked like any profile: no secrets, known keys)."""
    from ..objects.config import import_profile
    n = import_profile(open_repo(ctx).path, path, name, force=force)
    typer.echo(esc(f"Imported profile {n}"))


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
    from .app import OVERRIDABLE
    from .app import app as root_app
    group = typer.main.get_command(root_app)
    if name in group.commands and name not in OVERRIDABLE:  # type: ignore[attr-defined]
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


