"""mount, umount, mounts."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated

import typer

from .app import app
from .common import JsonOpt, esc


@app.command()
def mount(
    ctx: typer.Context,
    repo: Annotated[str, typer.Argument(help="Repository path, or a remote's URL (s3://, gs://, az://, file:///)")],
    target: Annotated[str, typer.Argument(help="MOUNTPOINT or MOUNTPOINT@REF (commit, branch, tag, REF~N)")],
    foreground: Annotated[bool, typer.Option("--foreground", "-f", help="Stay attached until unmounted")] = False,
    include: Annotated[list[str] | None, typer.Option("--include", help="Only tensors matching this glob (repeatable)")] = None,
    cache_size: Annotated[str | None, typer.Option("--cache-size", help="Decoded-chunk cache budget, e.g. 512m, 2g; of a remote "
                                                                         "mount: its local chunk cache on disk (default 10g)")] = None,
    log_file: Annotated[str | None, typer.Option("--log", help="Daemon log file")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="Decoding threads (default: config mount.threads, 2)")] = None,
    write: Annotated[bool, typer.Option("--write", "-w", help="A writable staging mount of a branch")] = False,
    branch: Annotated[str | None, typer.Option("--branch", "-b",
                                               help="Branch a writable mount shows and commits to (default: HEAD's)")] = None,
    auto_commit: Annotated[float | None, typer.Option("--auto-commit", metavar="SECONDS",
                                                      help="With --write: commit once nothing was written for SECONDS (rules: `coralfs "
                                                           "config list staging`)")] = None,
    allow_other: Annotated[bool | None, typer.Option("--allow-other/--no-allow-other",
                                                     help="Let other local users in, as the files' modes allow (default: config "
                                                          "mount.allow_other, only you); control requests stay yours")] = None,
    remote: Annotated[str | None, typer.Option("--remote", help="Mount MNT@REF of this remote of REPO (`coralfs remote add`), "
                                                                "served from its object store")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="A remote's service URL (emulators, S3-compatible stores)")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="A remote's credentials profile (~/.aws ...)")] = None,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Local caches: materialized chunks (DIR/materialized; "
                                                                      "default REPO/cache, or $XDG_CACHE_HOME/coralfs for "
                                                                      "remotes) and a remote's chunk cache")] = None,
    materialize_size: Annotated[str | None, typer.Option("--materialize-size",
                                                         help="Bound of the materialization cache of decoded chunks on disk, "
                                                              "e.g. 20g (default 16g; 0 turns it off)")] = None,
    prefetch: Annotated[list[str] | None, typer.Option("--prefetch", metavar="all|GLOB",
                                                       help="After mounting, materialize the whole commit (all) or the files "
                                                            "and tensors matching GLOB in the background (repeatable; "
                                                            "progress in .coral/stats.json)")] = None,
    read_ahead_kb: Annotated[int | None, typer.Option("--read-ahead-kb", metavar="KB",
                                                      help="Read-only mounts: the kernel's readahead for this mount (root "
                                                           "only; default: the kernel's)")] = None,
    max_background: Annotated[int | None, typer.Option("--max-background", metavar="N",
                                                       help="Read-only mounts: FUSE requests the kernel keeps in flight "
                                                            "in the background (root and fusectl only; default: the kernel's)")] = None,
    fetch_timeout: Annotated[float | None, typer.Option("--fetch-timeout", metavar="SECONDS",
                                                        help="Remote mounts: how long a read may wait for the store, retries "
                                                             "included, before it fails with EIO (default 30)")] = None,
) -> None:
    """Mount a commit, branch or tag (MNT@REF) read-only, the whole repository (MNT), or a
    branch writable (MNT --write [--branch B]) so trainers can save into it. A remote's
    commit mounts read-only too (URL MNT@REF, or --remote NAME REPO MNT@REF), fetching only
    the chunks that reads touch into a local cache."""
    from ..fs.lifecycle import MountError, MountSpec, split_target
    from ..fs.lifecycle import mount as do_mount
    from ..objects.config import _parse_value
    from ..remote.graph import naming
    mp, ref = split_target(target)
    if not write and (branch is not None or auto_commit is not None):
        raise MountError("--branch and --auto-commit belong to writable mounts: add --write "
                         "(a read-only mount of a branch is MNT@BRANCH)")
    size = _parse_value("--cache-size", cache_size, int) if cache_size else None
    url = remote_url(repo, remote) if remote is not None else (repo if "://" in repo else None)
    if url is None and (endpoint or profile or fetch_timeout is not None):
        raise MountError("--endpoint, --profile and --fetch-timeout belong to remote mounts: "
                         "mount a URL or add --remote NAME")
    msize = _parse_value("--materialize-size", materialize_size, int) if materialize_size else None
    if remote is not None:
        endpoint = endpoint or remote_field(repo, remote, "endpoint")
        profile = profile or remote_field(repo, remote, "profile")
    # What the command line leaves out comes from the mount.* settings (defaults < user <
    # repository < profile < environment < -c): a URL alone has only the user's scopes.
    cfg = _mount_settings(ctx, None if "://" in repo else repo)
    threads = threads if threads is not None else int(cfg.get("mount.threads"))
    allow_other = allow_other if allow_other is not None else bool(cfg.get("mount.allow_other"))
    if write and auto_commit is None and cfg.get("mount.auto_commit"):
        auto_commit = float(cfg.get("mount.auto_commit"))
    if url is None and size is None and cfg.get("mount.cache_size"):
        size = int(cfg.get("mount.cache_size"))
    if url is not None:
        size = size if size is not None else int(cfg.get("mount.remote_cache_size"))
        cache_dir = cache_dir or cfg.get("mount.cache_dir") or None
        fetch_timeout = fetch_timeout if fetch_timeout is not None else float(cfg.get("mount.fetch_timeout"))
    # --cache-size bounds the decoded-chunk cache of a local mount, the chunk cache on disk
    # of a remote one (whose decoded-chunk cache keeps the repository's cache.size).
    spec = MountSpec(repo=repo, mountpoint=mp, ref=ref, include=include or None,
                     cache_size=size if url is None else None, log_file=log_file, threads=threads, write=write,
                     branch=branch, auto_commit=auto_commit, allow_other=allow_other, remote=url, endpoint=endpoint,
                     profile=profile, cache_dir=cache_dir, remote_cache_size=size if url is not None else None,
                     fetch_timeout=fetch_timeout, materialize_size=msize, prefetch=prefetch or None,
                     read_ahead_kb=read_ahead_kb, max_background=max_background)
    # What the remote answers names the configured remote, as push's and fetch's errors do.
    with naming(remote) if remote is not None else contextlib.nullcontext():
        spec = do_mount(spec, foreground=foreground)
    if not foreground:
        if write:
            what = f"branch {esc(spec.branch)} ({spec.commit[:12] if spec.commit else 'no commits yet'}), writable"
        else:
            what = f"{esc(ref)} ({spec.commit[:12]})" if ref else "repository"
            if url is not None:
                what += f" of {esc(url)}"
        typer.echo(f"mounted {what} at {esc(spec.mountpoint)} (pid {spec.pid}, log {esc(spec.log_file)})")


def _mount_settings(ctx: typer.Context, repo: str | None):
    """The settings in effect for a mount of ``repo`` (None: a remote's URL)."""
    from ..objects.config import settings
    from ..objects.repository import Repository
    from .common import state
    return settings(Repository.discover(repo) if repo is not None else None, state(ctx).overrides)


def _remote_entry(repo: str, name: str) -> dict:
    """The fields of remote NAME in REPO's config.toml (url, endpoint, profile), read as TOML."""
    import os
    import tomllib

    from ..fs.lifecycle import MountError
    from ..objects.repository import Repository
    path = os.path.join(Repository.discover(repo), "config.toml")
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise MountError(f"cannot read {path}: {e}") from None
    section = data.get("remote") if isinstance(data.get("remote"), dict) else {}
    # `coralfs remote add` writes [remote] "NAME.FIELD" = ...; a [remote.NAME] table works too.
    entry = {k.rpartition(".")[2]: v for k, v in section.items() if k.rpartition(".")[0] == name}
    if isinstance(section.get(name), dict):
        entry.update(section[name])
    if not isinstance(entry.get("url"), str):
        raise MountError(f"{repo} has no remote {name!r}: `coralfs remote add {name} URL` first, or mount the URL")
    return entry


def remote_url(repo: str, name: str) -> str:
    return _remote_entry(repo, name)["url"]


def remote_field(repo: str, name: str, field: str) -> str | None:
    v = _remote_entry(repo, name).get(field)
    return v if isinstance(v, str) and v else None


@app.command()
def umount(
    mountpoint: Annotated[str, typer.Argument(help="Where it is mounted")],
    lazy: Annotated[bool, typer.Option("--lazy", "-z", help="Detach now even if busy")] = False,
    commit: Annotated[bool, typer.Option("--commit", help="Writable mount: commit the staged changes first (needs -m)")] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Message of the --commit")] = None,
    keep: Annotated[bool, typer.Option("--keep",
                                       help="Writable mount: leave uncommitted changes staged for the next mount --write")] = False,
) -> None:
    """Unmount a coralfs mount (also one whose daemon was killed). A writable mount with
    uncommitted changes needs --commit -m MSG or --keep."""
    from ..fs.lifecycle import MountError, is_mounted, mount_info, unmount, unmount_staging
    if not is_mounted(mountpoint):
        raise MountError(f"{mountpoint} is not mounted")
    if commit and keep:
        raise MountError("--commit and --keep exclude each other")
    if commit and not message:
        raise MountError("--commit needs a message: add -m MSG")
    if mount_info(mountpoint).get("write"):
        answer = unmount_staging(mountpoint, message if commit else None, keep=keep, lazy=lazy)
        if answer and answer.get("commit"):
            typer.echo(f"committed {answer['commit'][:12]} on {esc(answer.get('branch'))}")
    else:
        if commit or keep:
            raise MountError(f"{mountpoint} is not a writable mount: --commit and --keep do not apply")
        unmount(mountpoint, lazy=lazy)
    typer.echo(f"unmounted {esc(mountpoint)}")


@app.command()
def mounts(as_json: JsonOpt = False) -> None:
    """List active coralfs mounts."""
    from ..fs.lifecycle import list_mounts
    ms = list_mounts()
    if as_json:
        typer.echo(json.dumps(ms, indent=2))
        return
    if not ms:
        typer.echo("no coralfs mounts")
    for m in ms:
        ref = esc(f"{m.get('branch')} (writable)" if m.get("write") else (m.get("ref") or "(repository)"))
        commit = (m.get("commit") or "")[:12]
        status = "" if m.get("alive", True) else "  [daemon dead: coralfs umount it]"
        typer.echo(f"{esc(m['mountpoint'])}  {ref} {commit}  repo {esc(m.get('repo', '?'))}  pid {m.get('pid', '?')}{status}")


