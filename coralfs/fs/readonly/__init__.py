"""The read-only mount: vfs.py models what it shows (no pyfuse3), ops.py adapts it to pyfuse3."""
