"""Refs: branches, tags and HEAD, moved only by compare-and-swap, with a reflog.

:class:`RefsContainer` is the interface: what every backend stores is text (a ref holds a
hex id and a newline; HEAD holds ``ref: refs/heads/NAME`` or an id; a reflog holds one
line per move), and the parsing, name checks and reflog format live here once. A backend
implements the few abstract methods (reading and listing that text, the compare-and-swap,
writing HEAD, appending and reading reflogs); tests/unit/refs_conformance.py is the
contract every backend runs.

:class:`DiskRefs` keeps them as files. ``set_if_equals`` takes an exclusive ``flock`` on
``NAME.lock`` next to the ref, re-reads the ref under the lock, refuses if it moved,
writes durably and appends the reflog. An advisory lock (rather than an O_EXCL lock file)
is released by the kernel when its holder dies, so a process killed mid-commit never
leaves a branch locked (docs/decisions.md). :class:`MemoryRefs` keeps them in dicts
(tests, and repositories that live in memory).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from .durable import append_durable, fsync_dir, make_dirs, open_private, write_durable
from .errors import CoralError
from .ids import HEX_LEN, ObjectId, from_hex, to_hex

HEAD = "HEAD"
HEADS = "refs/heads/"
TAGS = "refs/tags/"
# An experiment's record: a chain of commits with an empty tree whose metadata holds the
# events (start with params, metrics, stop), so it is kept, checked and pushed like history.
EXPERIMENTS = "refs/experiments/"
# Remote-tracking refs (``refs/remotes/NAME/BRANCH``): what a fetch last saw on remote NAME.
REMOTES = "refs/remotes/"
NAMESPACES = (HEADS, TAGS, EXPERIMENTS, REMOTES)
SYMREF = "ref: "

_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_HEX = re.compile(r"[0-9a-f]+")

log = logging.getLogger(__name__)


class InvalidRefName(CoralError):
    def __init__(self, name: str, why: str) -> None:
        self.name = name
        super().__init__(f"invalid ref name {name!r}: {why}")


class BadRef(CoralError):
    """A ref, HEAD or reflog file that does not parse: named, never treated as absent."""

    exit_code = 3

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        super().__init__(f"{name} is damaged: it {why}; repair or remove the file (`coralfs fsck` lists all damage)")


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


def ref_text(data: bytes, what: str) -> str:
    """The text of a ref, HEAD or reflog; BadRef if it is not UTF-8 (any backend)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRef(what, "is not UTF-8 text") from None


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


def check_full_name(name: str) -> str:
    """``HEAD`` or ``refs/heads/X``, ``refs/tags/X``, ``refs/experiments/X``,
    ``refs/remotes/R/X`` with a valid X: nothing else is a ref (and so no name escapes a
    backend's namespace)."""
    if name != HEAD:
        if not name.startswith(NAMESPACES):
            raise InvalidRefName(name, "refs live under " + ", ".join(NAMESPACES))
        rest = name.split("/", 2)[2]
        check_ref_name(rest, "ref")
        if name.startswith(REMOTES) and "/" not in rest:
            raise InvalidRefName(name, "remote-tracking refs are refs/remotes/REMOTE/BRANCH")
    return name


class RefsContainer(ABC):
    """Branches, tags, HEAD and their reflogs, over a backend's abstract methods."""

    # -- what a backend implements -------------------------------------------------------
    @abstractmethod
    def read_raw(self, name: str) -> str | None:
        """The stripped text of ref ``name`` (checked with :func:`check_full_name`);
        None if absent; BadRef if it is not UTF-8."""

    @abstractmethod
    def raw_refs(self, prefix: str) -> Iterator[tuple[str, str | BadRef]]:
        """(short name, stripped text or the BadRef it raised) of every ref under
        ``prefix`` (``refs/heads/`` or ``refs/tags/``)."""

    @abstractmethod
    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId | None,
                      message: str, who: str | None = None, *, force: bool = False) -> None:
        """Move ``name`` from ``old`` to ``new`` atomically (and append its reflog), or
        raise RefMoved. ``new=None`` deletes the ref. With ``force`` the current value is
        not compared. Implementations call :meth:`_check_swap` under their lock."""

    @abstractmethod
    def write_head(self, text: str) -> None:
        """Replace HEAD's text durably (callers: :meth:`set_symbolic`, :meth:`set_detached`)."""

    @abstractmethod
    def append_log_line(self, name: str, line: str) -> None:
        """Append one line (newline included) to the reflog of ``name``, durably."""

    @abstractmethod
    def read_log(self, name: str) -> str | None:
        """The text of the reflog of ``name``; None if there is none; BadRef if it is
        not UTF-8."""

    @abstractmethod
    def log_names(self) -> Iterator[str]:
        """The name of every reflog there is (``HEAD``, ``refs/heads/main``, ...)."""

    # -- reading -------------------------------------------------------------------------
    def _parse(self, name: str, raw: str) -> ObjectId:
        """A ref's text -> its id: exactly 64 lowercase hex digits."""
        if len(raw) != HEX_LEN or not _HEX.fullmatch(raw):
            shown = raw if len(raw) <= 80 else raw[:77] + "..."
            raise BadRef(name, f"holds {shown!r}, not a {HEX_LEN}-digit hex id")
        return from_hex(raw)

    def read(self, name: str) -> ObjectId | None:
        """The id a ref holds, following HEAD's symbolic ref; None if unborn/absent.

        Raises BadRef for a ref that does not parse (never treated as absent)."""
        raw = self.read_raw(name)
        if raw is None:
            return None
        if name == HEAD:
            target = self._head_symref(raw)
            if target is not None:
                return self.read(target)
        return self._parse(name, raw)

    def _head_symref(self, raw: str) -> str | None:
        """HEAD's branch (``refs/heads/X``) if HEAD is symbolic; BadRef if it names
        anything but a valid branch (``ref: HEAD`` would loop)."""
        if not raw.startswith(SYMREF):
            return None
        target = raw[len(SYMREF):].strip()
        if not target.startswith(HEADS):
            raise BadRef(HEAD, f"points at {target!r}, not at a branch (refs/heads/NAME)")
        try:
            check_ref_name(target[len(HEADS):], "branch")
        except InvalidRefName as e:
            raise BadRef(HEAD, f"points at {target!r} ({e})") from None
        return target

    def head_target(self) -> str | None:
        """The branch HEAD is attached to (``refs/heads/X``), or None when detached."""
        raw = self.read_raw(HEAD)
        if raw is None:
            return None
        target = self._head_symref(raw)
        if target is None:
            self._parse(HEAD, raw)  # detached: it must hold an id
        return target

    def scan(self, prefix: str) -> tuple[dict[str, ObjectId], list[BadRef]]:
        """Every ref under ``prefix`` (e.g. ``refs/heads/``), short name -> id, and one
        BadRef per ref that does not parse."""
        out: dict[str, ObjectId] = {}
        bad: list[BadRef] = []
        for short, raw in self.raw_refs(prefix):
            try:
                if isinstance(raw, BadRef):
                    raise raw
                out[short] = self._parse(prefix + short, raw)
            except BadRef as e:
                bad.append(e)
        return dict(sorted(out.items())), bad

    def list(self, prefix: str) -> dict[str, ObjectId]:
        """Every ref under ``prefix`` that parses; a damaged one is logged (fsck names
        it and gc refuses to run while it is there)."""
        out, bad = self.scan(prefix)
        for e in bad:
            log.warning("%s", e)
        return out

    def _read_lenient(self, name: str) -> ObjectId | None:
        try:
            return self.read(name)
        except BadRef:
            return None

    # -- writing -------------------------------------------------------------------------
    def _check_swap(self, name: str, old: ObjectId | None, force: bool) -> ObjectId | None:
        """The current id of ``name`` (read under the caller's lock); RefMoved unless it
        is ``old`` (or ``force``)."""
        current = self.read_raw(name)
        cur = None if current is None else self._parse(name, current)
        if not force and cur != old:
            raise RefMoved(name, old, cur)
        return cur

    def delete(self, name: str, old: ObjectId | None, message: str, who: str | None = None) -> None:
        """Remove ``name`` if it still holds ``old`` (RefMoved otherwise)."""
        self.set_if_equals(name, old, None, message, who)

    def set_symbolic(self, name: str, target: str, message: str, who: str | None = None) -> None:
        """Point HEAD at a branch."""
        assert name == HEAD
        check_full_name(target)
        old = self._read_lenient(HEAD)  # checkout is how a damaged HEAD is repaired
        self.write_head(f"{SYMREF}{target}\n")
        self.append_log(HEAD, old, self.read(target), message, who)

    def set_detached(self, oid: ObjectId, message: str, who: str | None = None) -> None:
        old = self._read_lenient(HEAD)
        self.write_head(to_hex(oid) + "\n")
        self.append_log(HEAD, old, oid, message, who)

    # -- reflog --------------------------------------------------------------------------
    def append_log(self, name: str, old: ObjectId | None, new: ObjectId | None,
                   message: str, who: str | None) -> None:
        """Record a move of ``name`` (and of HEAD too while HEAD is on that branch)."""
        z = "0" * HEX_LEN
        msg = message.replace("\n", " ").replace("\t", " ")
        line = (f"{to_hex(old) if old else z} {to_hex(new) if new else z} "
                f"{int(time.time())}\t{(who or default_identity()).replace(chr(9), ' ')}\t{msg}\n")
        self.append_log_line(name, line)
        try:
            on_head = name.startswith(HEADS) and self.head_target() == name
        except BadRef:  # the ref has moved already; a damaged HEAD only loses its log line
            on_head = False
        if on_head:
            self.append_log_line(HEAD, line)

    def reflog(self, name: str) -> list[ReflogEntry]:
        """The entries of a reflog (a torn last line left by a crash is skipped); BadRef
        if the text is not UTF-8 or another line does not parse."""
        entries, bad = self.reflog_checked(name)
        if bad:
            raise bad
        return entries

    def reflog_checked(self, name: str) -> tuple[list[ReflogEntry], BadRef | None]:
        what = f"logs/{name}"
        try:
            text = self.read_log(name)
        except BadRef as e:
            return [], e
        if text is None:
            return [], None
        lines = text.split("\n")
        torn = lines.pop()  # "" when the log ends with a newline, else a torn write
        out = []
        for i, ln in enumerate(lines, 1):
            try:
                out.append(parse_reflog_line(ln))
            except ValueError as e:
                return out, BadRef(what, f"line {i} does not parse ({e})")
        if torn:
            with contextlib.suppress(ValueError):
                out.append(parse_reflog_line(torn))
        return out, None

    def all_logs(self) -> Iterator[tuple[str, list[ReflogEntry], BadRef | None]]:
        for name in self.log_names():
            yield (name, *self.reflog_checked(name))


class DiskRefs(RefsContainer):
    """Refs as files under the repository: ``HEAD``, ``refs/...``, ``logs/...``."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *check_full_name(name).split("/"))

    def _log_path(self, name: str) -> str:
        return os.path.join(self.root, "logs", *name.split("/"))

    def _read_text(self, path: str, what: str) -> str | None:
        """A metadata file's text; None if absent; BadRef if it is not UTF-8."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return ref_text(data, what)

    def read_raw(self, name: str) -> str | None:
        raw = self._read_text(self._path(name), name)
        return None if raw is None else raw.strip()

    def raw_refs(self, prefix: str) -> Iterator[tuple[str, str | BadRef]]:
        base = os.path.join(self.root, *prefix.rstrip("/").split("/"))
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if f.endswith(".lock") or f.startswith("."):
                    continue
                full = os.path.join(dirpath, f)
                short = os.path.relpath(full, base).replace(os.sep, "/")
                try:
                    raw = self._read_text(full, prefix + short)
                except BadRef as e:
                    yield short, e
                    continue
                if raw is not None:
                    yield short, raw.strip()

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId | None,
                      message: str, who: str | None = None, *, force: bool = False) -> None:
        path = self._path(name)
        make_dirs(os.path.dirname(path))
        lock_fd = open_private(path + ".lock", os.O_RDWR)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            cur = self._check_swap(name, old, force)
            if new is None:
                if cur is not None:
                    os.unlink(path)
                    fsync_dir(os.path.dirname(path))
            else:
                write_durable(path, (to_hex(new) + "\n").encode())
            self.append_log(name, cur, new, message, who)
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

    def write_head(self, text: str) -> None:
        write_durable(self._path(HEAD), text.encode())

    def append_log_line(self, name: str, line: str) -> None:
        path = self._log_path(name)
        make_dirs(os.path.dirname(path))
        append_durable(path, line.encode("utf-8"))

    def read_log(self, name: str) -> str | None:
        return self._read_text(self._log_path(name), f"logs/{name}")

    def log_names(self) -> Iterator[str]:
        base = os.path.join(self.root, "logs")
        for dirpath, _d, files in os.walk(base):
            for f in sorted(files):
                if not f.startswith("."):
                    yield os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")


class MemoryRefs(RefsContainer):
    """Refs in dicts, for repositories that live in memory; one lock makes every
    compare-and-swap atomic among threads."""

    def __init__(self) -> None:
        self._refs: dict[str, str] = {}
        self._logs: dict[str, str] = {}
        self._lock = threading.RLock()

    def read_raw(self, name: str) -> str | None:
        raw = self._refs.get(check_full_name(name))
        return None if raw is None else raw.strip()

    def raw_refs(self, prefix: str) -> Iterator[tuple[str, str | BadRef]]:
        with self._lock:
            items = sorted(self._refs.items())
        for name, raw in items:
            if name != HEAD and name.startswith(prefix):
                yield name[len(prefix):], raw.strip()

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId | None,
                      message: str, who: str | None = None, *, force: bool = False) -> None:
        check_full_name(name)
        with self._lock:
            cur = self._check_swap(name, old, force)
            if new is None:
                self._refs.pop(name, None)
            else:
                self._refs[name] = to_hex(new) + "\n"
            self.append_log(name, cur, new, message, who)

    def write_head(self, text: str) -> None:
        with self._lock:
            self._refs[HEAD] = text

    def append_log_line(self, name: str, line: str) -> None:
        with self._lock:
            self._logs[name] = self._logs.get(name, "") + line

    def read_log(self, name: str) -> str | None:
        return self._logs.get(name)

    def log_names(self) -> Iterator[str]:
        with self._lock:
            names = sorted(self._logs)
        yield from names


def parse_reflog_line(ln: str) -> ReflogEntry:
    """``OLD NEW TIME\tWHO\tMESSAGE`` (ids are 64 hex digits, zeros for none)."""
    parts = ln.split("\t", 2)
    if len(parts) != 3:
        raise ValueError("expected OLD NEW TIME<tab>WHO<tab>MESSAGE")
    head, who, msg = parts
    fields = head.split(" ")
    if len(fields) != 3:
        raise ValueError("expected OLD NEW TIME before the first tab")
    old, new, t = fields
    for x in (old, new):
        if len(x) != HEX_LEN or not _HEX.fullmatch(x):
            raise ValueError(f"{x[:80]!r} is not a {HEX_LEN}-digit hex id")
    if not t.isascii() or not t.isdigit():
        raise ValueError(f"time {t[:40]!r} is not a whole number")
    z = "0" * HEX_LEN
    return ReflogEntry(None if old == z else from_hex(old), None if new == z else from_hex(new),
                       who, int(t), msg)
