"""A null pyfuse3 filesystem: one file served from RAM. The ceiling of this FUSE stack
(pyfuse3 + trio + the kernel) on this machine, for the mount benchmark.

    python scripts/nullfs.py FILE MOUNTPOINT [READ_AHEAD_KB [MAX_BACKGROUND]]   (prints READY when mounted)
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from coralfs.fs.daemon import serve_mounted, tune_kernel  # noqa: E402


class NullFS(pyfuse3.Operations):
    def __init__(self, name: str, data: bytes) -> None:
        super().__init__()
        self.name = name.encode()
        self.data = data

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = (stat.S_IFDIR | 0o555) if ino == pyfuse3.ROOT_INODE else (stat.S_IFREG | 0o444)
        a.st_size = 0 if ino == pyfuse3.ROOT_INODE else len(self.data)
        a.st_blksize = 1 << 20
        a.attr_timeout = a.entry_timeout = 3600
        return a

    async def getattr(self, inode, ctx=None):
        return self._attr(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != self.name:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(2)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        if start_id == 0:
            pyfuse3.readdir_reply(token, self.name, self._attr(2), 1)

    async def open(self, inode, flags, ctx):
        fi = pyfuse3.FileInfo(fh=inode)
        fi.keep_cache = True
        return fi

    async def read(self, fh, off, size):
        return self.data[off:off + size]

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 1 << 20
        s.f_namemax = 255
        return s


def main() -> None:
    """FILE MOUNTPOINT [READ_AHEAD_KB [MAX_BACKGROUND]]: the kernel settings as a coralfs
    mount's --read-ahead-kb / --max-background, so both run on the same kernel side."""
    path, mnt = sys.argv[1], sys.argv[2]
    knobs = [int(a) if a != "-" else None for a in sys.argv[3:5]] + [None, None]
    with open(path, "rb") as f:
        data = f.read()
    ops = NullFS(os.path.basename(path), data)
    real = os.path.realpath(mnt)
    pyfuse3.init(ops, mnt, {"fsname=nullfs", "ro", "default_permissions"})
    tune_kernel(real, knobs[0], knobs[1])
    # The same serving loop as coralfs's daemon, so only the filesystems differ.
    serve_mounted(mnt, lambda error: print("READY" if error is None else f"ERROR {error}", flush=True))


if __name__ == "__main__":
    main()
