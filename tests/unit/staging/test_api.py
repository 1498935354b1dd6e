"""Code outside coralfs/staging uses the staging area through its public methods only: no
module there reaches for a private member of StagingArea (as the mount once called
``stage._unlink_spool``)."""

from __future__ import annotations

import ast
import inspect
import pathlib
import sqlite3
from types import SimpleNamespace

import coralfs
from coralfs.staging import StagingArea

ROOT = pathlib.Path(coralfs.__file__).parent


def _private_members() -> set[str]:
    names = {n for n in dir(StagingArea) if n.startswith("_") and not n.startswith("__")}
    db = sqlite3.connect(":memory:")
    # Instance attributes too (the constructor has no side effects, so a stand-in does).
    st = StagingArea(SimpleNamespace(path="/nonexistent"), "main", db)
    db.close()
    return names | {n for n in vars(st) if n.startswith("_") and not n.startswith("__")}


def test_private_members_of_the_staging_area_are_used_only_inside_coralfs_staging():
    private = _private_members()
    assert "_recover" in private and "_lock_fd" in private  # the check sees what it guards
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] in ("staging", "objects", "formats"):
            continue  # the package itself, and layers below it (they never see a staging area)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == [], found


def test_the_staging_area_keeps_one_method_per_operation_the_mount_calls():
    for name in ("open", "look", "commit", "rebase", "stash", "stash_pop", "discard_spool", "changes",
                 "create", "write_into_spool", "rename", "unlink", "close"):
        assert callable(getattr(StagingArea, name)), name
    assert list(inspect.signature(StagingArea.open).parameters) == ["repo", "branch"]
