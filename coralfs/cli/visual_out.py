"""What `coralfs diff --visual` / `--format json|html|png` / `--textconv` print or write:
the numbers come from coralfs.analysis, the drawing from coralfs.render."""

from __future__ import annotations

import json
import os
import shutil
import sys

import typer

from ..objects.errors import CoralError
from .common import err, esc

FORMATS = ("text", "json", "html", "png")


class _Progress:
    """`compared N tensors: PATH:NAME` on stderr, one updating line, only on a terminal."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.n = 0

    def __call__(self, path: str, name: str) -> None:
        self.n += 1
        if self.on:
            sys.stderr.write(f"\r\x1b[Kcomparing tensor {self.n}: {esc(name)[:60]}")
            sys.stderr.flush()

    def done(self) -> None:
        if self.on and self.n:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _check_glob(vd, glob: str | None) -> None:
    if glob is None:
        return
    import fnmatch
    if vd.matched == 0:
        raise CoralError(f"no changed tensor matches --tensor {glob!r} ({len(vd.tensors)} tensors changed; "
                         "run without --tensor to list them)")
    for t in vd.tensors:
        if fnmatch.fnmatchcase(t.name, glob) and t.status == "changed" and t.rel_l2 is None and t.max_abs is None:
            raise CoralError(f"no heatmap of {t.name}: its shape or dtype differs between the two revisions "
                             f"(now {list(t.shape)}); pick tensors whose shape is unchanged")


def _rows(vd, depth: int | None):
    from ..analysis.grouping import group
    from ..render.html import Row
    groups = group(vd.tensors, depth) if depth else []
    where = {id(t): g.prefix for g in groups for t in g.tensors}
    rows = [Row(t.path, t.name, t.status, t.shape, t.rel_l2, t.max_abs, t.changed_frac, t.heatmap, t.histogram,
                where.get(id(t), "")) for t in vd.tensors]
    return rows, groups


def _write(out: str, data: bytes) -> None:
    from ..objects.durable import write_durable
    try:
        write_durable(out, data, mode=0o644)
    except OSError as e:
        raise CoralError(f"cannot write {out}: {e.strerror}; pick a writable path with -o") from None


def visual(repo, ref1: str, ref2: str, *, glob: str | None, sort: bool, ascii_only: bool, fmt: str,
           out: str | None, depth: int | None) -> None:
    from ..analysis import visual_diff
    from ..analysis.grouping import AUTO_GROUP
    from ..analysis.visual import HIST_EDGES
    if fmt not in FORMATS:
        raise CoralError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt in ("html", "png") and not out:
        raise CoralError(f"--format {fmt} writes files: add -o {'diff.html' if fmt == 'html' else 'DIR/'}")
    if fmt == "png" and out and os.path.exists(out) and not os.path.isdir(out):
        raise CoralError(f"-o {out}: --format png writes a directory of images; {out} is a file")
    if fmt == "png":
        try:
            import matplotlib  # noqa: F401,ICN001
        except ImportError:
            raise CoralError("--format png needs matplotlib: pip install 'coralfs[viz]'") from None
    prog = _Progress()
    width = max(40, shutil.get_terminal_size((100, 24)).columns) - 2
    files = fmt != "text"
    try:
        vd = visual_diff(repo, ref1, ref2, tensor_glob=glob if glob is not None or not files else "*",
                         width=width if not files else 96, sort=sort, histograms=files, progress=prog,
                         max_rows=24 if not files else 48)
    finally:
        prog.done()
    if vd.tensors:
        _check_glob(vd, glob)
    title = f"coralfs diff {ref1}..{ref2}"
    if fmt == "json":
        from ..analysis.grouping import group
        data = {"from": ref1, "to": ref2, "tensors": [t.to_json() for t in vd.tensors],
                "groups": [g.to_json() for g in group(vd.tensors, depth or 2)],
                "other_files": [{"path": p, "status": s} for p, s in vd.other_files]}
        text = json.dumps(data, indent=2) + "\n"
        if out:
            _write(out, text.encode())
            typer.echo(f"wrote {esc(out)}")
        else:
            typer.echo(text, nl=False)
        return
    if fmt == "html":
        from ..render.html import report
        rows, groups = _rows(vd, depth or 2)
        page = report(title, rows, vd.other_files, HIST_EDGES,
                      [(g.prefix, g.counts, g.max_rel_l2, len(g.tensors)) for g in groups])
        _write(out, page.encode())
        typer.echo(f"wrote {esc(out)} ({len(rows)} tensors)")
        return
    if fmt == "png":
        from ..render.plots import write_all
        rows, _ = _rows(vd, None)
        try:
            paths = write_all(out, title, rows, HIST_EDGES)
        except OSError as e:
            raise CoralError(f"cannot write into {out}: {e.strerror}; pick a writable directory with -o") from None
        typer.echo(f"wrote {len(paths)} images into {esc(out)}")
        return
    if depth is None and len(vd.tensors) > AUTO_GROUP and glob is None:
        depth = 2
    _print_text(vd, ref1, ref2, ascii_only, width, depth)


def _print_text(vd, ref1: str, ref2: str, ascii_only: bool, width: int, depth: int | None) -> None:
    from ..analysis.grouping import group
    from ..render import Style, bar_lines, heatmap_lines
    # Unicode and colour only for a terminal, so output piped into a file is plain ASCII.
    fancy = sys.stdout.isatty() and not ascii_only
    style = Style(unicode=fancy, colour=fancy and "NO_COLOR" not in os.environ)
    if not vd.tensors and not vd.other_files:
        typer.echo(f"no tensor changed between {esc(ref1)} and {esc(ref2)}")
        return
    for path, status in vd.other_files:
        typer.echo(f"{status} {esc(path)} (no tensors)")
    if not vd.tensors:
        typer.echo(f"no tensor changed between {esc(ref1)} and {esc(ref2)}")
        return
    if depth:
        groups = group(vd.tensors, depth)
        typer.echo(f"{len(vd.tensors)} tensors in {len(groups)} layers (--depth {depth}; --no-group lists each tensor)")
        rows = []
        for g in groups:
            c = g.counts
            what = ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
            rows.append((esc(f"{g.prefix}.* ({what})"), "changed" if g.max_rel_l2 is not None else
                         ("added" if c.get("added") else "removed" if c.get("removed") else "changed"),
                         g.max_rel_l2, g.max_abs, g.changed_frac))
        for line in bar_lines(rows, width + 2, style):
            typer.echo(line)
        return
    several = len({t.path for t in vd.tensors}) > 1
    rows = [(esc(f"{t.path}:{t.name}" if several else t.name), t.status, t.rel_l2, t.max_abs, t.changed_frac)
            for t in vd.tensors]
    for line in bar_lines(rows, width + 2, style):
        typer.echo(line)
    for t, (label, *_rest) in zip(vd.tensors, rows, strict=True):
        if t.heatmap is not None:
            typer.echo("")
            title = f"{label} {list(t.shape)}: |{style.delta}| in {t.heatmap.shape[0]} x {t.heatmap.shape[1]} blocks"
            for line in heatmap_lines(t.heatmap, style, title):
                typer.echo(line)


def textconv(path: str) -> None:
    from ..analysis.summary import summarize
    if not os.path.isfile(path):
        raise CoralError(f"--textconv {path}: no such file")
    for line in summarize(path):
        typer.echo(esc(line))


__all__ = ["err", "textconv", "visual"]
