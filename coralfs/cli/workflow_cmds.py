"""release, releases: semantic-version tags (coralfs.workflow.releases)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from ..objects.errors import CoralError
from ..objects.ids import short, to_hex
from .app import app
from .common import JsonOpt, complete_ref, esc, first_line, open_repo


@app.command()
def release(
    ctx: typer.Context,
    part: Annotated[str | None, typer.Argument(help="What to bump: major, minor, patch, or auto (what --suggest says)",
                                               metavar="major|minor|patch|auto")] = None,
    ref: Annotated[str, typer.Argument(help="Commit to release (default HEAD)", autocompletion=complete_ref)] = "HEAD",
    pre: Annotated[str | None, typer.Option("--pre", help="Pre-release LABEL: vX.Y.Z-LABEL.N, N counting up")] = None,
    build: Annotated[str | None, typer.Option("--build", help="Build metadata: vX.Y.Z+META (no effect on ordering)")] = None,
    message: Annotated[str, typer.Option("-m", "--message", help="Release message (default 'Release vX.Y.Z')")] = "",
    suggest: Annotated[bool, typer.Option("--suggest", help="Print the bump the weights ask for (and why); tag nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tag a commit as the next semantic version (an annotated tag that is never moved).

    --suggest derives the bump from the weights since the last release: tensors removed
    or their dtype/shape changed -> major; tensors added -> minor; values only -> patch."""
    from ..workflow import releases as rel
    repo = open_repo(ctx)
    if suggest:
        if part is not None and part not in ("major", "minor", "patch", "auto"):
            ref, part = part, None   # `release --suggest REF`
        if part is not None:
            raise CoralError("--suggest takes a REF, not a part: coralfs release --suggest [REF]")
        base, s = rel.suggest(repo, ref)
        if as_json:
            typer.echo(json.dumps(dict(s.to_json(), since=base.tag if base else None), indent=2))
            return
        since = f"since {esc(base.tag)}" if base else "(no earlier release)"
        if s.part is None:
            typer.echo(f"nothing changed {since}: no release needed")
            return
        typer.echo(f"suggested: {s.part} {since}")
        for reason in s.reasons:
            typer.echo(f"  {esc(reason)}")
        return
    if part is None:
        raise CoralError("say what to bump: coralfs release major|minor|patch|auto (or --suggest to see which)")
    r = rel.create_release(repo, part, ref, pre=pre, build=build, message=message)
    typer.echo(f"Released {short(r.commit)} as {esc(r.tag)}")


@app.command()
def changelog(
    ctx: typer.Context,
    spec: Annotated[str | None, typer.Argument(help="FROM..TO, or FROM (to HEAD); default: since the last release",
                                               metavar="[FROM..TO]")] = None,
    fmt: Annotated[str, typer.Option("--format", help="md or json")] = "md",
) -> None:
    """What changed between releases: commits, metrics before/after, changes per layer."""
    from ..workflow.changelog import changelog as make
    from ..workflow.changelog import to_markdown
    if fmt not in ("md", "json"):
        raise CoralError(f"--format {fmt!r}: use md or json")
    cl = make(open_repo(ctx), spec)
    typer.echo(json.dumps(cl.to_json(), indent=2) if fmt == "json" else to_markdown(cl, esc), nl=fmt == "json")


@app.command()
def releases(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List release tags (vX.Y.Z...) in semantic-version order, lowest first."""
    from ..integrations.published import of_commits
    from ..workflow.releases import list_releases
    repo = open_repo(ctx)
    rs = list_releases(repo)
    pubs = of_commits(repo, [to_hex(r.commit) for r in rs])   # coralfs publish: registry versions
    if as_json:
        typer.echo(json.dumps([dict(r.to_json(), published=[p.to_json() for p in pubs.get(to_hex(r.commit), [])])
                               for r in rs], indent=2))
        return
    for r in rs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.time))
        metrics = "  [" + ", ".join(esc(f"{k}={v}") for k, v in r.metrics.items()) + "]" if r.metrics else ""
        done = pubs.get(to_hex(r.commit))
        where = "  published: " + ", ".join(esc(p.label()) for p in done) if done else ""
        typer.echo(f"{esc(r.tag):<24} {short(r.commit)} {when} {first_line(r.message)}{metrics}{where}")


def _size(text: str) -> int:
    from ..objects.config import _parse_value
    return int(_parse_value("--sample", text, int))


@app.command()
def optimize(
    ctx: typer.Context,
    analyze: Annotated[bool, typer.Option("--analyze", help="Estimate what other settings would store (changes nothing)")] = False,
    do_apply: Annotated[bool, typer.Option("--apply", help="Re-encode every reachable chunk with the recommended "
                                           "(or given) levels and set them in the config")] = False,
    sample: Annotated[str, typer.Option("--sample", help="Decoded bytes of chunks to measure (k/m/g)")] = "64m",
    tensor_level: Annotated[int | None, typer.Option("--tensor-level", help="With --apply: this zstd level for tensor chunks")] = None,
    literal_level: Annotated[int | None, typer.Option("--literal-level", help="With --apply: this zstd level for other bytes")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Storage recommendations measured on the repository's own chunks, and applying them."""
    from ..objects.config import check_value
    from ..workflow import optimize as opt
    from .common import human
    if analyze == do_apply:
        raise CoralError("say --analyze (estimate) or --apply (re-encode)")
    repo = open_repo(ctx)
    levels: dict[str, int] = {}
    for kind, lvl in (("tensor", tensor_level), ("literal", literal_level)):
        if lvl is not None:
            if not do_apply:
                raise CoralError(f"--{kind}-level goes with --apply")
            levels[kind] = check_value(opt.KINDS[kind], lvl)
    a = None
    if analyze or not levels:
        a = opt.analyze(repo, _size(sample))
    if analyze:
        if as_json:
            typer.echo(json.dumps({"kinds": [dict(vars(k), candidates=[vars(c) for c in k.candidates],
                                                  best=vars(k.best) if k.best else None) for k in a.kinds],
                                   "store_bytes": a.store_bytes, "unreachable_bytes": a.unreachable_bytes,
                                   "config": a.config_lines(), "gc": a.gc_advice(), "notes": a.notes}, indent=2))
            return
        for k in a.kinds:
            typer.echo(f"{k.kind} chunks: {k.chunks}, stored {human(k.stored)}; measured {k.sample_chunks} chunks "
                       f"({human(k.sample_bytes)} decoded); {k.key} is {k.current}")
            for c in k.candidates:
                mark = " (now)" if c.level == k.current else "  <- recommended" if k.best and c.level == k.best.level else ""
                typer.echo(f"  level {c.level:>2}: stored ~{human(c.stored):>10}  saving {c.saving:+7.2%}  "
                           f"encode {c.encode_mbps:6.0f} MB/s  decode {c.decode_mbps:6.0f} MB/s{mark}")
            for layer, (now, best) in sorted(k.by_layer.items()):
                typer.echo(f"    {layer:<11} saving {1 - best / now if now else 0:+7.2%} of the sampled bytes")
        lines = a.config_lines()
        typer.echo("apply with `coralfs optimize --apply` (re-encodes what is stored), or for new commits only:"
                   if lines else "no change worth making: the current levels are within 1% of the best")
        for line in lines:
            typer.echo(f"  {line}")
        typer.echo(f"gc: {a.gc_advice()}")
        for n in a.notes:
            typer.echo(f"note: {n}")
        return
    if not levels:
        levels = {k.kind: k.best.level for k in a.kinds if k.best}
        if not levels:
            typer.echo("nothing to apply: the current levels are within 1% of the best")
            return
    bar = None
    if typer.get_text_stream("stdout").isatty():
        bar = typer.progressbar(length=sum(k.chunks for k in a.kinds) if a else 0, label="re-encoding")
        bar.__enter__()
    try:
        rep = opt.apply(repo, levels, progress=(lambda n: bar.update(n)) if bar else None)
    finally:
        if bar:
            bar.__exit__(None, None, None)
    saved = rep.before - rep.after
    typer.echo(f"re-encoded {rep.replaced} of {rep.chunks} chunks: {human(rep.before)} -> {human(rep.after)} "
               f"(saved {human(saved)}, {saved / rep.before if rep.before else 0:.2%})"
               + (f"; resumed after {rep.resumed}" if rep.resumed else ""))
    for kind, lvl in sorted(levels.items()):
        typer.echo(f"set {opt.KINDS[kind]} = {lvl}")


@app.command()
def save(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="The checkpoint directory or writable mount (default: the current directory)")] = ".",
    message: Annotated[str | None, typer.Option("-m", "--message", help="Message (default: 'save NAME at TIME')")] = None,
) -> None:
    """Commit the current checkpoint directory or writable mount with an automatic message
    (a built-in alias; `coralfs alias save "..."` redefines it)."""
    import os

    from .repo_cmds import commit
    where = os.path.basename(os.path.abspath(path)) or path
    text = message or f"save {where} at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    commit(ctx, sources=[path], message=text, branch=None, author=None, metric=None, meta=None, mount=None,
           preserve_owner=False, dataset=None, train_config=None, source=None)
