"""What both mount models share: typed ids and the errors the adapter maps to errno.

Neither model (readonly/vfs.py, writable/vfs.py) imports pyfuse3: the id types are
pyfuse3's own for a type checker and plain ints at run time, and a model says what went
wrong with these errors (or an OSError carrying its errno), never with a FUSEError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NewType

from ..objects.errors import CoralError

if TYPE_CHECKING:
    from pyfuse3 import FileHandleT, InodeT
else:
    InodeT = NewType("InodeT", int)
    FileHandleT = NewType("FileHandleT", int)


class NotFound(CoralError):
    """No such entry (ENOENT)."""


class BadHandle(CoralError):
    """A file or directory handle this mount never gave out, or already released (EBADF)."""


__all__ = ["BadHandle", "FileHandleT", "InodeT", "NotFound"]
