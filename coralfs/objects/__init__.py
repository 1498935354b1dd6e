"""The repository: ids, object kinds, codecs, stores, refs, pins, commits, merge, gc, fsck.

Pure Python over numpy, zstandard and xxhash. Nothing here imports pyfuse3, trio or typer.
"""
