"""Releases on a repository: annotated tags named ``vX.Y.Z[-PRE.N][+BUILD]``.

A release tag is never moved or replaced: creation goes through ``create_tag`` without
force, whose compare-and-swap from "no such tag" also stops two concurrent releases
of the same version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..objects.errors import CoralError
from ..objects.ids import ObjectId, short, to_hex
from ..objects.kinds import Tag
from ..objects.repository import Repository
from . import semver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    version: semver.Version
    tag: str
    commit: ObjectId
    time: int
    message: str
    annotated: bool

    def to_json(self) -> dict:
        return {"version": str(self.version), "tag": self.tag, "commit": to_hex(self.commit),
                "time": self.time, "message": self.message, "annotated": self.annotated}


def list_releases(repo: Repository) -> list[Release]:
    """Every tag that names a semantic version, lowest precedence first. Other tags
    (``v1``, ``auto/main/3``) are not releases and are left out."""
    out = []
    for name, oid in repo.tags().items():
        version = semver.parse_tag(name)
        if version is None:
            continue
        obj = repo.odb.get_object(oid)
        if isinstance(obj, Tag):
            out.append(Release(version, name, repo.peel(oid), obj.time, obj.message, True))
        else:  # a lightweight tag: the commit's own date and message stand in
            c = repo.read_commit(oid)
            out.append(Release(version, name, oid, c.time, c.message, False))
    # Equal precedence (differing build metadata only) keeps a stable order by name.
    return sorted(out, key=lambda r: (r.version.key(), r.tag))


def create_release(repo: Repository, part: str, ref: str = "HEAD", *, pre: str | None = None,
                   build: str | None = None, message: str = "") -> Release:
    """Tag ``ref`` with the next ``part`` version (see :func:`semver.next_version`)."""
    with repo.write_session():
        commit = repo.resolve(ref)
        releases = list_releases(repo)
        for r in releases:
            if r.commit == commit:
                raise CoralError(f"{short(commit)} is already released as {r.tag}; a commit gets one release")
        version = semver.next_version((r.version for r in releases), part, pre, build)
        text = message or f"Release {version.tag}"
        tid = repo.create_tag(version.tag, to_hex(commit), text)
        log.info("released %s as %s", short(commit), version.tag)
        tag = repo.odb.get_object(tid)
        return Release(version, version.tag, commit, tag.time, text, True)
