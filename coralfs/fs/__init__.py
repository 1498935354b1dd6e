"""Mounts: the FUSE side of coralfs.

adapter.py (errno mapping, the handler decorator, entry attributes, handles) and
reads.py + content.py + readahead.py (the read path) are what both mounts share;
readonly/ and writable/ each hold a model without pyfuse3 (vfs.py) and its pyfuse3
adapter (ops.py); lifecycle.py is the client side (checks, spawn, readiness, unmount,
list; no pyfuse3, no trio) and daemon.py serves. The staging area a writable mount
shows is not FUSE code (the CLI uses it offline). docs/decisions.md has the reasons."""
