"""What every reader returns, and the one error they raise."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field

from ..objects.errors import CoralError
from ..objects.regions import Region

# Caps that keep a lying header from making us allocate or loop without bound.
MAX_HEADER = 100 << 20
MAX_MEMBERS = 1_000_000


class FormatError(CoralError):
    """A malformed input file: one line naming the file and the problem."""

    exit_code = 2

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}; nothing was committed")


@dataclass
class Layout:
    format: str
    regions: list[Region] = field(default_factory=list)
    # Regions of other files this one describes, by location relative to its directory
    # (an .onnx model's external data): coralfs/ingest.py gives them to those files.
    siblings: dict[str, list[Region]] = field(default_factory=dict)

    def check(self, path: str, size: int) -> Layout:
        """Reject overlapping or out-of-range regions (a lying header)."""
        pos = 0
        for r in sorted(self.regions, key=lambda r: r.offset):
            if not r.name.isascii() and not _is_unicode(r.name):
                raise FormatError(path, f"tensor name {r.name!r} is not valid Unicode (an unpaired surrogate)")
            if r.offset < pos:
                raise FormatError(path, f"tensor {r.name!r} overlaps another region at byte {r.offset}")
            if r.offset + r.length > size:
                raise FormatError(path, f"tensor {r.name!r} ends at byte {r.offset + r.length}, past the end of the file ({size} bytes)")
            pos = r.offset + r.length
        return self


def _is_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_member_name(path: str, name: str) -> str:
    """Zip member names must be relative, without '..' (defends against traversal)."""
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise FormatError(path, f"archive member {name!r} has an absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise FormatError(path, f"archive member {name!r} escapes the archive with '..'")
    return name


def guarded(kind: str):
    """Readers face untrusted bytes: any failure other than a FormatError becomes one,
    naming the file and what went wrong (never a traceback, never a crash)."""
    def wrap(parse):
        @functools.wraps(parse)
        def run(path: str, size: int, *more, **options) -> Layout:
            try:
                return parse(path, size, *more, **options)
            except FormatError:
                raise
            except MemoryError:
                raise FormatError(path, f"malformed {kind} file (sizes too large to hold)") from None
            except Exception as e:  # noqa: BLE001 - the boundary of untrusted input
                raise FormatError(path, f"malformed {kind} file ({type(e).__name__}: {e})") from None
        return run
    return wrap


class Window(io.RawIOBase):
    """Bytes ``[start, start + length)`` of an open file, as a read-only file of their own."""

    def __init__(self, f, start: int, length: int) -> None:
        super().__init__()
        self.f, self.start, self.length, self.pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self.length - self.pos))
        if not n:
            return 0
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)
