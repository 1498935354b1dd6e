"""What changed between two releases (or any two revisions): the commits, the metrics
before and after, and per layer how many tensors changed and by how much, plus the bump
the weights ask for. Computed here once; the CLI prints it as Markdown or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..analysis.bump import Suggestion, suggest_bump
from ..diff import diff
from ..objects import history
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, short, to_hex
from ..objects.repository import Repository
from .releases import Release, last_release_before, list_releases


@dataclass
class LayerChange:
    path: str
    layer: str            # tensor name without its last part: encoder.layer.3.attention.self.query
    changed: int = 0
    added: int = 0
    removed: int = 0
    max_rel_l2: float | None = None


@dataclass
class CommitLine:
    commit: str
    time: int
    message: str


@dataclass
class Changelog:
    base: str | None        # what the range starts at (a release tag or a revision); None: the start
    head: str
    commits: list[CommitLine] = field(default_factory=list)
    metrics_before: dict = field(default_factory=dict)
    metrics_after: dict = field(default_factory=dict)
    layers: list[LayerChange] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)   # (path, status) of files without tensors
    suggestion: Suggestion = field(default_factory=lambda: Suggestion(None))

    def to_json(self) -> dict:
        d = asdict(self)
        d["files"] = [{"path": p, "status": s} for p, s in self.files]
        return d


def layer_of(name: str) -> str:
    """A tensor's layer: its name without the last dotted part (weight, bias ...)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def _label(repo: Repository, oid: ObjectId, releases: list[Release]) -> str:
    for r in releases:
        if r.commit == oid:
            return r.tag
    return short(oid)


def resolve_range(repo: Repository, spec: str | None) -> tuple[ObjectId | None, ObjectId]:
    """``FROM..TO``, ``FROM`` (to HEAD), or nothing: from the last release before HEAD
    (the one before that if HEAD is itself released) to HEAD."""
    if spec and ".." in spec:
        a, _, b = spec.partition("..")
        if not a:
            raise CoralError(f"changelog range {spec!r}: write FROM..TO (or FROM for FROM..HEAD)")
        return repo.resolve(a), repo.resolve(b or "HEAD")
    if spec:
        return repo.resolve(spec), repo.resolve("HEAD")
    head = repo.resolve("HEAD")
    base = last_release_before(repo, head, strict=False)
    if base is not None and base.commit == head:
        base = last_release_before(repo, head, strict=True)
    return (base.commit if base else None), head


def changelog(repo: Repository, spec: str | None = None) -> Changelog:
    a, b = resolve_range(repo, spec)
    if a is not None and not history.is_ancestor(repo, a, b):
        raise CoralError(f"{short(a)} is not an ancestor of {short(b)}: a changelog runs forward along history")
    releases = list_releases(repo)
    out = Changelog(_label(repo, a, releases) if a else None, _label(repo, b, releases))
    before = history.ancestors(repo, a) if a else set()
    for oid in history.topo_order(repo, [b]):
        if oid in before:
            continue
        c = repo.read_commit(oid)
        out.commits.append(CommitLine(to_hex(oid), c.time, c.message))
    out.metrics_before = dict(repo.read_commit(a).metadata.get("metrics") or {}) if a else {}
    out.metrics_after = dict(repo.read_commit(b).metadata.get("metrics") or {})
    out.layers, out.files = layer_changes(repo, to_hex(a) if a else None, to_hex(b))
    out.suggestion = suggest_bump(repo, to_hex(a) if a else None, to_hex(b))
    return out


def layer_changes(repo: Repository, a: str | None, b: str) -> tuple[list[LayerChange], list[tuple[str, str]]]:
    """Per (file, layer): tensors changed, added, removed and the largest relative L2
    change from ``a`` to ``b``; plus (path, status) of the changed files without tensors."""
    layers: dict[tuple[str, str], LayerChange] = {}
    files: list[tuple[str, str]] = []
    for fc in diff(repo, a, b):
        if not fc.tensors:
            files.append((fc.path, fc.status))
            continue
        for t in fc.tensors:
            if t.status == "changed" and t.changed_frac == 0.0:
                continue   # the same values, stored another way (moved into or out of a pack)
            lc = layers.setdefault((fc.path, layer_of(t.name)), LayerChange(fc.path, layer_of(t.name)))
            if t.status == "added":
                lc.added += 1
            elif t.status == "removed":
                lc.removed += 1
            else:
                lc.changed += 1
                if t.rel_l2 is not None:
                    lc.max_rel_l2 = max(lc.max_rel_l2 or 0.0, t.rel_l2)
    return list(layers.values()), files


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def to_markdown(cl: Changelog, esc=str) -> str:
    """The changelog as Markdown (``esc`` makes stored text safe to print)."""
    title = f"{esc(cl.base)}..{esc(cl.head)}" if cl.base else f"up to {esc(cl.head)}"
    lines = [f"# Changelog {title}", ""]
    if cl.suggestion.part:
        lines += [f"Suggested bump: **{cl.suggestion.part}** ({esc(cl.suggestion.reasons[0])})", ""]
    lines += [f"## Commits ({len(cl.commits)})", ""]
    lines += [f"- `{c.commit[:12]}` {esc(c.message.splitlines()[0] if c.message else '')}" for c in cl.commits]
    keys = sorted(set(cl.metrics_before) | set(cl.metrics_after))
    if keys:
        lines += ["", "## Metrics", "", f"| metric | {esc(cl.base or 'before')} | {esc(cl.head)} |", "|---|---|---|"]
        lines += [f"| {esc(k)} | {esc(_num(cl.metrics_before.get(k, '-')))} | {esc(_num(cl.metrics_after.get(k, '-')))} |"
                  for k in keys]
    if cl.layers:
        lines += ["", "## Changes by layer", "", "| file | layer | changed | added | removed | max rel. L2 |",
                  "|---|---|---:|---:|---:|---:|"]
        for lc in cl.layers:
            rel = "-" if lc.max_rel_l2 is None else f"{lc.max_rel_l2:.3g}"
            lines.append(f"| {esc(lc.path)} | {esc(lc.layer)} | {lc.changed} | {lc.added} | {lc.removed} | {rel} |")
    if cl.files:
        lines += ["", "## Other files", ""] + [f"- {s} {esc(p)}" for p, s in cl.files]
    return "\n".join(lines) + "\n"
