"""lineage and ancestry: where commits and weights came from (coralfs.analysis.lineage,
coralfs.analysis.ancestry; drawn by coralfs.render.graph)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from typing import Annotated

import typer

from ..objects.errors import CoralError
from .app import app
from .common import JsonOpt, complete_ref, esc, open_repo

FORMATS = ("dot", "mermaid", "json", "svg")


@app.command()
def lineage(
    ctx: typer.Context,
    revs: Annotated[list[str] | None, typer.Argument(help="Revisions to start from (default: all branches and tags)",
                                                     autocompletion=complete_ref)] = None,
    fmt: Annotated[str, typer.Option("--format", help="dot, svg (Graphviz), mermaid or json")] = "dot",
    out: Annotated[str | None, typer.Option("-o", "--output", help="Write to this file instead of stdout")] = None,
) -> None:
    """The graph of commits, branches, tags, merges and derived-from edges (byte-stable)."""
    from ..analysis.lineage import lineage as build
    from ..render.graph import to_dot, to_mermaid
    if fmt not in FORMATS:
        raise CoralError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    g = build(open_repo(ctx), revs or None)
    if fmt == "json":
        data = (json.dumps(g.to_json(), indent=2, sort_keys=True) + "\n").encode()
    elif fmt == "mermaid":
        data = to_mermaid(g.nodes, g.edges).encode()
    else:
        data = to_dot(g.nodes, g.edges).encode()
        if fmt == "svg":
            dot = shutil.which("dot")
            if dot is None:
                raise CoralError("--format svg needs Graphviz's dot: apt install graphviz (or use --format dot)")
            p = subprocess.run([dot, "-Tsvg"], input=data, capture_output=True, timeout=120)
            if p.returncode:
                raise CoralError(f"dot failed: {p.stderr.decode(errors='replace').strip()[:200]}")
            data = p.stdout
    if out:
        from ..objects.durable import write_durable
        try:
            write_durable(out, data, mode=0o644)
        except OSError as e:
            raise CoralError(f"cannot write {out}: {e.strerror}") from None
        typer.echo(f"wrote {esc(out)} ({len(g.nodes)} nodes, {len(g.edges)} edges)")
    else:
        typer.echo(data.decode(errors="replace"), nl=False)


@app.command()
def ancestry(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="REF:PATH or REF:PATH:TENSOR", metavar="REF:PATH[:TENSOR]")],
    as_json: JsonOpt = False,
) -> None:
    """Every commit that changed a file or one weight, newest first: how much, how it is
    stored (keyframe, delta of the same path, similarity match), merges and their strategy."""
    from ..analysis.ancestry import ancestry as build
    ref, path, tensor, events = build(open_repo(ctx), target)
    if as_json:
        typer.echo(json.dumps({"ref": ref, "path": path, "tensor": tensor,
                               "events": [e.to_json() for e in events]}, indent=2))
        return
    typer.echo(esc(f"{path}{':' + tensor if tensor else ''} from {ref}: {len(events)} changes"))
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.time))
        parts = [e.kind]
        if e.merge:
            parts.append(f"strategy {e.merge}")
        if e.rel_l2 is not None:
            parts.append(f"rel L2 {e.rel_l2:.3g}")
        if e.max_abs is not None:
            parts.append(f"max |d| {e.max_abs:.3g}")
        if e.changed_frac is not None:
            parts.append(f"{e.changed_frac:.0%} of elements")
        if e.tensors_changed is not None:
            parts.append(f"{e.tensors_changed} tensors changed")
        if e.stored:
            parts.append(f"stored as {e.stored}")
        if e.derived_from:
            parts.append("derived from " + ", ".join(s[4:] if s.startswith("ext:") else s[:12] for s in e.derived_from))
        msg = (e.message.splitlines() or [""])[0]
        typer.echo(esc(f"{e.commit[:12]} {when}  {', '.join(parts)}  {msg}"))


@app.command()
def provenance(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Commit (default HEAD)", autocompletion=complete_ref)] = "HEAD",
    as_json: JsonOpt = False,
) -> None:
    """How a commit's weights were made (source model, dataset and config hashes, command,
    framework versions) and the training lineage its derived-from records trace."""
    from ..workflow.provenance import lineage_of
    steps = lineage_of(open_repo(ctx), ref)
    if as_json:
        typer.echo(json.dumps([s.to_json() for s in steps], indent=2))
        return
    for s in steps:
        pad = "  " * s.depth
        typer.echo(esc(f"{pad}commit {s.commit[:12]}  {s.message}"))
        p = s.provenance
        if p.get("source"):
            typer.echo(esc(f"{pad}  source model: {p['source']}"))
        for d in p.get("datasets", []):
            typer.echo(esc(f"{pad}  dataset: {d.get('path')} sha256:{str(d.get('sha256'))[:16]} "
                           f"({d.get('files')} files, {d.get('bytes')} bytes)"))
        if p.get("config"):
            c = p["config"]
            typer.echo(esc(f"{pad}  config: {c.get('path')} sha256:{str(c.get('sha256'))[:16]}"))
        if p.get("command"):
            typer.echo(esc(f"{pad}  command: {p['command']}"))
        if p.get("versions"):
            typer.echo(esc(f"{pad}  versions: " + ", ".join(f"{k} {v}" for k, v in sorted(p["versions"].items()))))
        for r in s.derived_from:
            what = r.get("commit", "")[:12] or r.get("source") or r.get("model") or "?"
            where = f" {r['path']}" if r.get("path") else ""
            weight = f" weight {r['weight']}" if r.get("weight") is not None else ""
            file = f" (for {r['file']})" if r.get("file") else ""
            typer.echo(esc(f"{pad}  derived from {what}{where}: {r.get('relation', 'derived')}{weight}{file}"))
        if not p and not s.derived_from:
            typer.echo(f"{pad}  (no provenance recorded)")
