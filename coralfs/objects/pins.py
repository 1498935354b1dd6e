"""Pins: named sets of object ids that gc must keep and fsck must check.

A ref keeps a commit and all it reaches alive; a pin keeps any objects alive (a staging
area's base commit, a commit being recorded, committed files a stash holds) without
naming a commit. Each pin is one file ``REPO/pins/NAME`` of hex ids, one a line, written
durably; names are slash-separated components of printable ASCII (none empty or starting with
``.``), so no pin escapes ``pins/``. gc and fsck read every pin through :meth:`Pins.read_all` (as part of the one
``roots()`` of the repository), so what keeps an object alive is an explicit record, not
a file-name convention of the layer that wrote it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .durable import make_dirs, write_durable
from .errors import CoralError
from .ids import ObjectId, from_hex, to_hex

PINS_DIR = "pins"


class DamagedPin(CoralError):
    exit_code = 3


class Pins:
    """The pins of one repository (``repo.pins``)."""

    def __init__(self, repo_path: str) -> None:
        self.root = os.path.join(repo_path, PINS_DIR)

    def _path(self, name: str) -> str:
        check_pin_name(name)
        return os.path.join(self.root, *name.split("/"))

    def set(self, name: str, ids: Iterable[ObjectId]) -> None:
        """Replace pin ``name`` by ``ids`` (durably: temp, fsync, rename, fsync dir)."""
        path = self._path(name)
        make_dirs(os.path.dirname(path))
        write_durable(path, "".join(to_hex(i) + "\n" for i in sorted(set(ids))).encode())

    def get(self, name: str) -> set[ObjectId]:
        """The ids of pin ``name`` (empty if there is none); a damaged pin raises."""
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return set()
        return pin_ids(data, f"{PINS_DIR}/{name}")

    def delete(self, name: str) -> None:
        """Drop pin ``name`` (absent is fine), and directories it leaves empty."""
        path = self._path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        d = os.path.dirname(path)
        while d != self.root:
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)

    def names(self, prefix: str = "") -> list[str]:
        """Every pin name starting with ``prefix``, sorted."""
        out = []
        for dirpath, dirnames, files in os.walk(self.root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for f in files:
                if f.startswith("."):
                    continue  # a temp file of a write in progress
                name = f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}"
                if name.startswith(prefix):
                    out.append(name)
        return sorted(out)

    def read_all(self) -> tuple[dict[str, set[ObjectId]], list[str]]:
        """Every pin with its ids, and one problem line per pin that does not parse (a
        damaged pin is reported, never read as empty: gc would delete what it keeps)."""
        pins: dict[str, set[ObjectId]] = {}
        problems: list[str] = []
        for name in self.names():
            try:
                pins[name] = self.get(name)
            except CoralError as e:
                problems.append(str(e))
        return pins, problems


def check_pin_name(name: str) -> str:
    """A pin name: ``/``-separated components of printable ASCII, none empty or starting
    with ``.`` (so neither ``..`` nor a temp file's name), at most 1024 bytes."""
    parts = name.split("/")
    if (not name or len(name) > 1024 or any(not p or p.startswith(".") for p in parts)
            or not all(32 < ord(c) < 127 and c != "\\" for c in name)):
        raise CoralError(f"invalid pin name {name!r}")
    return name


def pin_ids(data: bytes, where: str) -> set[ObjectId]:
    """Parse a pin file's bytes (one hex id a line); ``where`` names it in the error."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DamagedPin(f"{where} is damaged: it is not UTF-8 text") from None
    out: set[ObjectId] = set()
    for i, line in enumerate(lines, 1):
        text = line.strip()
        try:
            if len(text) != 64:
                raise ValueError
            out.add(from_hex(text))
        except ValueError:
            raise DamagedPin(f"{where} is damaged: line {i} is not a 64-digit hex id") from None
    return out
