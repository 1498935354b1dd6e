"""The root typer app, its global options and the group that handles errors, aliases
and custom commands."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import traceback
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from ..objects.errors import CoralError
from . import catalog, plain_params
from .common import State, click, esc, find_repo_path, state

plain_params.install()   # plain values skip typer's pydantic adapters (start-up time)

# Commands that are built-in aliases: `coralfs alias NAME ...` may redefine them.
OVERRIDABLE = frozenset({"save"})


class CoralGroup(TyperGroup):
    """User errors become one line and an exit code, the same under CliRunner and in a
    real process; ``-v`` adds the traceback. Unknown command names are looked up as
    aliases (``alias.NAME`` in the repo config), then as executables in
    ``REPO/commands/NAME`` (only with ``commands.trust`` in the user's config) or
    ``coralfs-NAME`` on PATH."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CoralError as e:
            self._fail(ctx, str(e), e.exit_code)
        except BrokenPipeError:
            # The reader went away (| head): stop quietly, like other Unix tools.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted", 130)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            self._fail(ctx, f"{e.strerror or e}{where}", 1)

    def _fail(self, ctx: click.Context, msg: str, code: int):
        st = ctx.obj if isinstance(ctx.obj, State) else None
        if st is not None and st.verbose:
            traceback.print_exc()
        click.echo(f"coralfs: error: {esc(msg)}", err=True)
        ctx.exit(code)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else None
        if name in OVERRIDABLE:
            # A built-in alias (`save`): the repository's own alias of that name wins.
            try:
                from ..objects.config import Config
                alias = Config(os.path.join(find_repo_path(ctx.params.get("repo")), "config.toml")).data.get(
                    "alias", {}).get(name)
            except CoralError:
                alias = None
            if alias:
                return super().resolve_command(ctx, shlex.split(alias) + args[1:])
        if name and name not in self.commands and not name.startswith("-"):
            repo_path = None
            try:
                repo_path = find_repo_path(ctx.params.get("repo"))
                from ..objects.config import Config
                alias = Config(os.path.join(repo_path, "config.toml")).data.get("alias", {}).get(name)
            except CoralError:
                alias = None
            if alias:
                return super().resolve_command(ctx, shlex.split(alias) + args[1:])
            exe = None
            untrusted = None
            if repo_path:
                cand = os.path.join(repo_path, "commands", name)
                if os.path.isfile(cand) and os.access(cand, os.X_OK):
                    if _trusts_repository_commands():
                        exe = cand
                    else:
                        untrusted = cand
            exe = exe or shutil.which(f"coralfs-{name}")
            if untrusted and not exe:
                raise CoralError(
                    f"{name!r} is not a coralfs command; {untrusted} would run code the repository "
                    "provides, which coralfs does only once you trust repository commands: "
                    "`coralfs config set --user commands.trust true`")
            if exe:
                return name, _External(name, exe, repo_path), args[1:]
        return super().resolve_command(ctx, args)


def _trusts_repository_commands() -> bool:
    """Only the user's own config can allow REPO/commands/NAME (never a repository's)."""
    from ..objects.config import user_config
    return user_config().get("commands.trust") is True


class _External(TyperCommand):
    """Runs a custom executable (REPO/commands/NAME or coralfs-NAME) with the remaining
    arguments and CORALFS_REPO set, exiting with its status."""

    def __init__(self, name: str, exe: str, repo_path: str | None) -> None:
        super().__init__(name, add_help_option=False,
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        self.exe, self.repo_path = exe, repo_path

    def invoke(self, ctx):
        env = dict(os.environ)
        if self.repo_path:
            env["CORALFS_REPO"] = os.path.abspath(self.repo_path)
        ctx.exit(subprocess.call([self.exe, *ctx.args], env=env))


app = typer.Typer(
    cls=CoralGroup,
    name="coralfs",
    help=catalog.HELP,   # `coralfs --help` shows catalog.HELP without building this app
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    repo: Annotated[str | None, typer.Option("--repo", "-R",
                                             help="Repository path (else CORALFS_REPO, else the current directory or a parent)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs and tracebacks")] = False,
    setting: Annotated[list[str] | None, typer.Option("-c", "--config", metavar="KEY=VALUE",
                                                      help="A config value for this command only (above every other scope)")] = None,
) -> None:
    st = state(ctx)
    st.repo_path = repo
    st.verbose = verbose
    for item in setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CoralError(f"-c takes KEY=VALUE, not {item!r}")
        st.overrides[key] = value
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
