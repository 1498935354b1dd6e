"""coralfs ci validate|benchmark|init|hook (coralfs.workflow.ci)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from .app import app
from .common import complete_ref, esc, open_repo

ci_app = typer.Typer(help="Continuous integration: validate a checkpoint against a schema, benchmark it against a base, "
                          "write a GitHub Actions workflow, pre-commit hooks.", no_args_is_help=True)
app.add_typer(ci_app, name="ci")
hook_app = typer.Typer(help="Entry points of the hooks in .pre-commit-hooks.yaml.", no_args_is_help=True)
ci_app.add_typer(hook_app, name="hook")

RevArg = Annotated[str, typer.Argument(help="Revision to check (default HEAD)", autocompletion=complete_ref)]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="Constraints file (TOML, or JSON by its .json name); "
                                                                "default: no NaN/Inf only")]


def _validate(ctx: typer.Context, ref: str, schema: str | None) -> None:
    from ..workflow import ci
    sc = ci.load_schema(schema)           # a malformed schema: exit 2 before the repository is read
    checks = ci.validate(open_repo(ctx), ref, sc)
    for c in checks:
        typer.echo(esc(c.line()))
    failed = sum(not c.ok for c in checks)
    typer.echo(f"{len(checks) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


@ci_app.command("validate")
def validate(ctx: typer.Context, ref: RevArg = "HEAD", schema: SchemaOpt = None) -> None:
    """Check a revision: tensor names/shapes/dtypes, no NaN/Inf, sizes, stored ratio,
    required metadata. Exit 1 if a check fails, 2 if the schema is malformed."""
    _validate(ctx, ref, schema)


@ci_app.command("benchmark")
def benchmark(
    ctx: typer.Context,
    against: Annotated[str, typer.Option("--against", help="The base revision (the pull request's target)",
                                         autocompletion=complete_ref)],
    ref: RevArg = "HEAD",
    eval_cmd: Annotated[str | None, typer.Option("--eval-cmd", help="Shell command run on each exported checkpoint "
                                                 "($CORALFS_CHECKPOINT); its last output line is metric=value")] = None,
    fmt: Annotated[str, typer.Option("--format", help="md, or github (also appended to $GITHUB_STEP_SUMMARY)")] = "md",
) -> None:
    """Storage ratio of the new objects, per-layer change, an eval metric: a Markdown report."""
    from ..objects.errors import CoralError
    from ..workflow import ci
    if fmt not in ("md", "github"):
        raise CoralError(f"--format {fmt!r}: md or github")
    bm = ci.benchmark(open_repo(ctx), ref, against, eval_cmd)
    report = ci.to_markdown(bm, esc)
    typer.echo(report, nl=False)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if fmt == "github" and summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(report + "\n")
    if not bm.ok:
        raise typer.Exit(1)


@ci_app.command("init")
def init(
    provider: Annotated[str, typer.Argument(help="CI system: github")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing workflow file")] = False,
    directory: Annotated[str, typer.Option("--dir", help="Root of the git checkout (default: the current directory)")] = ".",
) -> None:
    """Write a CI workflow template (.github/workflows/coralfs.yml) running validate and benchmark."""
    from ..objects.durable import make_dirs, write_durable
    from ..objects.errors import CoralError
    from ..workflow import ci
    if provider != "github":
        raise CoralError(f"ci init {provider!r}: only github is supported")
    path = os.path.join(directory, ".github", "workflows", "coralfs.yml")
    if os.path.lexists(path) and not force:
        raise CoralError(f"{path} exists: --force overwrites it")
    make_dirs(os.path.dirname(path))
    write_durable(path, ci.GITHUB_WORKFLOW.encode(), mode=0o644)
    typer.echo(f"wrote {esc(path)}")


@hook_app.command("no-raw-weights")
def no_raw_weights(
    files: Annotated[list[str] | None, typer.Argument(help="Files being committed (pre-commit passes them)")] = None,
    max_size: Annotated[str, typer.Option("--max-size", help="Largest weight file allowed in git (10MB, 512KiB, bytes)")] = "10MB",
) -> None:
    """Refuse weight files (.safetensors, .pt, .bin, .h5, .onnx, .gguf ...) above a size."""
    from ..workflow import ci
    limit = ci.parse_size(max_size, "--max-size")
    big = ci.raw_weights(files or [], limit)
    for p, size in big:
        typer.echo(esc(f"{p}: {size} bytes of weights (limit {limit}); keep it in coralfs "
                       f"(`coralfs commit {p}`) and out of git (.gitignore)"), err=True)
    if big:
        raise typer.Exit(1)


@hook_app.command("validate")
def hook_validate(ctx: typer.Context, schema: SchemaOpt = None,
                  ref: Annotated[str, typer.Option("--ref", help="Revision to check")] = "HEAD") -> None:
    """`ci validate` for pre-commit (the repository from CORALFS_REPO or the current directory)."""
    _validate(ctx, ref, schema)
