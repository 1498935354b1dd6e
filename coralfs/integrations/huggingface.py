"""Publishing a commit to the Hugging Face Hub: its files in Hub layout plus a model card.

The tree of a commit is already a Hub repository's layout (``config.json``,
``model.safetensors``, ``1_Pooling/config.json`` ... at their paths), so the files keep
their paths; a symbolic link inside the tree is published as the file it names (the Hub
stores no links) and empty directories are left out. ``README.md`` becomes the model card:
the commit's own README (its front matter and text kept) with coralfs's fields set:

- ``base_model`` / ``base_model_relation``: from the ``derived_from`` records of the commit
  or its nearest first-parent ancestor that has them (coralfs.analysis.lineage): a source
  model outside the repository by its name, a commit of this repository by the Hub repo id
  it (or an ancestor of it) was published to; fine-tune, quantized, adapter and merge are
  the Hub's finetune, quantized, adapter and merge (other relations give no relation);
- ``tags`` (coralfs added), ``library_name`` (sentence-transformers or transformers, from
  the files, unless the README names one), ``metrics`` (the names) and ``coralfs`` (commit,
  release, metric values, repository).

Only files whose content id differs from the last publish to the same repo id
(coralfs.integrations.published) are uploaded; files gone since are deleted. The Hub
commit is made with ``parent_commit`` = the revision recorded last time, so a Hub repo
that moved since (someone else pushed) is refused instead of silently missing files.

The network is reached in one place: an :data:`Uploader` (a callable taking the repo id,
the operations, the message, ``private`` and a tag); :func:`hub_uploader` is the real one.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from ..export import Item, export_files
from ..objects.errors import CoralError
from ..objects.fsck import read_link
from ..objects.ids import ObjectId, from_hex, to_hex
from ..objects.repository import Repository
from . import need
from . import published as pub

SYSTEM = "huggingface"
CARD = "README.md"
# coralfs's relation names (coralfs.analysis.relations) -> the Hub's base_model_relation
RELATIONS = {"fine-tune": "finetune", "quantized": "quantized", "adapter": "adapter", "merge": "merge"}


@dataclass
class Operation:
    """One change to the Hub repo: ``add`` (upload ``local`` as ``path``) or ``delete``."""
    op: str
    path: str
    local: str | None = None
    size: int = 0

    def line(self) -> str:
        return f"upload {self.path} ({self.size} bytes)" if self.op == "add" else f"delete {self.path}"


# (repo_id, operations, commit message, private, tag or None, parent revision or None)
# -> the Hub revision (commit id) the upload made.
Uploader = Callable[[str, list[Operation], str, bool, "str | None", "str | None"], str]


@dataclass
class Plan:
    repo_id: str
    commit: str
    release: str | None
    card: str
    files: dict[str, str]                       # Hub path -> content id, card included
    operations: list[Operation] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    base: pub.Published | None = None           # the last publish to this repo id

    def to_json(self) -> dict:
        return {"repo_id": self.repo_id, "commit": self.commit, "release": self.release,
                "operations": [{"op": o.op, "path": o.path, "size": o.size} for o in self.operations],
                "unchanged": self.unchanged, "card": self.card}


def check_repo_id(repo_id: str) -> str:
    need("huggingface_hub", "Hugging Face", "hf")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise CoralError(f"{repo_id!r} is not a Hub repo id: use NAME or NAMESPACE/NAME "
                         "(letters, digits, '-', '_', '.'; at most 96 characters)") from None
    return repo_id


# -- what gets published ----------------------------------------------------------------

def hub_files(repo: Repository, oid: ObjectId) -> dict[str, ObjectId]:
    """Hub path -> File id of the commit's files (links to files inside the tree followed;
    empty directories left out). SageMaker's archive takes the same files."""
    entries = repo.tree_of(oid).entries
    out: dict[str, ObjectId] = {}
    for path, e in entries.items():
        if e.is_dir:
            continue
        seen, cur, cur_e = set(), path, e
        while cur_e.is_symlink:
            target = read_link(repo, cur_e.file, cur).decode("utf-8", "surrogateescape")
            nxt = posixpath.normpath(posixpath.join(posixpath.dirname(cur), target))
            if target.startswith("/") or nxt.startswith("../") or nxt in seen or nxt not in entries:
                raise CoralError(f"{path} is a symbolic link to {target!r}, which is not a file of the commit: "
                                 "registries store no links (replace it by the file)")
            seen.add(nxt)
            cur, cur_e = nxt, entries[nxt]
        if cur_e.is_dir:
            raise CoralError(f"{path} is a symbolic link to the directory {cur}: registries store no links "
                             "(replace it by the files)")
        out[path] = cur_e.file
    return out


def _nearest_sources(repo: Repository, oid: ObjectId) -> list[tuple[str, str]]:
    from ..analysis.lineage import derived_sources
    cur: ObjectId | None = oid
    for _ in range(10000):
        if cur is None:
            break
        c = repo.read_commit(cur)
        found = derived_sources(c.metadata)
        if found:
            return found
        cur = c.parents[0] if c.parents else None
    return []


def _published_as(repo: Repository, commit_hex: str) -> str | None:
    """The Hub repo id ``commit_hex`` or its nearest first-parent ancestor went to."""
    hubs: dict[str, str] = {}
    for e in pub.load(repo):
        if e.system == SYSTEM:
            hubs[e.commit] = e.target
    if not hubs:
        return None
    try:
        cur: ObjectId | None = repo.resolve(commit_hex)
    except CoralError:
        return None
    while cur is not None:
        if to_hex(cur) in hubs:
            return hubs[to_hex(cur)]
        c = repo.read_commit(cur)
        cur = c.parents[0] if c.parents else None
    return None


def base_models(repo: Repository, oid: ObjectId) -> tuple[list[str], str | None]:
    """(base_model ids, base_model_relation or None) from the ancestry the repository records."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id
    bases: list[str] = []
    rels: set[str] = set()
    for src, rel in _nearest_sources(repo, oid):
        name = src[4:] if src.startswith("ext:") else _published_as(repo, src)
        if not name:
            continue
        try:
            validate_repo_id(name)
        except HFValidationError:
            continue     # a path or URL, not a Hub id: the card's text still names it
        if name not in bases:
            bases.append(name)
            rels.add(rel)
    relation = RELATIONS.get(rels.pop()) if len(rels) == 1 else ("merge" if len(bases) > 1 else None)
    return bases, relation


def model_card(repo: Repository, oid: ObjectId, repo_id: str, files: dict[str, ObjectId],
               release: str | None) -> str:
    """The README.md to publish (front matter + text), see the module docstring."""
    from huggingface_hub import ModelCard, ModelCardData
    c = repo.read_commit(oid)
    hx = to_hex(oid)
    data: dict = {}
    body = ""
    if CARD in files:
        text = b"".join(repo.open_file(files[CARD]).iter_bytes()).decode("utf-8", "replace")
        try:
            old = ModelCard(text, ignore_metadata_errors=True)
        except ValueError as e:
            raise CoralError(f"{CARD} of {hx[:12]} has front matter that is not YAML ({str(e).splitlines()[0]}): "
                             "fix it and commit again") from None
        data = old.data.to_dict()
        body = old.text.strip("\n")
    metrics = dict(c.metadata.get("metrics") or {})
    tags = list(data.get("tags") or [])
    data["tags"] = tags + [t for t in ("coralfs",) if t not in tags]
    if not data.get("library_name"):
        lib = "sentence-transformers" if "modules.json" in files else "transformers" if "config.json" in files else None
        if lib:
            data["library_name"] = lib
    bases, relation = base_models(repo, oid)
    data.pop("base_model_relation", None)
    if bases:
        data["base_model"] = bases[0] if len(bases) == 1 else bases
        if relation:
            data["base_model_relation"] = relation
    if metrics:
        data["metrics"] = sorted(set(data.get("metrics") or []) | set(metrics))
    data["coralfs"] = {"commit": hx, "release": release, "metrics": metrics or None,
                       "message": (c.message.splitlines() or [""])[0]}
    card_data = ModelCardData(**data)
    lines = [f"# {repo_id.rsplit('/', 1)[-1]}", ""] if not body else [body, ""]
    lines += ["## Version", "", f"Published by coralfs from commit `{hx}`" + (f", release `{release}`." if release else "."),
              ""]
    if bases:
        lines += [f"Base model: {', '.join(f'[{b}](https://huggingface.co/{b})' for b in bases)}"
                  + (f" ({relation})." if relation else "."), ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in sorted(metrics.items())] + [""]
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)


def plan(repo: Repository, repo_id: str, ref: str = "HEAD") -> Plan:
    """What publishing ``ref`` to ``repo_id`` would upload and delete, and the card."""
    check_repo_id(repo_id)
    oid = repo.resolve(ref)
    files = hub_files(repo, oid)
    release = pub.release_of(repo, oid)
    card = model_card(repo, oid, repo_id, files, release)
    ids = {p: to_hex(f) for p, f in files.items() if p != CARD}
    ids[CARD] = "card:" + hashlib.sha256(card.encode()).hexdigest()
    base = pub.last(repo, SYSTEM, repo_id)
    before = base.files if base else {}
    p = Plan(repo_id, to_hex(oid), release, card, ids, base=base)
    for path in sorted(ids):
        if before.get(path) == ids[path]:
            p.unchanged.append(path)
        else:
            size = len(card.encode()) if path == CARD else repo.read_file(files[path]).size
            p.operations.append(Operation("add", path, None, size))
    p.operations += [Operation("delete", path) for path in sorted(before) if path not in ids]
    return p


def stage(repo: Repository, p: Plan, dest: str) -> None:
    """Write the files the plan uploads into ``dest`` and point its operations at them."""
    items = []
    for o in p.operations:
        if o.op != "add":
            continue
        if o.path == CARD:
            items.append(Item(o.path, "file", False, lambda: [p.card.encode()]))
        else:
            fid = from_hex(p.files[o.path])
            items.append(Item(o.path, "file", False, lambda fid=fid: repo.open_file(fid).iter_bytes()))
        o.local = os.path.join(dest, o.path)
    export_files(dest, items)


# -- the one network call -----------------------------------------------------------------

def hub_uploader(repo_id: str, ops: list[Operation], message: str, private: bool, tag: str | None,
                 parent: str | None) -> str:
    """Upload with huggingface_hub (token: HF_TOKEN or the cached login); the new revision."""
    need("huggingface_hub", "Hugging Face", "hf")
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError
    token = get_token()
    if not token:
        raise CoralError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then publish again")
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=o.path, path_or_fileobj=o.local) if o.op == "add"
                  else CommitOperationDelete(path_in_repo=o.path) for o in ops]
    try:
        # without --private the Hub's default visibility (an organization may default to private)
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=message, parent_commit=parent)
        if tag:
            api.create_tag(repo_id, tag=tag, revision=info.oid, exist_ok=True)
        return info.oid
    except HfHubHTTPError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if parent and getattr(e.response, "status_code", None) in (409, 412):
            raise CoralError(f"{repo_id} changed on the Hub since coralfs published {parent[:12]} there: "
                             f"{first}") from None
        raise CoralError(f"Hugging Face Hub refused the upload to {repo_id}: {first}") from None
    except Exception as e:
        # connection errors of the HTTP client huggingface_hub uses (httpx, httpx2, ...)
        if isinstance(e, OSError) or type(e).__module__.startswith(("httpx", "httpcore", "requests", "urllib3")):
            raise CoralError(f"Hugging Face Hub at {constants.ENDPOINT} is unreachable ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}): check the network") from None
        raise


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT.rstrip("/")


@dataclass
class Result:
    plan: Plan
    revision: str | None     # None: nothing to upload
    entry: pub.Published | None


def publish(repo: Repository, repo_id: str, ref: str = "HEAD", *, private: bool = False,
            uploader: Uploader | None = None) -> Result:
    """Upload what changed since the last publish to ``repo_id`` and record the revision."""
    p = plan(repo, repo_id, ref)
    if not p.operations:
        return Result(p, None, None)
    up = uploader or hub_uploader
    tmp = tempfile.mkdtemp(prefix="coralfs-publish-")
    try:
        stage(repo, p, tmp)
        msg = f"coralfs {p.commit[:12]}" + (f" ({p.release})" if p.release else "")
        revision = up(repo_id, p.operations, msg, private, p.release, p.base.version if p.base else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    entry = pub.record(repo, pub.Published(SYSTEM, repo_id, p.commit, revision, release=p.release,
                                           url=f"{_endpoint()}/{repo_id}/tree/{revision}", files=p.files))
    return Result(p, revision, entry)
