"""Provenance: what a commit records about how its weights were made (the source model, the
dataset and training config by their hashes, the command line, framework versions) under
``provenance`` in its metadata, and the training lineage a commit's ``derived_from``
records trace back through the repository."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field

from ..analysis.lineage import derived_sources
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, to_hex
from ..objects.repository import Repository

FRAMEWORKS = ("coralfs", "torch", "transformers", "safetensors", "numpy", "accelerate", "keras", "jax", "tensorflow")
BLOCK = 4 << 20


def _hash_file(h, path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(BLOCK)
            if not b:
                return n
            h.update(b)
            n += len(b)


def hash_path(path: str) -> dict:
    """sha256 of a file, or of a directory (each regular file's relative path and bytes, in
    sorted order; links by their target text, never followed)."""
    if not os.path.lexists(path):
        raise CoralError(f"{path}: no such file or directory")
    if os.path.isfile(path) and not os.path.islink(path):
        return {"path": path, "sha256": _digest(path), "bytes": os.path.getsize(path), "files": 1}
    h = hashlib.sha256()
    files = total = 0
    for dirpath, dirs, names in os.walk(path, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
            if os.path.islink(full):
                h.update(b"link\0" + os.readlink(full).encode("utf-8", "surrogateescape") + b"\0")
            elif os.path.isfile(full):
                total += _hash_file(h, full)
                files += 1
            h.update(b"\0")
    return {"path": path, "sha256": h.hexdigest(), "bytes": total, "files": files}


def _digest(path: str) -> str:
    h = hashlib.sha256()
    _hash_file(h, path)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of the frameworks installed here (read from package metadata: nothing is
    imported)."""
    out = {"python": platform.python_version()}
    for name in FRAMEWORKS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def record(datasets: list[str] | None = None, config: str | None = None, source: str | None = None,
           argv: list[str] | None = None) -> dict:
    """The ``provenance`` metadata of a commit being made now."""
    out: dict = {"command": " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv)),
                 "versions": versions()}
    if datasets:
        out["datasets"] = [hash_path(d) for d in datasets]
    if config:
        if not os.path.isfile(config):
            raise CoralError(f"--config {config}: not a file")
        out["config"] = hash_path(config)
    if source:
        out["source"] = source
    return out


@dataclass
class Step:
    commit: str
    message: str
    provenance: dict
    derived_from: list[dict] = field(default_factory=list)
    depth: int = 0

    def to_json(self) -> dict:
        return {"commit": self.commit, "message": self.message, "provenance": self.provenance,
                "derived_from": self.derived_from, "depth": self.depth}


def lineage_of(repo: Repository, ref: str, limit: int = 100) -> list[Step]:
    """The commit and, depth first, the commits its ``derived_from`` records name (and
    theirs), each once; sources outside the repository end a branch of the walk."""
    out: list[Step] = []
    seen: set[ObjectId] = set()
    stack: list[tuple[ObjectId, int]] = [(repo.resolve(ref), 0)]
    while stack and len(out) < limit:
        oid, depth = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        c = repo.read_commit(oid)
        recs = c.metadata.get("derived_from")
        recs = recs if isinstance(recs, list) else [recs] if isinstance(recs, dict) else []
        out.append(Step(to_hex(oid), (c.message.splitlines() or [""])[0], dict(c.metadata.get("provenance") or {}),
                        [r for r in recs if isinstance(r, dict)], depth))
        for src, _rel in reversed(derived_sources(c.metadata)):
            if src.startswith("ext:"):
                continue
            try:
                stack.append((repo.resolve(src), depth + 1))
            except CoralError:
                continue   # a commit this repository does not hold (another repository's)
    return out
