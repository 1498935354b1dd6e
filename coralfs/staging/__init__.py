"""The persistent staging area of a branch: what the branch will hold at its next commit.
No FUSE and no trio: the writable mount and the CLI (``stash``, ``status``) both use it.

Open one with :meth:`StagingArea.open` (to change it; it locks the area and recovers) or
:meth:`StagingArea.look` (to read it while a daemon may hold it).

``REPO/staging/branches/<branch>/`` holds

- ``stage.db``: the manifest, one row per file, directory and symbolic link of the working
  tree, with its owner, mode and times (manifest.py; the fields: entries.Entry). A file
  row names either a committed File object (``fid``: unchanged, or renamed, and served
  lazily from the repository) or a spool file (``spool``: written since the base commit);
  the rows of one hard-link group share one (``link``).
  SQLite in WAL mode with ``synchronous=FULL``: each namespace change (create, rename,
  unlink, mkdir, chmod) is one durable transaction.
- ``spool/NAME``: the bytes written into files, durable once fsync or close returns.
- the pin ``staging/<branch>/base`` (``REPO/pins/``): ids gc must keep (the base commit, a
  commit being recorded, committed files the working tree holds that the base does not).
- ``lock``: held (flock) by the process that opened the area to change it, so only one does.
- ``reserve``: 1 MiB set aside; released when the disk is nearly full so that deleting
  files (and recording it) still works after a writer got ENOSPC.

A file is copied into the spool only when it is written (copy-on-write). Committing
(commit.py) ingests the spool files (deltas against the same path in the base commit),
moves the branch by compare-and-swap, then turns the committed rows into ``fid`` rows.
Stashes (stash.py) live under ``staging/stash/<branch>/<n>/``. Errors are OSError with an
errno, or StagingError.
"""

from .area import StagingArea, staged_changes
from .entries import RESERVED, Change, Entry, StagingError
from .layout import base_pin, pin_legacy_roots, stage_dir, staged_branches, stash_pin
from .stash import list_stashes

__all__ = ["RESERVED", "Change", "Entry", "StagingArea", "StagingError", "base_pin", "list_stashes",
           "pin_legacy_roots", "stage_dir", "staged_branches", "staged_changes", "stash_pin"]
