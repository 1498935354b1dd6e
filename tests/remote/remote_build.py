"""Build a remote from a local repository the way a push lays it out (packs of the
repository's frames as stored, in walk order, then config.toml, refs and HEAD), for the
remote store and remote mount tests, written with coralfs.remote.packs.PackBuilder."""

from __future__ import annotations

import json
import os

from coralfs.objects.kinds import BytesSegment, Commit, File, PackSegment, Tag, Tensor, TensorSegment, Tree
from coralfs.objects.refs import HEADS, TAGS
from coralfs.objects.repository import Repository
from coralfs.remote.blobs import BlobStore
from coralfs.remote.packs import PackBuilder


def walk_order(repo: Repository) -> list[bytes]:
    """Every object reachable from the refs, each once: per commit its tree, files, then
    each file's tensors and chunks in file order (what a reader of a file reads in turn)."""
    seen: dict[bytes, None] = {}

    def add(o: bytes) -> bool:
        if o in seen:
            return False
        seen[o] = None
        return True

    def chunk(o: bytes) -> None:
        if add(o):
            h = repo.odb.chunk_header(o)
            if h.base is not None:
                chunk(h.base)

    starts = list(repo.branches().values()) + list(repo.tags().values())
    stack = list(starts)
    while stack:
        o = stack.pop()
        if not add(o):
            continue
        obj = repo.odb.get_object(o)
        if isinstance(obj, Tag):
            stack.append(obj.target)
            continue
        assert isinstance(obj, Commit)
        stack.extend(obj.parents)
        tree = repo.odb.get_object(obj.tree, Tree)
        add(obj.tree)
        for e in tree.entries.values():
            if e.is_dir or not add(e.file):
                continue
            f = repo.odb.get_object(e.file, File)
            for s in f.segments:
                if isinstance(s, TensorSegment):
                    if add(s.tensor):
                        for c in repo.odb.get_object(s.tensor, Tensor).chunks:
                            chunk(c)
                elif isinstance(s, (BytesSegment, PackSegment)):
                    for c, _n in s.chunks:
                        chunk(c)
    return list(seen)


def build_remote(repo_path: str, blobs: BlobStore, pack_size: int | None = None) -> dict:
    """Write ``repo_path``'s objects and refs to ``blobs``; returns what was written."""
    repo = Repository.open(repo_path)
    packs = []
    b = PackBuilder()
    for o in walk_order(repo):
        b.add(o, repo.store.get(o))
        if b.full() or (pack_size is not None and b.size >= pack_size):
            packs.append(b.upload(blobs))
            b = PackBuilder()
    if b.records:
        packs.append(b.upload(blobs))
    with open(os.path.join(repo_path, "config.toml"), "rb") as f:
        blobs.put("config.toml", f.read())
    for prefix, refs in ((HEADS, repo.branches()), (TAGS, repo.tags())):
        for name, oid in refs.items():
            blobs.put(prefix + name, (oid.hex() + "\n").encode())
    blobs.put("HEAD", f"ref: {HEADS}{repo.head_branch()}\n".encode())
    blobs.put("coralfs-remote.json", json.dumps({"format": 1}).encode())
    return {"packs": packs}
