"""Refs: branches, tags and HEAD, moved only by compare-and-swap, with a reflog.

A ref file holds a hex id and a newline; HEAD holds ``ref: refs/heads/NAME`` or an id.
``set_if_equals`` takes an exclusive ``flock`` on ``NAME.lock`` next to the ref, re-reads
the ref under the lock, refuses if it moved, writes durably and appends the reflog. An
advisory lock (rather than an O_EXCL lock file) is released by the kernel when its holder
dies, so a process killed mid-commit never leaves a branch locked (docs/decisions.md).
"""

from __future__ import annotations

import fcntl
import getpass
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .durable import append_durable, make_dirs, open_private, write_durable
from .errors import CoralError
from .ids import HEX_LEN, ObjectId, from_hex, to_hex

HEAD = "HEAD"
HEADS = "refs/heads/"
TAGS = "refs/tags/"
SYMREF = "ref: "

_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


class InvalidRefName(CoralError):
    def __init__(self, name: str, why: str) -> None:
        self.name = name
        super().__init__(f"invalid ref name {name!r}: {why}")


class RefMoved(CoralError):
    """A compare-and-swap lost a race: the ref is no longer at the expected value."""

    exit_code = 4

    def __init__(self, name: str, expected: ObjectId | None, got: ObjectId | None) -> None:
        self.name, self.expected, self.got = name, expected, got
        short = lambda o: to_hex(o)[:12] if o else "nothing"  # noqa: E731
        super().__init__(
            f"{name} moved: expected {short(expected)}, found {short(got)}; "
            "another commit landed first, nothing was changed: retry on the new head"
        )


class RefNotFound(CoralError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no such ref: {name}")


def check_ref_name(short_name: str, kind: str = "branch") -> str:
    """Validate a branch or tag name like git's check-ref-format; return it."""
    n = short_name
    if not n:
        raise InvalidRefName(n, f"a {kind} name cannot be empty")
    if n.startswith("-"):
        raise InvalidRefName(n, "cannot start with '-'")
    if n == "@" or "@{" in n:
        raise InvalidRefName(n, "cannot be '@' or contain '@{'")
    if _BAD_CHARS.search(n):
        raise InvalidRefName(n, "no spaces, control characters or any of ~^:?*[\\")
    if ".." in n or n.endswith(".") or n.endswith("/") or n.startswith("/") or "//" in n:
        raise InvalidRefName(n, "no '..', '//', leading '/' or trailing '.' or '/'")
    for part in n.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            raise InvalidRefName(n, "no component may start with '.' or end with '.lock'")
    if n == HEAD:
        raise InvalidRefName(n, "HEAD is reserved")
    if len(n.encode()) > 200:
        raise InvalidRefName(n, "longer than 200 bytes")
    return n


@dataclass(frozen=True)
class ReflogEntry:
    old: ObjectId | None
    new: ObjectId | None
    who: str
    time: int
    message: str


def default_identity() -> str:
    env = os.environ.get("CORALFS_AUTHOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class RefContainer:
    def __init__(self, root: str) -> None:
        self.root = root

    # -- paths ---------------------------------------------------------------------------
    def _path(self, name: str) -> str:
        if name != HEAD:
            if not (name.startswith(HEADS) or name.startswith(TAGS)):
                raise InvalidRefName(name, "refs live under refs/heads/ or refs/tags/")
            check_ref_name(name.split("/", 2)[2], "ref")
        return os.path.join(self.root, *name.split("/"))

    def _log_path(self, name: str) -> str:
        return os.path.join(self.root, "logs", *name.split("/"))

    # -- reading -------------------------------------------------------------------------
    def read_raw(self, name: str) -> str | None:
        try:
            with open(self._path(name), encoding="utf-8") as f:
                return f.read().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def read(self, name: str) -> ObjectId | None:
        """The id a ref holds, following HEAD's symbolic ref; None if unborn/absent."""
        raw = self.read_raw(name)
        if raw is None:
            return None
        if raw.startswith(SYMREF):
            return self.read(raw[len(SYMREF):])
        try:
            return from_hex(raw)
        except ValueError:
            raise CoralError(f"ref {name} holds {raw!r}, not an id; run `coralfs fsck`") from None

    def head_target(self) -> str | None:
        """The branch HEAD is attached to (``refs/heads/X``), or None when detached."""
        raw = self.read_raw(HEAD)
        if raw and raw.startswith(SYMREF):
            return raw[len(SYMREF):]
        return None

    def list(self, prefix: str) -> dict[str, ObjectId]:
        """Every ref under ``prefix`` (e.g. ``refs/heads/``), short name -> id."""
        out: dict[str, ObjectId] = {}
        base = os.path.join(self.root, *prefix.rstrip("/").split("/"))
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if f.endswith(".lock") or f.startswith("."):
                    continue
                full = os.path.join(dirpath, f)
                short = os.path.relpath(full, base).replace(os.sep, "/")
                with open(full, encoding="utf-8") as fh:
                    raw = fh.read().strip()
                if len(raw) == HEX_LEN:
                    try:
                        out[short] = from_hex(raw)
                    except ValueError:
                        continue
        return dict(sorted(out.items()))

    # -- writing -------------------------------------------------------------------------
    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId | None,
                      message: str, who: str | None = None, *, force: bool = False) -> None:
        """Move ``name`` from ``old`` to ``new`` atomically, or raise RefMoved.

        ``new=None`` deletes the ref. With ``force`` the current value is not compared.
        """
        path = self._path(name)
        make_dirs(os.path.dirname(path))
        lock_fd = open_private(path + ".lock", os.O_RDWR)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            current = self.read_raw(name)
            cur = None
            if current is not None and not current.startswith(SYMREF):
                cur = from_hex(current)
            if not force and cur != old:
                raise RefMoved(name, old, cur)
            if new is None:
                if current is not None:
                    os.unlink(path)
                    from .durable import fsync_dir
                    fsync_dir(os.path.dirname(path))
            else:
                write_durable(path, (to_hex(new) + "\n").encode())
            self._append_log(name, cur, new, message, who)
        finally:
            os.close(lock_fd)  # closing releases the flock
        if new is None:
            self._remove_lock(path)

    def _remove_lock(self, path: str) -> None:
        # A deleted ref leaves no lock file behind (its directory may then be pruned).
        try:
            os.unlink(path + ".lock")
        except FileNotFoundError:
            pass

    def set_symbolic(self, name: str, target: str, message: str, who: str | None = None) -> None:
        """Point HEAD at a branch."""
        assert name == HEAD
        self._path(target)
        old = self.read(HEAD)
        write_durable(self._path(name), f"{SYMREF}{target}\n".encode())
        self._append_log(HEAD, old, self.read(target), message, who)

    def set_detached(self, oid: ObjectId, message: str, who: str | None = None) -> None:
        old = self.read(HEAD)
        write_durable(self._path(HEAD), (to_hex(oid) + "\n").encode())
        self._append_log(HEAD, old, oid, message, who)

    # -- reflog --------------------------------------------------------------------------
    def _append_log(self, name: str, old: ObjectId | None, new: ObjectId | None,
                    message: str, who: str | None) -> None:
        path = self._log_path(name)
        make_dirs(os.path.dirname(path))
        z = "0" * HEX_LEN
        msg = message.replace("\n", " ").replace("\t", " ")
        line = (f"{to_hex(old) if old else z} {to_hex(new) if new else z} "
                f"{int(time.time())}\t{(who or default_identity()).replace(chr(9), ' ')}\t{msg}\n")
        append_durable(path, line.encode("utf-8"))
        if name.startswith(HEADS) and self.head_target() == name:
            append_durable(self._log_path(HEAD), line.encode("utf-8"))

    def reflog(self, name: str) -> list[ReflogEntry]:
        try:
            with open(self._log_path(name), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        z = "0" * HEX_LEN
        for ln in lines:
            try:
                head, who, msg = ln.split("\t", 2)
                old, new, t = head.split(" ")
                out.append(ReflogEntry(None if old == z else from_hex(old),
                                       None if new == z else from_hex(new), who, int(t), msg))
            except ValueError:
                continue  # a torn last line after a crash
        return out

    def all_logs(self) -> Iterator[tuple[str, list[ReflogEntry]]]:
        base = os.path.join(self.root, "logs")
        for dirpath, _d, files in os.walk(base):
            for f in files:
                name = os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")
                yield name, self.reflog(name)
