"""The repository: ids, objects, codecs, store, refs, commits, merge, gc, fsck.

Pure Python over numpy, zstandard and xxhash. Nothing here imports pyfuse3, trio or typer.
"""
