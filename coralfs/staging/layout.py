"""Where a repository keeps its staging areas and stashes, and the names of the pins
that keep what they need alive through gc."""

from __future__ import annotations

import os
from urllib.parse import quote, unquote

from ..objects.pins import pin_ids


def _q(branch: str) -> str:
    return quote(branch, safe="")


def staging_root(repo) -> str:
    return os.path.join(repo.path, "staging")


def base_pin(branch: str) -> str:
    """The pin that keeps what the staging area of ``branch`` needs."""
    return f"staging/{_q(branch)}/base"


def stash_pin(branch: str, n: int) -> str:
    """The pin that keeps the committed files stash ``n`` of ``branch`` names."""
    return f"staging/{_q(branch)}/stash/{n}"


def pin_legacy_roots(repo) -> None:
    """Staging areas written before pins kept their gc roots in ``*.roots`` files beside
    them (``branches/<b>/base.roots``, ``stash/<b>/<n>/stash.roots``): turn each into its
    pin, then remove it. Run before gc and fsck and when a staging area opens."""
    root = staging_root(repo)
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if f not in ("base.roots", "stash.roots"):
                continue
            rel = os.path.relpath(dirpath, root).split(os.sep)
            if f == "base.roots" and len(rel) == 2 and rel[0] == "branches":
                name = f"staging/{rel[1]}/base"
            elif f == "stash.roots" and len(rel) == 3 and rel[0] == "stash" and rel[2].isdigit():
                name = f"staging/{rel[1]}/stash/{rel[2]}"
            else:
                continue
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                ids = pin_ids(fh.read(), os.path.relpath(path, repo.path))
            repo.pins.set(name, ids)
            os.unlink(path)


def stage_dir(repo, branch: str) -> str:
    return os.path.join(staging_root(repo), "branches", _q(branch))


def staged_branches(repo) -> list[str]:
    d = os.path.join(staging_root(repo), "branches")
    if not os.path.isdir(d):
        return []
    return sorted(unquote(n) for n in os.listdir(d) if os.path.exists(os.path.join(d, n, "stage.db")))


def stash_root(repo, branch: str) -> str:
    """Where the stashes of ``branch`` live (one numbered directory each)."""
    return os.path.join(staging_root(repo), "stash", _q(branch))

