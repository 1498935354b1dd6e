"""The persistent staging area of a branch (what its next commit will hold): a manifest,
a spool of written bytes, commit, rebase and stashes. No FUSE and no trio: the writable
mount and the CLI (``stash``, ``status``) both use it."""

from .area import (
    RESERVED,
    Change,
    Entry,
    StagingArea,
    StagingError,
    base_pin,
    list_stashes,
    pin_legacy_roots,
    stage_dir,
    staged_branches,
    staged_changes,
    stash_pin,
)

__all__ = ["RESERVED", "Change", "Entry", "StagingArea", "StagingError", "base_pin", "list_stashes",
           "pin_legacy_roots", "stage_dir", "staged_branches", "staged_changes", "stash_pin"]
