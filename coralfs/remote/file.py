"""A plain directory as a remote (``file:///path``): the reference BlobStore, used for
remotes on a shared file system and as the first backend every remote feature is
written and tested against."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from ..objects.durable import dead_temps, fsync_dir, make_dirs, open_private, write_durable
from .blobs import BlobInfo, BlobNotFound, BlobStore, PreconditionFailed, RemoteError
from .url import RemoteURL

_LOCK = ".coralfs-remote.lock"
ABANDONED_AFTER = 600.0   # seconds without a write after which a dead writer's temp file goes


def check_key(key: str) -> str:
    """A blob key: relative, '/'-separated, no empty, '.' or '..' parts (no path escapes
    the remote)."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise RemoteError(f"invalid blob key {key!r}")
    return key


class FileBlobs(BlobStore):
    def __init__(self, url: RemoteURL, *, endpoint: str | None = None, options: dict | None = None) -> None:
        if endpoint:
            raise RemoteError(f"{url}: file:// remotes take no --endpoint")
        self.url = str(url)
        self.root = url.prefix
        if not os.path.isdir(self.root):
            raise RemoteError(f"{url}: {self.root} is not a directory; create it first (mkdir -p {self.root})")

    def _path(self, key: str) -> str:
        return os.path.join(self.root, check_key(key))

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(self.url, key) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return os.pread(f.fileno(), length, start)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(self.url, key) from None

    def head(self, key: str) -> BlobInfo | None:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        # A put renames a new file into place, so (inode, mtime, size) names one version.
        return BlobInfo(st.st_size, f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}")

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        make_dirs(os.path.dirname(path))
        write_durable(path, data)
        info = self.head(key)
        assert info is not None
        return info.etag

    @contextlib.contextmanager
    def _locked(self):
        fd = open_private(os.path.join(self.root, _LOCK), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        with self._locked():
            info = self.head(key)
            if (info.etag if info else None) != etag:
                raise PreconditionFailed(self.url, key)
            return self.put(key, data)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(path))

    def abandon(self, folder: str, older_than: float = ABANDONED_AFTER) -> int:
        """Remove what killed writers left in ``folder``: its temp files of dead writers
        that nobody wrote to for ``older_than`` seconds (durable.dead_temps: a live writer
        of one blob writes its temp file all along). Returns how many went."""
        d = self._path(folder.rstrip("/"))
        removed = 0
        for path, _n in list(dead_temps(d, older_than)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
        if removed:
            fsync_dir(d)
        return removed

    def list(self, prefix: str = "") -> Iterator[str]:
        for dirpath, dirs, files in os.walk(self.root):
            dirs.sort()
            rel = os.path.relpath(dirpath, self.root)
            for name in sorted(files):
                if name == _LOCK or name.startswith(".tmp-"):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    yield key

    def close(self) -> None:
        pass


__all__ = ["FileBlobs", "check_key"]
