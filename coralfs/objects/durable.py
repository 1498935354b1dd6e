"""The one durable-write helper: temp file in the target directory, write, fsync,
rename, fsync the directory. A crash at any point leaves either the old file or the
new one, never a torn one."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable

_counter = itertools.count()


def _temp_name(directory: str) -> str:
    # Unique per process and call (pid, thread, counter): no random names, no retries.
    return os.path.join(directory, f".tmp-{os.getpid()}-{threading.get_ident()}-{next(_counter)}.part")


def _sync_file_range():
    try:
        import ctypes
        f = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return f


_SFR = _sync_file_range()
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing these bytes to disk without waiting (Linux sync_file_range), so a
    later fsync has little left to wait for. Durability still comes from fsync."""
    if _SFR is not None:
        _SFR(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(
    path: str,
    data: bytes | bytearray | memoryview | Iterable[bytes],
    *,
    mode: int = 0o644,
    sync_dir: bool = True,
    exclusive: bool = False,
    sparse: bool = False,
) -> bool:
    """Write ``data`` to ``path`` atomically and durably.

    Args:
        path: the final file name.
        data: bytes, or an iterable of byte blocks (streamed, never joined).
        mode: permission bits of the new file.
        sync_dir: fsync the directory after the rename. Callers that write many files in
            one directory may pass False and call :func:`fsync_dir` once at the end.
        exclusive: write-once semantics: if ``path`` already exists, leave it and return
            False (objects are never rewritten).
        sparse: blocks of zeros are skipped over (holes), not written; the file reads
            back the same and takes no disk space for them (exports of sparse files).

    Returns:
        True if the file was written.
    """
    directory = os.path.dirname(path) or "."
    if exclusive and os.path.exists(path):
        return False
    tmp = _temp_name(directory)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                _write_all(fd, data)
            elif sparse:
                _write_sparse(fd, data)
            else:
                for block in data:
                    _write_all(fd, block)
            # fsync before rename: otherwise a crash can leave the new name pointing at
            # an empty or partial file (delayed allocation).
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        fsync_dir(directory)
    return True


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_sparse(fd: int, blocks: Iterable[bytes]) -> None:
    pos = 0
    hole_end = False
    for block in blocks:
        n = len(block)
        # First and last byte first: a block of weights almost never passes them, so the
        # full count (a scan of the block) runs mostly on blocks that are zeros.
        if n >= 4096 and block[0] == 0 and block[-1] == 0 and block.count(0) == n:
            os.lseek(fd, n, os.SEEK_CUR)
            hole_end = True
        else:
            _write_all(fd, block)
            hole_end = False
        pos += n
    if hole_end:
        os.ftruncate(fd, pos)  # a trailing hole: the size comes from truncate


def append_durable(path: str, line: bytes) -> None:
    """Append one record and fsync (used by reflogs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
