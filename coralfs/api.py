"""The Python API users import: ``coralfs.Repository`` and the writable-mount requests.

There is one Repository class (coralfs/objects/repository.py); its operations that need
the layers above the object store (commit files split by format, export, diff, storage
reports) are reached through :class:`Operations`, which ``coralfs/__init__.py`` registers
as every Repository's FormatOps. See docs/decisions.md, "Layout of the upper half".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from . import diff as _diff
from . import export as _export
from . import ingest as _ingest
from .diff import FileChange, TensorChange
from .ingest import CommitResult, collect_sources
from .objects.errors import CoralError
from .objects.ids import ObjectId
from .objects.kinds import File, Tensor
from .objects.repository import FormatOps, Repository


class Operations(FormatOps):
    """The FormatOps of every Repository: each method is one function of the layer that
    owns it."""

    def commit_paths(self, repo: Repository, sources: list[str], message: str, **options: Any) -> CommitResult:
        return _ingest.commit_paths(repo, sources, message, **options)

    def export(self, repo: Repository, rev: str, dest: str, include: list[str] | None,
               paths: list[str] | None, preserve_owner: bool = False) -> list[str]:
        return _export.export_rev(repo, rev, dest, include, paths, preserve_owner)

    def safetensors_header(self, repo: Repository, file_id: ObjectId) -> tuple[int, dict]:
        return _export.safetensors_header(repo, file_id)

    def iter_subset(self, repo: Repository, file_id: ObjectId, include: list[str]) -> Iterator[bytes]:
        return _export.iter_subset(repo, file_id, include)

    def diff(self, repo: Repository, a: str | None, b: str, *, tensors: bool = True) -> list[FileChange]:
        return _diff.diff(repo, a, b, tensors=tensors)

    def tensor_stored_bytes(self, repo: Repository, tensor: Tensor) -> tuple[int, Counter]:
        return _diff.tensor_stored_bytes(repo, tensor)

    def file_stored_bytes(self, repo: Repository, f: File) -> int:
        return _diff.file_stored_bytes(repo, f)

    def stats(self, repo: Repository) -> dict:
        return _diff.stats(repo)


def derive(repo: Repository, tree, parent) -> dict:
    """``derived_from`` records of a new tree (see coralfs.analysis.relations.infer)."""
    from .analysis.relations import infer
    found = infer(repo, tree, parent)
    return {"derived_from": found} if found else {}


def infer_derivations(repo: Repository) -> Repository:
    """From now on, ``repo``'s commits of paths record ``derived_from`` for a file with no
    same-path predecessor whose tensors match a model the repository holds
    (coralfs.analysis.relations): what `coralfs commit`, `import` and `watch` do. Returns
    ``repo``."""
    repo.commit_annotate = lambda tree, parent: derive(repo, tree, parent)
    return repo


OPERATIONS = Operations()


def describe_commit(repo: Repository, oid: ObjectId) -> dict:
    return repo.describe_commit(oid)


__all__ = ["CommitResult", "FileChange", "Operations", "Repository", "TensorChange", "collect_sources",
           "commit_mount", "describe_commit", "infer_derivations", "mount_status"]


# -- writable mounts ---------------------------------------------------------------------
def commit_mount(mountpoint: str, message: str, *, metadata: dict | None = None,
                 preserve_owner: bool = False) -> dict:
    """Commit what was saved into the writable mount at ``mountpoint`` (what ``coralfs
    commit --mount`` does), from a training script. Returns the daemon's answer: ``commit``
    (hex id, or None when nothing changed), ``changes``, ``logical`` and ``stored`` bytes.
    The author is the mount's owner (its ``user.name``). ``preserve_owner``: also record
    uid, gid and mode per path in the commit's metadata (``--preserve-owner``). Raises
    CoralError with the mount's one-line message when it refuses."""
    req = {"op": "commit", "message": message, "metadata": metadata}
    if preserve_owner:
        req["preserve_owner"] = True
    return _mount_request(mountpoint, req)


def mount_status(mountpoint: str) -> dict:
    """What the writable mount at ``mountpoint`` has staged (``changes``, ``base``, ...)."""
    return _mount_request(mountpoint, {"op": "status"})


def _mount_request(mountpoint: str, req: dict) -> dict:
    from .fs.writable.control import request
    answer = request(mountpoint, req)
    if not answer.get("ok"):
        err = CoralError(answer.get("error") or "the mount refused the request")
        err.exit_code = answer.get("exit_code") or 1
        raise err
    return answer

