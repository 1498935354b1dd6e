"""branch, tag, checkout, export, merge."""

from __future__ import annotations

from typing import Annotated

import typer

from ..objects.errors import CoralError
from ..objects.ids import short
from .app import app
from .common import RefArg, complete_ref, esc, first_line, open_repo


@app.command()
def branch(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Branch to create")] = None,
    start: Annotated[str | None, typer.Argument(help="Where it starts (default HEAD)", autocompletion=complete_ref)] = None,
    delete: Annotated[str | None, typer.Option("-d", "--delete", help="Delete this branch", autocompletion=complete_ref)] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Move an existing branch")] = False,
) -> None:
    """List, create or delete branches."""
    repo = open_repo(ctx)
    if delete:
        old = repo.delete_branch(delete)
        typer.echo(f"Deleted branch {esc(delete)} (was {short(old)})")
        return
    if name:
        oid = repo.create_branch(name, start, force=force)
        typer.echo(f"Branch {esc(name)} at {short(oid)}")
        return
    current = repo.head_branch()
    for b, oid in repo.branches().items():
        mark = "*" if b == current else " "
        c = repo.read_commit(oid)
        typer.echo(f"{mark} {esc(b):<24} {short(oid)} {first_line(c.message)}")


@app.command()
def tag(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Tag to create")] = None,
    ref: Annotated[str, typer.Argument(help="Commit to tag", autocompletion=complete_ref)] = "HEAD",
    message: Annotated[str, typer.Option("-m", "--message", help="Tag message")] = "",
    delete: Annotated[str | None, typer.Option("-d", "--delete", help="Delete this tag")] = None,
    force: Annotated[bool, typer.Option("-f", "--force", help="Replace an existing tag")] = False,
) -> None:
    """List, create (annotated) or delete tags. Release tags (made by `coralfs release`)
    are never moved or deleted."""
    repo = open_repo(ctx)
    for target in (delete, name if force else None):
        if target and _is_release(repo, target):
            raise CoralError(f"{target} is a release: releases are never moved or deleted "
                             "(make the next one with `coralfs release`)")
    if delete:
        repo.delete_tag(delete)
        typer.echo(f"Deleted tag {esc(delete)}")
        return
    if name:
        tid = repo.create_tag(name, ref, message, force=force)
        typer.echo(f"Tagged {short(repo.peel(tid))} as {esc(name)}")
        return
    for t, oid in repo.tags().items():
        typer.echo(f"{esc(t):<24} {short(repo.peel(oid))}")


def _is_release(repo, name: str) -> bool:
    """An annotated tag named vX.Y.Z[...]: what `coralfs release` makes."""
    from ..objects.kinds import Tag
    from ..objects.refs import TAGS
    from ..workflow.semver import parse_tag
    if parse_tag(name) is None:
        return False
    try:
        oid = repo.refs.read(TAGS + name)
    except CoralError:
        return False
    return oid is not None and isinstance(repo.odb.get_object(oid), Tag)


@app.command()
def checkout(
    ctx: typer.Context,
    ref: RefArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only show what would change (like `coralfs preview`)")] = False,
) -> None:
    """Move HEAD to a branch (attached) or any revision (detached)."""
    if dry_run:
        from .repo_cmds import preview
        preview(ctx, ref)
        return
    repo = open_repo(ctx)
    b, oid = repo.checkout(ref)
    if b:
        typer.echo(f"Switched to branch {esc(b)}" + (f" at {short(oid)}" if oid else ""))
    else:
        typer.echo(f"HEAD is now detached at {short(oid)}")


@app.command()
def export(
    ctx: typer.Context,
    ref: RefArg,
    dest: Annotated[str, typer.Argument(help="Directory to write the files into (with a kind: the revision)")],
    out: Annotated[str | None, typer.Argument(help="With a kind (onnx REF OUT.onnx): the file to write",
                                              show_default=False)] = None,
    include: Annotated[list[str] | None, typer.Option("--include",
                                                      help="Only tensors matching this glob (safetensors files are rewritten; "
                                                           "repeatable)")] = None,
    path: Annotated[list[str] | None, typer.Option("--path", help="Only these files or directories (repeatable)")] = None,
    preserve_owner: Annotated[bool, typer.Option("--preserve-owner",
                                                 help="Restore the uid, gid and mode `commit --preserve-owner` recorded "
                                                      "(as root)")] = False,
    graph: Annotated[str | None, typer.Option("--graph", help="export onnx: the template model whose initializers "
                                              "take the revision's weights")] = None,
    external_data: Annotated[bool, typer.Option("--external-data", help="export onnx: weights in OUT.onnx.<digest>.data "
                                                "beside the model (models over 2 GB)")] = False,
) -> None:
    """Write the files of a revision (links as links, empty directories too), byte-identical to what was committed.

    `export onnx REF OUT.onnx --graph TEMPLATE.onnx [--external-data]` writes the revision's
    weights into the template's initializers instead."""
    if out is not None or graph is not None or external_data:
        _export_kind(ctx, ref, dest, out, graph, external_data, path)
        return
    repo = open_repo(ctx)
    written = repo.export(ref, dest, include=include, paths=path, preserve_owner=preserve_owner)
    from .repo_cmds import _links_dirs
    entries = repo.tree_of(ref).entries
    links = sum(1 for p in written if entries[p].is_symlink)
    dirs = sum(1 for p in written if entries[p].is_dir)
    typer.echo(f"exported {len(written) - links - dirs} files{_links_dirs(links, dirs)} of {esc(ref)} to {esc(dest)}"
               + (" with their owners" if preserve_owner else ""))


def _export_kind(ctx: typer.Context, kind: str, ref: str, out: str | None, graph: str | None,
                 external_data: bool, paths: list[str] | None) -> None:
    if kind != "onnx" or out is None:
        raise CoralError("export takes REF DEST, or onnx REF OUT.onnx --graph TEMPLATE.onnx [--external-data]")
    if graph is None:
        raise CoralError("export onnx needs the graph to fill: add --graph TEMPLATE.onnx")
    from ..integrations.onnx import export as export_onnx
    repo = open_repo(ctx)
    got = export_onnx(repo, ref, out, graph, external_data=external_data, paths=paths)
    extra = f" (weights in {esc(got.data)})" if got.data else ""
    unused = f"; {got.unused} tensors of {esc(ref)} are not in the graph" if got.unused else ""
    typer.echo(f"exported {got.tensors} initializers of {esc(ref)} into {esc(out)}{extra}{unused}")


@app.command()
def merge(
    ctx: typer.Context,
    ref: RefArg,
    strategy: Annotated[str, typer.Option("--strategy", "-s",
                                          help="ours | theirs | fail | average | weighted:A (A = weight of theirs)")] = "fail",
    message: Annotated[str | None, typer.Option("-m", "--message", help="Merge commit message")] = None,
    no_ff: Annotated[bool, typer.Option("--no-ff", help="Record a merge commit even when a fast-forward is possible")] = False,
) -> None:
    """Three-way, per-tensor merge of REF into the current branch."""
    repo = open_repo(ctx)
    outcome, oid, rep = repo.merge(ref, strategy, message=message, no_ff=no_ff)
    if outcome == "up-to-date":
        typer.echo("Already up to date.")
    elif outcome == "fast-forward":
        typer.echo(f"Fast-forward to {short(oid)}")
    else:
        typer.echo(f"Merged {esc(ref)}: {short(oid)}; {len(rep.from_theirs)} taken from theirs, "
                   f"{len(rep.combined)} tensors combined, {len(rep.resolved)} conflicts resolved by strategy")
        for line in rep.resolved + [f"combined {c}" for c in rep.combined]:
            typer.echo(f"  {esc(line)}")


