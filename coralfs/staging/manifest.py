"""The manifest of a staging area (``stage.db``): its tables, the migration of manifests
written before per-entry owners and times, and how an :class:`Entry` is a row (the
columns are Entry's fields; entries.Entry documents them)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable

from ..objects.durable import create_file
from .entries import Entry

# The columns of ``entries`` (Entry documents them); rows of manifests written before
# owners, times, links and targets were kept get them in _migrate.
COLUMNS = "path, kind, mode, mtime, fid, spool, uid, gid, atime, ctime, target, link"
ADDED_COLUMNS = (("uid", "INT"), ("gid", "INT"), ("atime", "INT"), ("ctime", "INT"), ("target", "TEXT"),
                 ("link", "TEXT"))


def open_manifest(path: str) -> sqlite3.Connection:
    """The manifest database at ``path``, with its tables (created if absent, columns
    added to an older one)."""
    create_file(path)  # sqlite would make it 0644
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(
        "CREATE TABLE IF NOT EXISTS entries (path TEXT PRIMARY KEY, kind TEXT, mode INT, mtime INT,"
        " fid BLOB, spool TEXT, uid INT, gid INT, atime INT, ctime INT, target TEXT, link TEXT);"
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE IF NOT EXISTS xattrs (path TEXT, name BLOB, value BLOB, PRIMARY KEY (path, name));")
    _migrate(db)
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """A manifest from before per-entry owners and times: its rows get the owner of the
    mount (the process opening it: the daemon runs as the mount's owner) and atime =
    ctime = mtime, in one transaction."""
    have = {r[1] for r in db.execute("PRAGMA table_info(entries)")}
    missing = [(c, t) for c, t in ADDED_COLUMNS if c not in have]
    if not missing:
        return
    with db:
        db.execute("BEGIN IMMEDIATE")
        have = {r[1] for r in db.execute("PRAGMA table_info(entries)")}  # another process may have won
        for c, t in ADDED_COLUMNS:
            if c not in have:
                db.execute(f"ALTER TABLE entries ADD COLUMN {c} {t}")
        db.execute("UPDATE entries SET uid=? WHERE uid IS NULL", (os.getuid(),))
        db.execute("UPDATE entries SET gid=? WHERE gid IS NULL", (os.getgid(),))
        db.execute("UPDATE entries SET atime=mtime WHERE atime IS NULL")
        db.execute("UPDATE entries SET ctime=mtime WHERE ctime IS NULL")


def write_rows(db: sqlite3.Connection, paths: Iterable[str], e: Entry) -> None:
    """The rows of ``paths``, all naming ``e`` (several: the names of a hard-link group)."""
    db.executemany(f"INSERT OR REPLACE INTO entries ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   [(p, e.kind, e.mode, e.mtime_ns, e.fid, e.spool, e.uid, e.gid, e.atime_ns, e.ctime_ns, e.target,
                     e.link) for p in paths])


def read_rows(db: sqlite3.Connection) -> tuple[dict[str, Entry], dict[str, set[str]]]:
    """Every row (path -> Entry; the rows of one hard-link group share one Entry) and the
    names of each link group."""
    entries: dict[str, Entry] = {}
    links: dict[str, set[str]] = {}
    groups: dict[str, Entry] = {}
    for path, kind, mode, mtime, fid, spool, uid, gid, atime, ctime, target, link in db.execute(
            f"SELECT {COLUMNS} FROM entries"):
        e = groups.get(link) if link else None
        if e is None:
            e = Entry(kind, mode, mtime, fid, spool, uid, gid, atime, ctime, target, link)
            if link:
                groups[link] = e
        entries[path] = e
        if link:
            links.setdefault(link, set()).add(path)
    return entries, links


def root_meta(e: Entry) -> str:
    """The root directory (no row, no path) as its ``meta`` value."""
    return json.dumps({"mode": e.mode, "uid": e.uid, "gid": e.gid, "atime": e.atime_ns, "mtime": e.mtime_ns,
                       "ctime": e.ctime_ns})


def root_entry(value: str) -> Entry:
    r = json.loads(value)
    return Entry("d", r["mode"], r["mtime"], uid=r["uid"], gid=r["gid"], atime_ns=r["atime"], ctime_ns=r["ctime"])


__all__ = ["COLUMNS", "open_manifest", "read_rows", "root_entry", "root_meta", "write_rows"]
