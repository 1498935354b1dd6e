"""remote add|list|remove|show|doctor, push, fetch, pull, clone."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from ..objects.errors import CoralError
from .app import app
from .common import err, esc, human, is_tty, open_repo

if TYPE_CHECKING:
    from ..objects.ids import ObjectId
    from ..objects.repository import Repository
    from ..remote.blobs import BlobStore
    from ..remote.sync import FetchResult

remote_app = typer.Typer(help="Remotes: object stores (s3://, gs://, az://) or directories (file:///) "
                         "that repositories push to and fetch from.", no_args_is_help=True)
app.add_typer(remote_app, name="remote")

EndpointOpt = Annotated[str | None, typer.Option("--endpoint", help="Service URL (an emulator or an S3-compatible store)")]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="Credentials profile of the cloud's own config files")]


class UsageError(CoralError):
    exit_code = 2


def _check_no_secrets(url: str, what: str = "URL") -> None:
    try:
        u = urlsplit(url)
    except ValueError:
        return  # parse_url names what is wrong
    if "@" in u.netloc or u.query:
        raise UsageError(f"refusing a {what} with credentials or a token in it (user:password@, ?...): coralfs never stores "
                         "secrets in a repository; give them through the environment (AWS_*, ~/.aws, "
                         "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_CONNECTION_STRING)")
    if what == "URL":
        from ..remote.blobs import RemoteError
        from ..remote.url import parse_url
        try:
            parse_url(url)
        except RemoteError as e:
            raise UsageError(str(e)) from None   # bad input, not an unreachable remote


BAR = 30


class _Progress:
    """Bytes, objects and MB/s: one updating line on a terminal, a plain line at most
    every two seconds otherwise (logs of CI jobs)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tty = is_tty()
        self.shown = False
        self.pending: tuple | None = None

    def __call__(self, phase: str, done: int, objects: int, total: int | None, total_objects: int | None) -> None:
        now = time.perf_counter()
        self.pending = (phase, done, objects, total, total_objects)
        if not self.tty and now - self.last < 2 and (total is None or done < total):
            return
        self.last = now
        self.pending = None
        rate = done / max(now - self.t0, 1e-6) / 1e6
        of = f" / {human(total)}" if total else ""
        objs = f"{objects}/{total_objects}" if total_objects else str(objects)
        bar = ""
        if self.tty and total:
            filled = min(BAR, BAR * done // total)
            bar = f"[{'#' * filled}{'-' * (BAR - filled)}] {min(100, 100 * done // total):3d}% "
        line = f"{phase}: {bar}{human(done)}{of}, {objs} objects, {rate:.0f} MB/s"
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
            sys.stderr.flush()
            self.shown = True
        else:
            err(line)

    def close(self) -> None:
        if self.pending is not None and not self.tty:
            self.last = 0.0
            self(*self.pending)
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def rate(self, n: int) -> str:
        return f"{n / max(time.perf_counter() - self.t0, 1e-6) / 1e6:.0f} MB/s"


# -- remote add|list|remove|show|doctor ------------------------------------------------

@remote_app.command("add")
def remote_add(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Remote name, e.g. origin")],
               url: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX "
                                                       "or file:///PATH")],
               endpoint: EndpointOpt = None, profile: ProfileOpt = None) -> None:
    """Record a remote in the repository config (no credentials: those come from the environment)."""
    from ..objects.config import remotes
    _check_no_secrets(url)
    if endpoint:
        _check_no_secrets(endpoint, "--endpoint")
    repo = open_repo(ctx)
    if name in remotes(repo.config):
        raise CoralError(f"remote {name} exists already ({esc(remotes(repo.config)[name].get('url', ''))}); "
                         f"remove it first: `coralfs remote remove {name}`")
    repo.config.set(f"remote.{name}.url", url)
    if endpoint:
        repo.config.set(f"remote.{name}.endpoint", endpoint)
    if profile:
        repo.config.set(f"remote.{name}.profile", profile)
    typer.echo(esc(f"added remote {name}: {url}"))


@remote_app.command("list")
def remote_list(ctx: typer.Context) -> None:
    """Every remote with its URL (and endpoint, profile)."""
    from ..objects.config import remotes
    for name, f in remotes(open_repo(ctx).config).items():
        extra = "".join(f"  {k}={f[k]}" for k in ("endpoint", "profile", "partial") if f.get(k))
        typer.echo(esc(f"{name}  {f.get('url', '')}{extra}"))


@remote_app.command("remove")
def remote_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Remote name")]) -> None:
    """Forget a remote: its config, its remote-tracking refs and its push journal."""
    import os

    from ..objects.config import remotes
    from ..objects.refs import REMOTES
    from ..remote.journal import JOURNAL_DIR
    repo = open_repo(ctx)
    fields = remotes(repo.config).get(name)
    if fields is None:
        raise CoralError(f"no remote {name!r} (see `coralfs remote list`)")
    if fields.get("partial"):
        raise CoralError(f"{name} is where this partial clone reads missing objects from; it cannot be removed")
    for short, oid in repo.refs.list(f"{REMOTES}{name}/").items():
        repo.refs.set_if_equals(f"{REMOTES}{name}/{short}", oid, None, "remote: removed")
    for field in fields:
        repo.config.unset(f"remote.{name}.{field}")
    try:
        os.unlink(os.path.join(repo.path, JOURNAL_DIR, f"{name}.json"))
    except FileNotFoundError:
        pass
    typer.echo(f"removed remote {name}")


def _ahead_behind(repo: Repository, local: ObjectId | None, remote: ObjectId | None) -> str:
    from ..objects import history
    from ..remote.sync import local_store
    if local is None:
        return "not here (`coralfs pull` creates it)"
    if remote is None:
        return "not on the remote (`coralfs push` sends it)"
    if local == remote:
        return "up to date"
    if not local_store(repo.store).has(remote):
        return "the remote has commits not fetched yet (`coralfs fetch`)"
    mine, theirs = history.ancestors(repo, local), history.ancestors(repo, remote)
    ahead, behind = len(mine - theirs), len(theirs - mine)
    if behind == 0:
        return f"ahead by {ahead} (push)"
    if ahead == 0:
        return f"behind by {behind} (pull)"
    return f"diverged: ahead by {ahead}, behind by {behind} (pull, merge, push)"


@remote_app.command("show")
def remote_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Remote name")]) -> None:
    """The remote's URL, branches and tags, and each branch against the local one."""
    from ..remote.graph import naming, open_remote, remote_settings
    repo = open_repo(ctx)
    name, fields = remote_settings(repo, name)
    typer.echo(esc(f"remote {name}"))
    for k in ("url", "endpoint", "profile", "partial"):
        if fields.get(k):
            typer.echo(esc(f"  {k}: {fields[k]}"))
    name, blobs = open_remote(repo, name)
    with naming(name):
        _show_refs(repo, blobs)


def _show_refs(repo: Repository, blobs) -> None:
    from ..objects.refs import HEADS, TAGS
    from ..remote import layout
    from ..remote.refs import RemoteRefs
    if not layout.is_initialized(blobs):
        typer.echo("  empty: nothing pushed yet")
        return
    layout.check_remote(blobs)
    rrefs = RemoteRefs(blobs)
    target = rrefs.head_target()
    typer.echo(esc(f"  HEAD branch: {target[len(HEADS):] if target else '(none)'}"))
    heads = rrefs.list(HEADS)
    local = repo.branches()
    for b in sorted(set(heads) | set(local)):
        r = heads.get(b)
        shown = r.hex()[:12] if r else "-"
        typer.echo(esc(f"  {b:<20} {shown:<12} {_ahead_behind(repo, local.get(b), r)}"))
    tags = rrefs.list(TAGS)
    if tags:
        typer.echo(esc(f"  tags: {', '.join(sorted(tags))}"))


@remote_app.command("doctor")
def remote_doctor(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Remote name")]) -> None:
    """Check access, writes, conditional writes and the layout; one line per check with the fix."""
    from ..remote.doctor import doctor
    from ..remote.graph import open_remote
    from ..remote.layout import check_layout
    repo = open_repo(ctx)
    name, blobs = open_remote(repo, name)
    checks = doctor(blobs)
    checks.append(check_layout(blobs))
    for c in checks:
        typer.echo(esc(c.line()))
    bad = [c for c in checks if not c.ok]
    if bad:
        raise CoralError(f"remote {name}: {len(bad)} of {len(checks)} checks failed (listed above)")


# -- push, fetch, pull, clone ------------------------------------------------------------

def _full_ref(repo: Repository, name: str) -> str:
    from ..objects.refs import HEADS, TAGS
    if name.startswith(("refs/heads/", "refs/tags/")):
        return name
    if repo.refs.read(HEADS + name) is not None:
        return HEADS + name
    if repo.refs.read(TAGS + name) is not None:
        return TAGS + name
    raise CoralError(f"nothing to push: no branch or tag {name!r} here (see `coralfs branch`, `coralfs tag`)")


@app.command()
def push(ctx: typer.Context,
         args: Annotated[list[str] | None, typer.Argument(help="[REMOTE] [REF...] (default: origin, the current branch)")] = None,
         tags: Annotated[bool, typer.Option("--tags", help="Push every tag too")] = False,
         force: Annotated[bool, typer.Option("--force", "-f", help="Replace remote branches that are not ancestors")] = False,
         ) -> None:
    """Send branches (and tags) with the objects the remote lacks; refs move by compare-and-swap."""
    from ..objects.config import remotes
    from ..objects.refs import TAGS
    from ..remote.graph import naming, open_remote
    from ..remote.sync import push as do_push
    repo = open_repo(ctx)
    args = list(args or [])
    remote = args.pop(0) if args and args[0] in remotes(repo.config) else None
    remote, blobs = open_remote(repo, remote)
    refs = [_full_ref(repo, a) for a in args]
    if not refs and not tags:
        b = repo.head_branch()
        if b is None:
            raise CoralError("HEAD is detached: name the branch to push (coralfs push REMOTE BRANCH)")
        refs = [_full_ref(repo, b)]
    if tags:
        refs += [TAGS + t for t in repo.tags() if TAGS + t not in refs]
    bar = _Progress()
    try:
        with naming(remote):
            res = do_push(repo, blobs, remote, refs, force=force, progress=bar)
    finally:
        bar.close()
    for u in res.updates:
        old = u.old.hex()[:12] if u.old else "(new)"
        typer.echo(esc(f"  {u.name.split('/', 2)[2]}: {old} -> {u.new.hex()[:12]} ({u.status})"))
    extra = f"; removed {res.cleaned} interrupted upload(s)" if res.cleaned else ""
    typer.echo(f"pushed {res.objects} objects, {human(res.bytes)} in {res.packs} packs to {esc(remote)} "
               f"({bar.rate(res.bytes)}){extra}")


def _fetch_objects(repo: Repository, remote: str, blobs: BlobStore) -> tuple[FetchResult, _Progress]:
    """fetch and pull: the remote's refs and objects, with a progress bar on a terminal.
    Returns the FetchResult and the (closed) bar, for its rate."""
    from ..remote.graph import naming
    from ..remote.sync import fetch as do_fetch
    bar = _Progress()
    try:
        with naming(remote):
            res = do_fetch(repo, blobs, remote, progress=bar)
    finally:
        bar.close()
    return res, bar


@app.command()
def fetch(ctx: typer.Context, remote: Annotated[str | None, typer.Argument(help="Remote name (default: origin)")] = None) -> None:
    """Bring the remote's branches (as REMOTE/BRANCH) and tags here, with their objects, verified."""
    from ..remote.graph import open_remote
    repo = open_repo(ctx)
    remote, blobs = open_remote(repo, remote)
    res, bar = _fetch_objects(repo, remote, blobs)
    typer.echo(f"fetched {res.objects} objects, {human(res.bytes)} from {esc(remote)} ({bar.rate(res.bytes)}); "
               f"{len(res.heads)} branches, {len(res.tags)} tags")


@app.command()
def pull(ctx: typer.Context,
         remote: Annotated[str | None, typer.Argument(help="Remote name (default: origin)")] = None,
         branch: Annotated[str | None, typer.Argument(help="Branch (default: the current one)")] = None) -> None:
    """fetch, then fast-forward the branch to REMOTE/BRANCH (diverged: merge it yourself)."""
    from ..remote.graph import open_remote
    from ..remote.sync import fast_forward
    repo = open_repo(ctx)
    remote, blobs = open_remote(repo, remote)
    branch = branch or repo.head_branch()
    if branch is None:
        raise CoralError("HEAD is detached: name the branch to pull (coralfs pull REMOTE BRANCH)")
    res, _bar = _fetch_objects(repo, remote, blobs)
    outcome, oid = fast_forward(repo, remote, branch)
    typer.echo(esc(f"fetched {res.objects} objects, {human(res.bytes)}; {branch}: {outcome}"
                   + (f" at {oid.hex()[:12]}" if oid else "")))


@app.command()
def clone(url: Annotated[str, typer.Argument(help="The remote's URL")],
          dest: Annotated[str, typer.Argument(help="Directory to create")],
          endpoint: EndpointOpt = None, profile: ProfileOpt = None,
          depth: Annotated[int | None, typer.Option("--depth", help="Only the last N commits (a shallow clone)")] = None,
          filter_: Annotated[str | None, typer.Option("--filter", help="Only the objects of files or tensors matching "
                                                      "this glob; the rest is fetched on demand")] = None) -> None:
    """Create a repository from a remote (origin), checking out the remote's HEAD branch."""
    from ..remote.sync import clone as do_clone
    _check_no_secrets(url)
    if endpoint:
        _check_no_secrets(endpoint, "--endpoint")
    bar = _Progress()
    try:
        repo, res = do_clone(url, dest, endpoint=endpoint, profile=profile, depth=depth, pattern=filter_, progress=bar)
    finally:
        bar.close()
    kind = " (shallow)" if res.shallow else ""
    kind += f" (partial: {filter_})" if filter_ else ""
    typer.echo(esc(f"cloned {url} into {repo.path}{kind}: {res.objects} objects, {human(res.bytes)} "
                   f"({bar.rate(res.bytes)}); on branch {repo.head_branch() or '(none)'}"))
    repo.close()
