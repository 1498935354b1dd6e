"""gc: remove what nothing reaches."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import CoralError
from .reach import mark

if TYPE_CHECKING:
    from .repository import Repository


class GcRefused(CoralError):
    exit_code = 3

    def __init__(self, problems: list[str]) -> None:
        count = f" ({len(problems)} problems; the first)" if len(problems) > 1 else ""
        hint = "" if "coralfs fsck" in problems[0] else "; run `coralfs fsck`"
        super().__init__(f"gc refused, nothing was removed{count}: {problems[0]}{hint}")


@dataclass
class GcReport:
    kept: int = 0
    removed: int = 0
    freed: int = 0
    temps: int = 0       # temp files of writers that died (a killed commit or fetch)
    temps_freed: int = 0


def gc(repo: Repository, grace_seconds: float = 3600.0, dry_run: bool = False) -> GcReport:
    """Remove objects no root (ref, reflog entry, pin: the roots() of reach) reaches.

    Marks and sweeps under the repository's exclusive session lock, so no commit is
    between storing or reusing an object and moving its ref (docs/decisions.md). Objects
    younger than ``grace_seconds`` are spared as well (a second line of defence for
    writers of older versions).
    """
    with repo.exclusive_session():
        return _gc_locked(repo, grace_seconds, dry_run)


def _gc_locked(repo: Repository, grace_seconds: float, dry_run: bool) -> GcReport:
    m, problems = mark(repo)
    if problems:
        raise GcRefused(problems)
    if m.problems:
        raise GcRefused(m.problems)
    rep = GcReport()
    store = repo.odb.store
    for oid in list(store):
        if oid in m.seen:
            rep.kept += 1
            continue
        if store.age(oid) < grace_seconds:
            rep.kept += 1
            continue
        rep.freed += store.size(oid)
        rep.removed += 1
        if not dry_run:
            store.delete(oid)
    if not dry_run and repo.similarity is not None:
        repo.similarity.remove_missing(set(store))
    stale = getattr(store, "stale_temps", None)
    for path, size in stale(grace_seconds) if stale is not None else ():
        rep.temps += 1
        rep.temps_freed += size
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return rep
