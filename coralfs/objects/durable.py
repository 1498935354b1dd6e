"""The one durable-write helper: temp file in the target directory, write, fsync,
rename, fsync the directory. A crash at any point leaves either the old file or the
new one, never a torn one.

It also holds the repository's permission rule: a file or directory created inside the
repository takes its permission bits from the directory it is created in (files without
the execute bits), so a repository created 0700 (the default) keeps every file 0600 and a
``--shared`` one (0750) keeps them 0640, while repositories created before this rule
(0755) go on making 0644 files as they always did.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
import time
from collections.abc import Iterable, Iterator

_counter = itertools.count()


def _temp_name(directory: str) -> str:
    # Unique per process and call (pid, thread, counter): no random names, no retries.
    return os.path.join(directory, f".tmp-{os.getpid()}-{threading.get_ident()}-{next(_counter)}.part")


def _libc(name: str, *argtypes):
    """A libc function through ctypes, or None where there is none."""
    try:
        import ctypes
        f = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    f.argtypes = [getattr(ctypes, t) for t in argtypes]
    return f


_SFR = _libc("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")
_FALLOCATE = _libc("fallocate", "c_int", "c_int", "c_int64", "c_int64")


def preallocate(fd: int, n: int) -> None:
    """Allocate ``n`` bytes of a new file before writing them: on ext4 page-cache writes
    into allocated blocks cost a third to a quarter of the CPU of delayed allocation
    (3.4 MB files on this VM: 750-1900 MB per CPU-second plain, 3000-5500 after
    fallocate). fallocate(2) itself, not posix_fallocate, which emulates it by writing
    where the file system lacks it; failure changes nothing (the write allocates)."""
    if _FALLOCATE is not None and n > 0:
        _FALLOCATE(fd, 0, 0, n)


def _syncfs():
    try:
        import ctypes
        f = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int]
    return f


_SYNCFS = _syncfs()
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


def sync_filesystem(path: str) -> None:
    """Make every write so far to the file system holding the directory ``path`` durable,
    file data and directory entries alike, in one flush (Linux syncfs; elsewhere sync(),
    which waits for all file systems): what a batch of many files pays once instead of an
    fsync per file and per directory."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS is None:
            os.sync()
        elif _SYNCFS(fd) != 0:
            import ctypes
            err = ctypes.get_errno()
            if err != errno.ENOSYS:
                # A write error the flush found (EIO, ENOSPC): sync() would not report it,
                # and the caller would name files whose bytes never reached the disk.
                raise OSError(err, f"cannot make {path} durable: {os.strerror(err)}")
            os.sync()
    finally:
        os.close(fd)


# -- permissions inside a repository --------------------------------------------------------

def dir_perm(directory: str | int) -> int:
    """Permission bits of a directory (path or fd): rwx and setgid (which makes a
    shared repository's group stick), never setuid or sticky."""
    st = os.fstat(directory) if isinstance(directory, int) else os.stat(directory)
    return stat.S_IMODE(st.st_mode) & 0o2777


def inherited_file_mode(directory: str | int) -> int:
    """The mode of a new file in ``directory``: the directory's bits without execute."""
    return dir_perm(directory) & 0o666


def make_dirs(path: str) -> None:
    """``os.makedirs`` whose new directories copy the permission bits of the nearest
    existing parent (chmod, so the umask cannot widen or narrow what the repository
    chose)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    perm = dir_perm(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, perm)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            continue  # made by a concurrent writer
        os.chmod(d, perm)


def open_private(path: str, flags: int) -> int:
    """``os.open`` with O_CREAT whose new file takes the inherited mode (used for lock,
    log and database files that are not written through :func:`write_durable`)."""
    mode = inherited_file_mode(os.path.dirname(path) or ".")
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, mode)
    _widen(fd, mode)
    return fd


def create_file(path: str) -> None:
    """Create ``path`` empty with the inherited mode unless it exists (a database file
    before SQLite opens it: SQLite gives its -wal and -shm files the database's mode)."""
    os.close(open_private(path, os.O_RDONLY))


def _widen(fd: int, mode: int) -> None:
    # A group-shared repository needs its group bits even under a strict umask (077);
    # a private one (no group bits) is never widened by this.
    if mode & 0o070:
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                os.fchmod(fd, mode)
        except PermissionError:
            pass  # a file created by another group member: theirs to chmod


# -- durable writes -------------------------------------------------------------------------

def write_temp(
    directory: str,
    data: bytes | bytearray | memoryview | Iterable[bytes],
    *,
    mode: int | None = None,
    readonly: bool = False,
    dir_fd: int | None = None,
    sparse: bool = False,
    sync: bool = True,
    writeback: bool = False,
    inherited: int | None = None,
) -> str:
    """Write ``data`` to a new hidden temp file in ``directory`` and fsync it.

    Returns the temp file's path (relative to ``dir_fd`` when that is given, ``directory``
    is then ignored). ``mode`` None: the mode the directory hands down
    (:func:`inherited_file_mode`, without write bits if ``readonly``); an explicit mode is
    subject to the umask. ``sparse``: blocks of zeros are skipped over (holes), not
    written; the file reads back the same and takes no disk space for them (exports of
    sparse files). ``sync`` False: no fsync; the caller makes the file durable
    (:func:`sync_filesystem`) before any durable name points at it; with ``writeback``
    the kernel starts writing it out now (:func:`start_writeback`), so that flush has less
    left to wait for. ``inherited``: the mode :func:`inherited_file_mode` gives already
    known to the caller (a store writing many files in one directory), taken instead of
    ``mode`` None's stat (``readonly`` still applies; an explicit ``mode`` with it is
    refused). On error the temp file is removed.
    """
    tmp = os.path.basename(_temp_name("")) if dir_fd is not None else _temp_name(directory)
    inherit = mode is None
    if inherited is not None:
        if not inherit:
            raise ValueError("write_temp: inherited is the mode None takes; not with an explicit mode")
        mode = inherited
    elif inherit:
        mode = inherited_file_mode(dir_fd if dir_fd is not None else (directory or "."))
    if inherit and readonly:
        mode &= 0o444
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode,
                 dir_fd=dir_fd)
    try:
        try:
            if inherit:
                _widen(fd, mode)
            if isinstance(data, (bytes, bytearray, memoryview)):
                preallocate(fd, memoryview(data).nbytes)
                _write_all(fd, data)
            elif sparse:
                _write_sparse(fd, data)
            else:
                for block in data:
                    _write_all(fd, block)
            # fsync before rename: otherwise a crash can leave the new name pointing at
            # an empty or partial file (delayed allocation).
            if sync:
                os.fsync(fd)
            elif writeback:
                start_writeback(fd, 0, 0)   # length 0: to the end of the file
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    return tmp


def write_durable(
    path: str,
    data: bytes | bytearray | memoryview | Iterable[bytes],
    *,
    mode: int | None = None,
    readonly: bool = False,
    sync_dir: bool = True,
    exclusive: bool = False,
) -> bool:
    """Write ``data`` to ``path`` atomically and durably.

    Args:
        path: the final file name.
        data: bytes, or an iterable of byte blocks (streamed, never joined).
        mode: permission bits of the new file; None (repository files): inherited from
            the directory (:func:`inherited_file_mode`).
        readonly: with ``mode`` None, drop the write bits (objects are write-once).
        sync_dir: fsync the directory after the rename. Callers that write many files in
            one directory may pass False and call :func:`fsync_dir` once at the end.
        exclusive: write-once semantics: if ``path`` already exists, leave it and return
            False (objects are never rewritten).

    Returns:
        True if the file was written.
    """
    directory = os.path.dirname(path) or "."
    if exclusive and os.path.exists(path):
        return False
    tmp = write_temp(directory, data, mode=mode, readonly=readonly)
    try:
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
    fd = open_private(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def dead_temps(directory: str, older_than: float) -> Iterator[tuple[str, int]]:
    """(path, size) of the hidden temp files in ``directory`` that a killed writer left:
    its process is gone (the pid in the name, see _temp_name) and nobody wrote to the
    file for ``older_than`` seconds (a pid can be reused, and says nothing of a writer on
    another host of a shared file system)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    now = time.time()
    for name in names:
        if not name.startswith(".tmp-"):
            continue
        path = os.path.join(directory, name)
        try:
            pid = int(name.split("-")[1])
            st = os.lstat(path)
            if now - st.st_mtime >= older_than and pid != os.getpid() and not pid_alive(pid):
                yield path, st.st_size
        except (ValueError, IndexError, OverflowError, OSError):
            continue


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` still runs. A zombie (killed, not yet reaped by its
    parent) writes nothing more: its temp files are dead too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    # "pid (comm) S ...": the state follows the last ')' (comm may hold spaces or parens).
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] != b"Z"
