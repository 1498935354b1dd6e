"""The FUSE adapter: vfs.py models what a mount shows, operations.py translates kernel
requests to it, daemon.py runs and stops mounts. Only this package imports pyfuse3."""
