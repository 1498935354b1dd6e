"""Stashes: the staged changes of a branch set aside (their rows and spool files under
``staging/stash/<branch>/<n>/``, the committed files they name kept by the pin
``staging/<branch>/stash/<n>``) and applied again by :func:`stash_pop`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from typing import TYPE_CHECKING

from ..objects.durable import fsync_dir, make_dirs, write_durable
from ..objects.ids import from_hex, to_hex
from ..objects.repository import in_write_session
from .entries import Entry, StagingError
from .layout import stash_pin, stash_root
from .overlay import MAP_SUFFIX

if TYPE_CHECKING:
    from .area import StagingArea


@in_write_session
def stash(area: StagingArea, message: str = "") -> int:
    """Move the changes into a new stash and reset to the branch head."""
    changes = area.changes()
    if not changes:
        raise StagingError("no staged changes to stash")
    root = stash_root(area.repo, area.branch)
    n = max([int(x) for x in os.listdir(root) if x.isdigit()], default=-1) + 1 if os.path.isdir(root) else 0
    d = os.path.join(root, str(n))
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    make_dirs(tmp)
    rows, roots = [], [area.base] if area.base else []
    for c in changes:
        e = area.entries.get(c.path)
        row = {"status": c.status, "path": c.path, "kind": c.kind}
        if e is not None and c.status != "deleted":
            row.update(mode=e.mode, uid=e.uid, gid=e.gid)
            if e.link:
                row["link"] = e.link
            if e.kind == "l":
                row["target"] = e.target
            elif e.spool:
                row["spool"] = e.spool
                # A second name for the same bytes (instant; the spool's data is durable
                # already): the stage's name goes with the reset below. Hard links share it.
                if not os.path.exists(os.path.join(tmp, e.spool)):
                    os.link(area.spool_path(e.spool), os.path.join(tmp, e.spool))
                    ov = area.overlay(e.spool)
                    if ov is not None:  # its map, and the committed File the map reads
                        ov.sync()
                        os.link(ov.path, os.path.join(tmp, e.spool + MAP_SUFFIX))
                        roots.append(ov.fid)
            elif e.fid is not None:
                row["fid"] = to_hex(e.fid)
                roots.append(e.fid)
        rows.append(row)
    info = {"message": message or f"staged changes on {area.branch}", "time": int(time.time()),
            "base": to_hex(area.base) if area.base else None, "changes": rows}
    write_durable(os.path.join(tmp, "stash.json"), json.dumps(info, indent=1).encode())
    # The pin first: a crash before the rename leaves a pin without a stash (it keeps
    # objects a little longer), never a stash whose committed files gc may delete.
    area.repo.pins.set(stash_pin(area.branch, n), roots)
    fsync_dir(tmp)
    os.rename(tmp, d)
    fsync_dir(root)
    area._reset(area.head())
    return n


@in_write_session
def stash_pop(area: StagingArea, index: int | None = None) -> dict:
    """Apply a stash (the newest by default) onto the working tree, then drop it."""
    items = list_stashes(area.repo, area.branch)
    if not items:
        raise StagingError(f"no stashes for branch {area.branch!r}")
    pick = items[0] if index is None else next((s for s in items if s["index"] == index), None)
    if pick is None:
        raise StagingError(f"no stash {index} for branch {area.branch!r} (see `coralfs stash list`)")
    if area.changes():
        raise StagingError("the staging area has changes: commit or stash them before `stash pop`")
    root = stash_root(area.repo, area.branch)
    d = os.path.join(root, str(pick["index"]))
    now = time.time_ns()
    spools: dict[str, str] = {}    # the stash's spool name -> the stage's
    groups: dict[str, Entry] = {}  # hard-link group -> its one Entry
    with area.db:
        area.db.execute("BEGIN IMMEDIATE")
        for row in pick["changes"]:
            path, kind = row["path"], row.get("kind", "f")
            old = area.entries.get(path)
            if row["status"] == "deleted":
                if old is not None and old.kind == kind and not (kind == "d" and area.dirs.get(path)):
                    area._drop(path)
                continue
            if row.get("link") in groups:
                e = groups[row["link"]]
            else:
                owner = {"uid": row.get("uid"), "gid": row.get("gid"), "link": row.get("link")}
                if kind == "d":
                    e = Entry("d", row["mode"], now, **owner)
                elif kind == "l":
                    e = Entry("l", row["mode"], now, target=row["target"], **owner)
                elif row.get("spool"):
                    name = spools.get(row["spool"])
                    if name is None:
                        name = spools[row["spool"]] = secrets.token_hex(8)
                        os.link(os.path.join(d, row["spool"]), area.spool_path(name))
                        if os.path.exists(os.path.join(d, row["spool"] + MAP_SUFFIX)):
                            os.link(os.path.join(d, row["spool"] + MAP_SUFFIX), area.spool_path(name) + MAP_SUFFIX)
                    e = Entry("f", row["mode"], now, None, name, **owner)
                else:
                    e = Entry("f", row["mode"], now, from_hex(row["fid"]), **owner)
                if e.link:
                    groups[e.link] = e
            if old is not None and old.kind == "d" and kind != "d":
                raise StagingError(f"cannot pop the stash: {path} is a directory now")
            if old is not None and old.kind == "d" and kind == "d":
                continue
            area._add_parents(path, now)
            area._put(path, e)
    fsync_dir(area.spool_dir)
    area._write_roots()  # before the stash (and its pin) goes
    shutil.rmtree(d)
    fsync_dir(root)
    area.repo.pins.delete(stash_pin(area.branch, pick["index"]))
    return pick


def list_stashes(repo, branch: str) -> list[dict]:
    """The stashes of a branch, newest first (each with its index)."""
    d = stash_root(repo, branch)
    out = []
    if os.path.isdir(d):
        for name in os.listdir(d):
            if not name.isdigit():
                continue
            try:
                with open(os.path.join(d, name, "stash.json")) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            info["index"] = int(name)
            out.append(info)
    return sorted(out, key=lambda s: -s["index"])
