"""init, commit, import, status, log, show, diff."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Annotated

import typer

from ..interrupts import interruptible, landing, late
from ..objects.errors import CoralError
from ..objects.ids import short, to_hex
from ..objects.kinds import Tensor, TensorSegment
from .app import app
from .common import (
    AuthorOpt,
    BranchOpt,
    JsonOpt,
    MessageOpt,
    MetaOpt,
    MetricOpt,
    RefArg,
    complete_ref,
    esc,
    first_line,
    human,
    is_tty,
    open_repo,
    parse_kv,
)

if TYPE_CHECKING:
    from ..ingest import CommitResult
    from ..objects.repository import Repository


@app.command()
def init(path: Annotated[str, typer.Argument(help="Directory to create")],
         branch: Annotated[str, typer.Option("--branch", "-b", help="Name of the first branch")] = "main",
         shared: Annotated[bool, typer.Option("--shared",
                                              help="Readable by the directory's group (0750/0640; default: private, "
                                                   "0700/0600)")] = False) -> None:
    """Create an empty repository (private to you unless --shared)."""
    from ..api import Repository
    r = Repository.init(path, default_branch=branch, shared=shared)
    typer.echo(f"Initialized empty {'shared ' if shared else ''}coralfs repository in {esc(r.path)}")


PreserveOwnerOpt = Annotated[bool, typer.Option(
    "--preserve-owner", help="Also record uid, gid and mode of every path, in the commit's metadata (not in the "
                             "tree: ids stay as without it); `export --preserve-owner` restores them")]


def _do_commit(ctx, sources, message, branch, author, metadata, preserve_owner: bool = False) -> None:
    from ..api import infer_derivations
    from ..ingest import collect_sources
    repo = infer_derivations(open_repo(ctx))
    total = sum(os.path.getsize(p) for p in collect_sources(sources).values())
    bar = None
    if is_tty() and total > 64 << 20:
        bar = typer.progressbar(length=total, label="ingesting", file=None)
        bar.__enter__()
    t0 = time.perf_counter()
    try:
        with interruptible():
            res = repo.commit_paths(sources, message, branch=branch, author=author, metadata=metadata,
                                    progress=(lambda _p, n: bar.update(n)) if bar else None,
                                    preserve_owner=preserve_owner)
            _report_commit(res, branch, message, repo, time.perf_counter() - t0)
    finally:
        if bar:
            bar.__exit__(None, None, None)
        repo.close()


def _report_commit(res: CommitResult, branch: str | None, message: str, repo: Repository, dt: float) -> None:
    st = res.stats
    b = branch or repo.head_branch() or "HEAD"
    typer.echo(f"[{esc(b)} {short(res.commit)}] {first_line(message)}")
    ratio = st.stored / st.logical if st.logical else 0
    typer.echo(f"{len(res.files)} files{_links_dirs(res.links, res.dirs)}, {human(st.logical)} logical, "
               f"{human(st.stored)} newly stored "
               f"({ratio:.1%}); chunks: {st.chunks_new} new, {st.chunks_dedup} deduplicated; "
               f"{st.logical / dt / 1e6:.0f} MB/s")
    if st.codecs:
        typer.echo("codecs: " + ", ".join(f"{k} {v}" for k, v in sorted(st.codecs.items())))
    if late():
        typer.echo(f"{', '.join(late())} arrived while the commit was landing: it is complete")


def _links_dirs(links: int, dirs: int) -> str:
    """", 2 links, 1 empty directory" (nothing for none)."""
    out = f", {links} link{'s' if links != 1 else ''}" if links else ""
    if dirs:
        out += f", {dirs} empty director{'ies' if dirs != 1 else 'y'}"
    return out


@app.command()
def commit(
    ctx: typer.Context,
    sources: Annotated[list[str] | None, typer.Argument(
                                                        help="Checkpoint directories or files (a directory's contents become the "
                                                             "tree)")] = None,
    message: MessageOpt = None,
    branch: BranchOpt = None,
    author: AuthorOpt = None,
    metric: MetricOpt = None,
    meta: MetaOpt = None,
    mount: Annotated[str | None, typer.Option("--mount", help="Commit what was saved into this writable mount")] = None,
    preserve_owner: PreserveOwnerOpt = False,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", help="Training data (file or directory): its sha256 "
                                                      "goes into the commit's provenance (repeatable)")] = None,
    train_config: Annotated[str | None, typer.Option("--config", help="Training config file: its sha256 goes into the "
                                                     "provenance")] = None,
    source: Annotated[str | None, typer.Option("--source", help="The model this one comes from (a Hub id, URL, or "
                                               "REPO@COMMIT)")] = None,
) -> None:
    """Record checkpoint files or directories (or a writable mount's changes) as a new commit.

    Every commit records its provenance (command line, framework versions; with --dataset,
    --config, --source their hashes and name); a file new at its path whose tensors match a
    model already here records where it came from (derived_from: fine-tune, quantized, ...)."""
    if mount and sources:
        raise CoralError("name checkpoint paths or --mount MNT, not both")
    if sources and len(sources) == 1 and _writable_mount(sources[0]):
        mount, sources = sources[0], None  # `coralfs commit MNT -m MSG` of a writable mount
    if not sources and not mount:
        raise CoralError("nothing to commit: name checkpoint directories or files (coralfs commit DIR -m MSG), "
                         "or a writable mount (--mount MNT)")
    if message is None:
        raise CoralError("a commit needs a message: add -m MSG")
    metadata = parse_kv(meta or [], "meta")
    if metric:
        metadata["metrics"] = parse_kv(metric, "metric")
    from ..workflow.provenance import record
    from . import common
    metadata["provenance"] = record(dataset, train_config, source, common.COMMAND_LINE)
    if source:
        metadata["derived_from"] = [{"source": source, "relation": "source"}]
    if mount:
        _commit_mount(mount, message, branch, author, metadata, preserve_owner)
        return
    _do_commit(ctx, sources, message, branch, author, metadata, preserve_owner)


def _writable_mount(path: str) -> bool:
    from ..fs.lifecycle import is_mounted, mount_info
    return os.path.isdir(path) and is_mounted(path) is not None and bool(mount_info(path).get("write"))


def _commit_mount(mount: str, message: str, branch: str | None, author: str | None, metadata: dict,
                  preserve_owner: bool = False) -> None:
    from .staging_cmds import control
    if branch is not None:
        raise CoralError("a writable mount commits to the branch it was mounted with; drop --branch")
    if author is not None:
        raise CoralError("a writable mount records its commits as its owner (user.name, or user@host): drop --author, "
                         "or set the name with `coralfs config set user.name NAME` before mounting")
    # The daemon commits; a signal cannot stop it there, so the client waits for the
    # answer and reports it (a signal meanwhile is noted) instead of dying while the
    # commit lands anyway.
    with interruptible(), landing():
        req = {"op": "commit", "message": message, "metadata": metadata or None}
        if preserve_owner:  # only then: a daemon of an older version refuses the field by name
            req["preserve_owner"] = True
        got = control(mount, req)
        _report_mount_commit(got, message)
        if late():
            typer.echo(f"{', '.join(late())} arrived while the mount was committing: its answer is above")


def _report_mount_commit(got: dict, message: str) -> None:
    from .staging_cmds import print_changes
    if not got.get("commit"):
        typer.echo("nothing to commit (the mount holds the branch head unchanged)")
        return
    typer.echo(f"[{esc(got['branch'])} {got['commit'][:12]}] {first_line(message)}")
    print_changes(got["changes"])
    logical, stored, dt = got["logical"], got["stored"], got["seconds"]
    rate = f"; {logical / dt / 1e6:.0f} MB/s" if dt > 0 and logical else ""
    typer.echo(f"{human(logical)} ingested, {human(stored)} newly stored"
               f" ({stored / logical if logical else 0:.1%}){rate}")


# `coralfs import KIND PATH`: what each kind's module turns a foreign model into (files to
# commit and commit metadata). Each is "module:function", imported only when its kind runs,
# returning a coralfs.integrations.ImportSource; "pytorch" is the plain import.
IMPORTERS: dict[str, str] = {
    "tensorflow": "coralfs.integrations.tensorflow:prepare_import",
    "wandb": "coralfs.integrations.wandb:prepare_import",
    "onnx": "coralfs.integrations.onnx:prepare_import",
    "keras": "coralfs.integrations.keras:prepare_import",
}


@app.command("import")
def import_(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="A .pt/.bin/.safetensors/.npz/.h5 checkpoint or a checkpoint directory;"
                                        " or a kind (pytorch, onnx, keras, tensorflow, wandb) followed by its path", show_default=False)],
    path: Annotated[str | None, typer.Argument(help="With a kind: the file or directory to import", show_default=False)] = None,
    message: MessageOpt = None,
    branch: BranchOpt = None,
    author: AuthorOpt = None,
) -> None:
    """Import a checkpoint (file or directory) with an automatic commit."""
    if path is None:
        _import_checkpoint(ctx, what, message, branch, author)
        return
    if what == "pytorch":
        _import_checkpoint(ctx, path, message, branch, author)
        return
    if what not in IMPORTERS:
        kinds = ", ".join(["pytorch", *IMPORTERS])
        raise CoralError(f"unknown import kind {what!r}: use one of {kinds}, or give just a path")
    # (a TensorFlow checkpoint prefix names no file itself: its PREFIX.index does)
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise CoralError(f"{path}: no such file or directory")
    import importlib
    module, func = IMPORTERS[what].split(":")
    src = getattr(importlib.import_module(module), func)(path)
    try:
        metadata = {"source": os.path.abspath(path), "import": what, **src.metadata}
        _do_commit(ctx, src.paths, message or f"import {what} {src.name}", branch, author, metadata)
    finally:
        src.close()


@app.command("import-pytorch", hidden=True)
def import_pytorch(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A .pt/.bin/.safetensors checkpoint or a checkpoint directory")],
    message: MessageOpt = None,
    branch: BranchOpt = None,
    author: AuthorOpt = None,
) -> None:
    """The same as `coralfs import PATH`."""
    _import_checkpoint(ctx, path, message, branch, author)


def _import_checkpoint(ctx: typer.Context, path: str, message: str | None, branch: str | None,
                       author: str | None) -> None:
    if not os.path.exists(path):
        raise CoralError(f"{path}: no such file or directory")
    name = os.path.basename(os.path.normpath(path))
    metadata: dict = {"source": os.path.abspath(path)}
    m = re.search(r"(?:checkpoint|step|ckpt)[-_]?(\d+)", name)
    if m:
        metadata["step"] = int(m.group(1))
    _do_commit(ctx, [path], message or f"import {name}", branch, author, metadata)


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False,
           mount: Annotated[str | None, typer.Option("--mount", help="List what a writable mount has staged")] = None) -> None:
    """Where HEAD is, what the head commit holds, and staged changes of writable mounts."""
    if mount:
        _mount_status(mount, as_json)
        return
    from ..staging import staged_branches, staged_changes
    repo = open_repo(ctx)
    b = repo.head_branch()
    head = repo.head()
    info = {"branch": b, "head": to_hex(head) if head else None, "files": 0, "bytes": 0, "links": 0, "dirs": 0}
    if head:
        tree = repo.tree_of(head)
        files = [e for e in tree.entries.values() if not (e.is_symlink or e.is_dir)]
        info["files"] = len(files)
        info["bytes"] = sum(repo.read_file(e.file).size for e in files)
        info["links"] = sum(1 for e in tree.entries.values() if e.is_symlink)
        info["dirs"] = len(tree.entries) - len(files) - info["links"]
    staged, unreadable = {}, []
    for sb in staged_branches(repo):
        try:
            ch = staged_changes(repo, sb)
        except (sqlite3.Error, PermissionError):
            # Another user's staging area in a --shared repository: theirs to read.
            unreadable.append(sb)
            continue
        if ch:
            staged[sb] = [c.as_dict() for c in ch]
    info["staged"] = staged
    if unreadable:
        info["staged_unreadable"] = unreadable
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"On branch {esc(b)}" if b else f"HEAD detached at {short(head)}")
    if head is None:
        typer.echo("No commits yet (coralfs commit DIR -m MSG)")
    else:
        c = repo.read_commit(head)
        typer.echo(f"At {short(head)} {first_line(c.message)}")
        typer.echo(f"{info['files']} files, {human(info['bytes'])}{_links_dirs(info['links'], info['dirs'])}")
    from .staging_cmds import print_changes
    for sb, ch in staged.items():
        typer.echo(f"Staged on branch {esc(sb)} (uncommitted; `coralfs mount REPO MNT --write -b {esc(sb)}` resumes them):")
        print_changes(ch)
    for sb in unreadable:
        typer.echo(f"Staged on branch {esc(sb)}: not readable by you (another user's staging area)")


def _mount_status(mount: str, as_json: bool) -> None:
    from .staging_cmds import control, print_changes
    st = control(mount, {"op": "status"})
    if as_json:
        typer.echo(json.dumps(st))
        return
    base = st["base"][:12] if st["base"] else "no commits yet"
    typer.echo(f"Writable mount of branch {esc(st['branch'])} at {base}")
    if st["head"] != st["base"]:
        typer.echo(f"  the branch moved to {(st['head'] or '')[:12]} since; the next commit puts these changes on it")
    if not st["changes"]:
        typer.echo("nothing staged")
    else:
        typer.echo(f"{len(st['changes'])} staged change(s):")
        print_changes(st["changes"])
    if st["open_for_writing"]:
        typer.echo("open for writing: " + ", ".join(esc(p) for p in st["open_for_writing"]))
    failed = (st.get("auto_commit") or {}).get("last_error")
    if failed:
        when = time.strftime("%H:%M:%S", time.localtime(failed["time"]))
        retry = (f"next try in {max(0, round(failed['next_attempt'] - time.time()))} s"
                 if failed.get("next_attempt") else "next try after the debounce")
        typer.echo(f"auto-commit failed at {when} ({failed['attempts']} attempt(s), {retry}): {esc(failed['error'])}")


def _graph_rows(repo, commits):
    """A compact lane graph: one column per line of history in flight."""
    lanes: list = []
    for oid, c in commits:
        if oid not in lanes:
            lanes.append(oid)
        col = lanes.index(oid)
        row = "".join("* " if i == col else "| " for i in range(len(lanes)))
        parents = list(c.parents)
        new = lanes[:col] + ([parents[0]] if parents else []) + lanes[col + 1:]
        for p in parents[1:]:
            if p not in new:
                new.append(p)
        seen, lanes = set(), []
        for x in new:
            if x not in seen:
                seen.add(x)
                lanes.append(x)
        yield row, len(parents) > 1


@app.command()
def log(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Where to start", autocompletion=complete_ref)] = "HEAD",
    oneline: Annotated[bool, typer.Option("--oneline", help="One line per commit")] = False,
    n: Annotated[int | None, typer.Option("-n", "--max-count", help="Show at most N commits")] = None,
    graph: Annotated[bool, typer.Option("--graph", help="Draw the history graph")] = False,
    first_parent: Annotated[bool, typer.Option("--first-parent", help="Follow only first parents")] = False,
    stat: Annotated[bool, typer.Option("--stat", help="The files, links and empty directories each commit changed "
                                                      "(against its first parent)")] = False,
) -> None:
    """Show commit history."""
    repo = open_repo(ctx)
    commits = list(repo.log(ref, n, first_parent))
    decorations: dict = {}
    for name, oid in repo.branches().items():
        decorations.setdefault(oid, []).append(esc(name))
    for name, oid in repo.tags().items():
        decorations.setdefault(repo.peel(oid), []).append(f"tag: {esc(name)}")
    rows = list(_graph_rows(repo, commits)) if graph else [("", False)] * len(commits)
    for (oid, c), (prefix, _merge) in zip(commits, rows):
        deco = f" ({', '.join(decorations[oid])})" if oid in decorations else ""
        first = first_line(c.message)
        if oneline:
            typer.echo(f"{prefix}{short(oid)}{deco} {first}")
            if stat:
                _log_stat(repo, oid, c, prefix.replace("*", "|"))
            continue
        typer.echo(f"{prefix}commit {to_hex(oid)}{deco}")
        pad = prefix.replace("*", "|")
        if len(c.parents) > 1:
            typer.echo(f"{pad}Merge: {' '.join(short(p, 8) for p in c.parents)}")
        typer.echo(f"{pad}Author: {esc(c.author)}")
        typer.echo(f"{pad}Date:   {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(c.time))}")
        if c.metadata.get("metrics"):
            typer.echo(f"{pad}Metrics: " + ", ".join(esc(f"{k}={v}") for k, v in c.metadata["metrics"].items()))
        typer.echo(pad)
        for line in (c.message or "").splitlines() or [""]:
            typer.echo(f"{pad}    {esc(line)}")
        typer.echo(pad)
        if stat:
            _log_stat(repo, oid, c, pad)
            typer.echo(pad)


def _log_stat(repo: Repository, oid, c, pad: str) -> None:
    changes = repo.diff(to_hex(c.parents[0]) if c.parents else None, to_hex(oid), tensors=False)
    for ch in changes:
        typer.echo(f"{pad} {_change_line(ch)}")
    typer.echo(f"{pad} {len(changes)} path{'s' if len(changes) != 1 else ''} changed")


@app.command()
def show(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="REF or REF:PATH", autocompletion=complete_ref)] = "HEAD",
    as_json: JsonOpt = False,
) -> None:
    """Show a commit and its files, or one file's tensors (REF:PATH)."""
    from ..api import describe_commit
    repo = open_repo(ctx)
    ref, _, path = target.partition(":")
    oid = repo.resolve(ref or "HEAD")
    tree = repo.tree_of(oid)
    if not path:
        info = describe_commit(repo, oid)
        files = []
        for p, e in tree.entries.items():
            if e.is_symlink or e.is_dir:
                files.append(_special_entry(repo, p, e))
                continue
            f = repo.read_file(e.file)
            files.append({"path": p, "kind": "file", "format": f.format, "size": f.size,
                          "stored": repo.file_stored_bytes(f), "tensors": len(f.tensors()), "id": to_hex(e.file)})
        info["files"] = files
        from ..integrations.published import of_commits
        pubs = of_commits(repo, [info["id"]]).get(info["id"], [])
        if pubs:   # which registry versions this commit became (coralfs publish)
            info["published"] = [p.to_json() for p in pubs]
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        typer.echo(f"commit {info['id']}")
        for p in info["parents"]:
            typer.echo(f"parent {p}")
        typer.echo(f"Author: {esc(info['author'])}\nDate:   {time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(info['time']))}")
        from ..ingest import OWNERS_KEY
        meta = dict(info["metadata"])
        owners = meta.pop(OWNERS_KEY, None)
        if meta:
            typer.echo(f"Metadata: {json.dumps(meta, sort_keys=True)}")
        if isinstance(owners, dict):
            typer.echo(f"Owners: uid, gid and mode of {len(owners)} paths (--preserve-owner; `--json` lists them)")
        for p in pubs:
            typer.echo(f"Published: {esc(p.label())}" + (f" ({esc(p.url)})" if p.url else ""))
        typer.echo("\n" + "\n".join(f"    {esc(line)}" for line in (info["message"] or "").splitlines() or [""]) + "\n")
        for fi in files:
            if fi["kind"] == "link":
                typer.echo(f"{'link':>11} {esc(fi['path'])} -> {esc(fi['target'])}")
            elif fi["kind"] == "dir":
                typer.echo(f"{'dir':>11} {esc(fi['path'])}/")
            else:
                typer.echo(f"{fi['format']:>11} {human(fi['size']):>10} stored {human(fi['stored']):>10}  "
                           f"{fi['tensors']:>4} tensors  {esc(fi['path'])}")
        return
    e = tree.entries.get(path.rstrip("/")) if path.endswith("/") else tree.entries.get(path)
    if e is None:
        raise CoralError(f"{path}: not in {ref or 'HEAD'} (see `coralfs show {ref or 'HEAD'}`)")
    if e.is_symlink or e.is_dir:
        fi = _special_entry(repo, path.rstrip("/"), e)
        if as_json:
            typer.echo(json.dumps(fi, indent=2))
        elif e.is_symlink:
            typer.echo(f"{esc(fi['path'])}: symbolic link to {esc(fi['target'])}")
        else:
            typer.echo(f"{esc(fi['path'])}/: empty directory")
        return
    f = repo.read_file(e.file)
    from ..diff import storage_views
    from ..formats.torchnames import label, shown
    names = storage_views(repo, f)
    rows = []
    for name, s in f.tensors().items():
        if isinstance(s, TensorSegment):
            t = repo.odb.get_object(s.tensor, Tensor)
            stored, codecs = repo.tensor_stored_bytes(t)
            rows.append({"name": name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
                         "stored": stored, "codecs": dict(codecs)})
        else:  # a small tensor in a shared pack: its bytes are counted with the file's
            rows.append({"name": name, "dtype": s.dtype, "shape": list(s.shape), "bytes": s.length,
                         "stored": 0, "codecs": {"packed": 1}})
        if name in names:  # a torch storage: the tensors viewing it, as the pickle names them
            rows[-1]["label"] = label(names[name])
            rows[-1]["views"] = [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape), "offset": v.offset}
                                 for v in names[name]]
    if as_json:
        typer.echo(json.dumps({"path": path, "format": f.format, "size": f.size, "id": to_hex(e.file),
                               "tensors": rows}, indent=2))
        return
    typer.echo(f"{esc(path)}: {f.format}, {human(f.size)}, stored {human(repo.file_stored_bytes(f))}, {len(rows)} tensors")
    for r in rows:
        codecs = ",".join(f"{k}" + (f"x{v}" if v > 1 else "") for k, v in r["codecs"].items())
        name, dt, shape = r["name"], r["dtype"], r["shape"]
        if r.get("label"):
            v = r["views"][0]
            name, dt, shape = shown(name, r["label"]), v["dtype"], v["shape"]
        typer.echo(f"  {esc(name):<50} {dt:>7} {str(shape):<16} {human(r['bytes']):>10} "
                   f"stored {human(r['stored']):>10} {codecs}")


def _special_entry(repo: Repository, path: str, e) -> dict:
    """show's record of a link (its target) or an empty directory."""
    from ..ingest import read_link
    if e.is_symlink:
        return {"path": path, "kind": "link", "target": os.fsdecode(read_link(repo, e.file, path)),
                "id": to_hex(e.file)}
    return {"path": path, "kind": "dir", "id": to_hex(e.file)}


def _target(t: bytes | None) -> str:
    return esc(os.fsdecode(t or b""))


def _side(kind: str, target: bytes | None, size: int) -> str:
    """One side of a change of kind: "link to T", "dir", "file (10 B)"."""
    return f"link to {_target(target)}" if kind == "link" else "dir" if kind == "dir" else f"file ({human(size)})"


def _special_text(c) -> str:
    """What a change of a link or an empty directory says after its status:
    ``link latest -> checkpoint-500``, ``dir logs/``, ``link latest: a -> b``."""
    p = esc(c.path)
    if c.kind_old == c.kind_new == "link":
        return f"link {p}: {_target(c.target_old)} -> {_target(c.target_new)}"
    if c.kind_old and c.kind_new:  # a path that changed kind
        return f"{p}: {_side(c.kind_old, c.target_old, c.size_old)} -> {_side(c.kind_new, c.target_new, c.size_new)}"
    kind, target = (c.kind_new, c.target_new) if c.kind_new else (c.kind_old, c.target_old)
    return f"link {p} -> {_target(target)}" if kind == "link" else f"dir {p}/"


def _change_line(c) -> str:
    """One line per changed path (log --stat)."""
    if c.special:
        return f"{c.status} {_special_text(c)}"
    return f"{c.status} {esc(c.path)} ({human(c.size_old)} -> {human(c.size_new)})"


def _print_changes(changes, stat: bool) -> None:
    from ..formats.torchnames import shown
    if not changes:
        typer.echo("no changes")
        return
    for c in changes:
        if c.special:
            typer.echo(f" {c.status:<8} {_special_text(c)}" if stat else f"{c.status} {_special_text(c)}")
            continue
        if stat:
            n = sum(1 for t in c.tensors if t.status != "unchanged")
            typer.echo(f" {esc(c.path):<50} {c.status:<8} {n:>5} tensors changed  {human(c.size_old)} -> {human(c.size_new)}")
            continue
        typer.echo(f"{c.status} {esc(c.path)} ({human(c.size_old)} -> {human(c.size_new)})")
        for t in c.tensors:
            extra = ""
            if t.max_abs is not None:
                extra = f" max|Δ|={t.max_abs:.3g}"
            if t.rel_l2 is not None:
                extra += f" relL2={t.rel_l2:.3g}"
            name, dt, shape = t.name, t.dtype, list(t.shape)
            if t.label:  # a torch storage: its state-dict key(s), the tensor's dtype and shape
                name, dt, shape = shown(t.name, t.label), t.views[0]["dtype"], list(t.views[0]["shape"])
            typer.echo(f"  {t.status:<8} {esc(name):<50} {esc(dt):>6} {str(shape):<14}{extra} stored {human(t.stored)}")
    if stat:
        typer.echo(f" {len(changes)} files changed")


def _changes_json(changes) -> str:
    def one(c) -> dict:
        d = {"path": c.path, "status": c.status, "size_old": c.size_old, "size_new": c.size_new,
             "tensors": [t.__dict__ | {"shape": list(t.shape)} for t in c.tensors],
             "kind_old": c.kind_old or None, "kind_new": c.kind_new or None}
        for side in ("target_old", "target_new"):
            if getattr(c, side) is not None:
                d[side] = os.fsdecode(getattr(c, side))
        return d
    return json.dumps([one(c) for c in changes], indent=2)


@app.command()
def diff(
    ctx: typer.Context,
    ref1: Annotated[str | None, typer.Argument(help="Revision to compare from", autocompletion=complete_ref)] = None,
    ref2: Annotated[str, typer.Argument(help="Compared against (default HEAD)", autocompletion=complete_ref)] = "HEAD",
    stat: Annotated[bool, typer.Option("--stat", help="One line per file")] = False,
    as_json: JsonOpt = False,
    visual: Annotated[bool, typer.Option("--visual", help="Magnitude bars per changed tensor (and heatmaps with --tensor)")] = False,
    tensor: Annotated[str | None, typer.Option("--tensor", help="With --visual: a |Δ| heatmap of each changed tensor "
                                                                "whose name matches this glob")] = None,
    sort: Annotated[bool, typer.Option("--sort", help="With --visual: largest relative L2 change first (default: model order)")] = False,
    ascii_only: Annotated[bool, typer.Option("--ascii", help="With --visual: plain ASCII, no colour (default off a terminal)")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="text (--visual), json, html (one offline file) or png "
                                                            "(a directory of images)")] = None,
    out: Annotated[str | None, typer.Option("-o", "--output", help="File (json, html) or directory (png) to write")] = None,
    group: Annotated[bool | None, typer.Option("--group/--no-group", help="One line per layer (name prefix); on by "
                                               "default above 60 changed tensors")] = None,
    depth: Annotated[int, typer.Option("--depth", help="Name parts that make a layer with --group", min=1)] = 2,
    textconv: Annotated[str | None, typer.Option("--textconv", help="Print a stable text summary of one checkpoint FILE "
                                                 "(for git's diff.<driver>.textconv)", metavar="FILE")] = None,
) -> None:
    """Per-file and per-tensor changes between two revisions."""
    from . import visual_out
    if textconv is not None:
        if ref1 is not None:
            raise CoralError("--textconv FILE summarizes a file on disk: give no revisions")
        visual_out.textconv(textconv)
        return
    if ref1 is None:
        raise CoralError("diff needs a revision: coralfs diff REF1 [REF2]")
    repo = open_repo(ctx)
    if visual or tensor is not None or fmt is not None or group:
        visual_out.visual(repo, ref1, ref2, glob=tensor, sort=sort, ascii_only=ascii_only, fmt=fmt or "text",
                          out=out, depth=None if group is False else depth if group else None)
        return
    changes = repo.diff(ref1, ref2, tensors=True)
    typer.echo(_changes_json(changes)) if as_json else _print_changes(changes, stat)


@app.command()
def preview(
    ctx: typer.Context,
    ref: RefArg,
    stat: Annotated[bool, typer.Option("--stat", help="One line per file")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What checking out REF would change, file by file and tensor by tensor (changes nothing)."""
    repo = open_repo(ctx)
    head = repo.head()
    target = repo.resolve(ref)
    changes = repo.diff(head.hex() if head else None, target.hex(), tensors=True)
    if as_json:
        typer.echo(_changes_json(changes))
        return
    here = repo.head_branch() or (short(head) if head else "an empty HEAD")
    typer.echo(f"checking out {esc(ref)} ({short(target)}) from {esc(here)} would change {len(changes)} files:")
    _print_changes(changes, stat)


@app.command()
def watch(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(help="The directory a trainer saves checkpoints into")],
    branch: BranchOpt = None,
    debounce: Annotated[float, typer.Option("--debounce", help="Seconds without file events before an entry counts as settled")] = 30.0,
    pattern: Annotated[str, typer.Option("--pattern", help="Which entries of DIRECTORY are checkpoints")] = "checkpoint-*",
    exit_after: Annotated[int | None, typer.Option("--exit-after", help="Stop after this many commits")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", help="Stop after this many seconds")] = None,
    min_interval: Annotated[float | None, typer.Option("--min-interval",
                                                       help="Seconds between two commits (default: config staging.min_interval)")] = None,
    keep_last: Annotated[int | None, typer.Option("--keep-last",
                                                  help="Tag each commit auto/BRANCH/N and keep the newest N tags (default: config "
                                                       "staging.keep_last; 0: no tags)")] = None,
) -> None:
    """Commit each settled checkpoint a trainer writes into DIRECTORY (inotify)."""
    from ..watch import Watcher
    repo = open_repo(ctx)
    if min_interval is None:
        min_interval = float(repo.config.get("staging.min_interval"))
    if keep_last is None:
        keep_last = repo.config.get("staging.keep_last")

    def report(entry: str, res) -> None:
        st = res.stats
        typer.echo(f"[{esc(w.branch)} {short(res.commit)}] {esc(os.path.basename(entry))}: {human(st.logical)} logical, "
                   f"{human(st.stored)} newly stored", )

    w = Watcher(repo, directory, branch=branch, pattern=pattern, debounce=debounce, on_commit=report,
                min_interval=min_interval, keep_last=keep_last)
    typer.echo(f"watching {esc(w.directory)} for {esc(pattern)} (settled after {debounce:g} s) -> branch {esc(w.branch)}")
    try:
        n = w.run(exit_after=exit_after, timeout=timeout)
    except KeyboardInterrupt:
        n = None
    if n is not None:
        typer.echo(f"{n} checkpoints committed")
