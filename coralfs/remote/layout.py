"""What a coralfs remote holds: the layout every reader and writer of a remote agrees on
(push/fetch/clone here, remote mounts in coralfs/remote/store.py).

At the remote's prefix (a bucket prefix, a container prefix or a directory)::

    coralfs-remote.json      {"format": 1}: written by the first push (put_if absent);
                             clone, fetch and mount refuse a remote without it or with any
                             other content, in one line
    config.toml              the storage config readers need (core.format, storage.*),
                             copied from the pushing repository on the first push
    HEAD                     "ref: refs/heads/NAME\\n" (the branch a clone checks out)
    refs/heads/NAME          the same text as a local ref: 64 hex digits and a newline;
    refs/tags/NAME           annotated tags point at Tag objects. An empty blob is a
                             deleted ref (a tombstone: a delete is a conditional write too)
    logs/REF                 the remote reflog of each ref, appended by compare-and-swap
    packs/pack-<id>.pack     frames as the local store holds them, concatenated
    packs/pack-<id>.idx      their index (coralfs/remote/packs.py); written after its
                             pack, so a pack without an index is an interrupted upload:
                             never read, removed by the push that left it
    loose/<hex>              single frames put by a remote ObjectStore; read by fetch too

Invariant that makes resuming cheap: a push uploads objects only after everything they
reference (post-order: chunks, tensors, files, trees, commits, tags), one pack after the
other, so an object the remote has comes with everything it reaches. A push therefore
stops its walk at objects the remote has, and a ref moves (by compare-and-swap) only once
its objects are all there.
"""

from __future__ import annotations

import json
import tomllib

from ..objects.config import Config
from .blobs import BlobNotFound, BlobStore, PreconditionFailed, RemoteError

MARKER = "coralfs-remote.json"
CONFIG = "config.toml"
HEAD = "HEAD"
LOOSE = "loose/"
LOGS = "logs/"
FORMAT = 1
# The config sections a reader of the remote's objects needs; nothing else crosses.
SHARED_SECTIONS = ("core", "storage")


class NotARemote(RemoteError):
    exit_code = 2


def check_remote(blobs: BlobStore) -> None:
    """Refuse a remote that is not a coralfs remote of a format this code reads."""
    try:
        data = blobs.get(MARKER)
    except BlobNotFound:
        raise NotARemote(f"{blobs.url} is not a coralfs remote (no {MARKER}): push to it first, "
                         "or check the URL") from None
    try:
        meta = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        shown = data[:60].decode("utf-8", "replace")
        raise NotARemote(f"{blobs.url}: {MARKER} holds {shown!r}; this coralfs reads remote format {FORMAT}")


def is_initialized(blobs: BlobStore) -> bool:
    return blobs.head(MARKER) is not None


def initialize(blobs: BlobStore, config: Config, branch: str | None) -> None:
    """First push: the storage config, HEAD, then the marker (a reader that sees the marker
    sees the rest). Each is put only if absent, so two first pushes agree."""
    shared = {s: dict(config.data.get(s, {})) for s in SHARED_SECTIONS}
    shared["core"] = {"format": int(config.get("core.format"))}   # not core.profile: a local choice
    lines = []
    for section in sorted(shared):
        lines.append(f"[{section}]")
        for k, v in sorted(shared[section].items()):
            lines.append(f"{k} = {_toml(v)}")
    for key, data in ((CONFIG, ("\n".join(lines) + "\n").encode()),
                      (HEAD, f"ref: refs/heads/{branch or 'main'}\n".encode()),
                      (MARKER, json.dumps({"format": FORMAT}).encode() + b"\n")):
        try:
            blobs.put_if(key, data, None)
        except PreconditionFailed:
            pass  # another first push wrote it: theirs stands
    check_remote(blobs)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v) if isinstance(v, int) else json.dumps(str(v))


def read_config(blobs: BlobStore) -> dict[str, dict]:
    """The remote's storage config (sections core, storage), {} if it has none."""
    try:
        data = blobs.get(CONFIG)
    except BlobNotFound:
        return {}
    try:
        cfg = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise RemoteError(f"{blobs.url}: {CONFIG} does not parse ({e}); push from a repository to rewrite it") from None
    return {s: v for s, v in cfg.items() if s in SHARED_SECTIONS and isinstance(v, dict)}


def check_layout(blobs: BlobStore):
    """The layout line of ``coralfs remote doctor``: empty, or a format this code reads."""
    from .doctor import Check
    try:
        if blobs.head(MARKER) is None:
            return Check("layout", True, "empty: the first push writes it")
        check_remote(blobs)
        return Check("layout", True, f"a coralfs remote, format {FORMAT}")
    except RemoteError as e:
        return Check("layout", False, f"{e}; point the remote at another prefix, or use a coralfs that reads it")


def loose_key(hex_id: str) -> str:
    return LOOSE + hex_id
