"""Releases on a repository: annotated tags named ``vX.Y.Z[-PRE.N][+BUILD]``.

A release tag is never moved or replaced: creation goes through ``create_tag`` without
force, whose compare-and-swap from "no such tag" also stops two concurrent releases
of the same version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..analysis.bump import Suggestion, suggest_bump
from ..objects import history
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
    metrics: dict = field(default_factory=dict)   # the released commit's --metric values

    def to_json(self) -> dict:
        return {"version": str(self.version), "tag": self.tag, "commit": to_hex(self.commit),
                "time": self.time, "message": self.message, "annotated": self.annotated,
                "metrics": self.metrics}


def list_releases(repo: Repository) -> list[Release]:
    """Every tag that names a semantic version, lowest precedence first. Other tags
    (``v1``, ``auto/main/3``) are not releases and are left out."""
    out = []
    for name, oid in repo.tags().items():
        version = semver.parse_tag(name)
        if version is None:
            continue
        obj = repo.odb.get_object(oid)
        commit = repo.peel(oid) if isinstance(obj, Tag) else oid
        c = repo.read_commit(commit)
        metrics = dict(c.metadata.get("metrics") or {})
        if isinstance(obj, Tag):
            out.append(Release(version, name, commit, obj.time, obj.message, True, metrics))
        else:  # a lightweight tag: the commit's own date and message stand in
            out.append(Release(version, name, commit, c.time, c.message, False, metrics))
    # Equal precedence (differing build metadata only) keeps a stable order by name.
    return sorted(out, key=lambda r: (r.version.key(), r.tag))


def last_release_before(repo: Repository, commit: ObjectId, releases: list[Release] | None = None,
                        *, strict: bool = False) -> Release | None:
    """The highest release whose commit is ``commit`` or one of its ancestors (``strict``:
    an ancestor other than ``commit`` itself)."""
    reachable = history.ancestors(repo, commit)
    if strict:
        reachable.discard(commit)
    found = [r for r in (list_releases(repo) if releases is None else releases) if r.commit in reachable]
    return found[-1] if found else None


def suggest(repo: Repository, ref: str = "HEAD") -> tuple[Release | None, Suggestion]:
    """The bump the weights ask for from the last release before ``ref`` (see
    coralfs.analysis.bump), and that release (None: no earlier release)."""
    commit = repo.resolve(ref)
    base = last_release_before(repo, commit)
    return base, suggest_bump(repo, to_hex(base.commit) if base else None, to_hex(commit))


def create_release(repo: Repository, part: str, ref: str = "HEAD", *, pre: str | None = None,
                   build: str | None = None, message: str = "") -> Release:
    """Tag ``ref`` with the next ``part`` version (see :func:`semver.next_version`);
    ``part`` "auto" takes the bump :func:`suggest` derives from the weights."""
    with repo.write_session():
        commit = repo.resolve(ref)
        if part == "auto":
            base, s = suggest(repo, to_hex(commit))
            if s.part is None:
                since = f"since {base.tag}" if base else "in this commit"
                raise CoralError(f"nothing changed {since}: no release to make (give major, minor or patch to force one)")
            part = s.part
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
