"""Extended attributes of a staging area's entries: kept in its manifest (table
``xattrs``), never recorded by a commit."""

from __future__ import annotations

import errno
import sqlite3


class XattrRows:
    """The xattr methods of :class:`.area.StagingArea` (its ``db`` and ``touch``)."""

    db: sqlite3.Connection

    def touch(self, path: str) -> None:
        raise NotImplementedError

    def getxattr(self, path: str, name: bytes) -> bytes:
        row = self.db.execute("SELECT value FROM xattrs WHERE path=? AND name=?", (path, name)).fetchone()
        if row is None:
            raise OSError(errno.ENODATA, path)
        return row[0]

    def setxattr(self, path: str, name: bytes, value: bytes) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO xattrs VALUES (?, ?, ?)", (path, name, value))
        self.touch(path)

    def listxattr(self, path: str) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT name FROM xattrs WHERE path=? ORDER BY name", (path,))]

    def removexattr(self, path: str, name: bytes) -> None:
        with self.db:
            if self.db.execute("DELETE FROM xattrs WHERE path=? AND name=?", (path, name)).rowcount == 0:
                raise OSError(errno.ENODATA, path)
        self.touch(path)
