"""The spool files a writable mount has open: one descriptor per spool file, shared by
the handles of its file, and, for a committed file under range copy-on-write, its overlay
(coralfs/staging/overlay.py) and the committed bytes it lies over.

A handle keeps the overlay it attached to: a commit may drop the spool's name (and its
map) while a reader still holds it open, and that reader must go on seeing the written
ranges over the committed bytes, never the spool's holes.
"""

from __future__ import annotations

import os

from ...objects.reader import FileView
from ...staging import StagingArea
from ...staging.overlay import Overlay, Piece


class SpoolFiles:
    """The open spools of a StageFS (its ``stage`` and ``repo``)."""

    stage: StagingArea

    def __init__(self) -> None:
        self.fds: dict[str, list[int]] = {}            # spool name -> [fd, handles]
        self.overlays: dict[str, Overlay | None] = {}  # spool name (open) -> its overlay
        self.unders: dict[str, FileView] = {}          # spool name (open) -> the committed bytes under it

    def _open_spool(self, spool: str) -> int:
        """A descriptor of ``spool`` for one more handle."""
        got = self.fds.get(spool)
        if got is not None:
            got[1] += 1
            return got[0]
        ov = self.stage.overlay(spool)
        fd = os.open(self.stage.spool_path(spool), os.O_RDWR)
        self.fds[spool], self.overlays[spool] = [fd, 1], ov
        return fd

    def _close_spool(self, spool: str) -> bool:
        """One handle less on ``spool``; True when that was the last (the descriptor closed)."""
        got = self.fds[spool]
        got[1] -= 1
        if got[1]:
            return False
        os.close(got[0])
        del self.fds[spool]
        self.overlays.pop(spool, None)
        self.unders.pop(spool, None)
        return True

    def _overlay(self, spool: str) -> Overlay | None:
        return self.overlays[spool] if spool in self.overlays else self.stage.overlay(spool)

    def _under(self, spool: str, ov: Overlay) -> FileView:
        view = self.unders.get(spool)
        if view is None:
            view = self.unders[spool] = self.stage.repo.open_file(ov.fid)
        return view

    def _read_spool(self, spool: str, off: int, size: int) -> bytes:
        fd, ov = self.fds[spool][0], self._overlay(spool)
        if ov is None:
            return os.pread(fd, size, off)
        return ov.read(fd, os.fstat(fd).st_size, off, size, self._under(spool, ov).read)

    def _spool_plan(self, spool: str, off: int, size: int) -> tuple[list[Piece], FileView] | None:
        ov = self._overlay(spool)
        if ov is None:
            return None
        n = max(0, min(size, os.fstat(self.fds[spool][0]).st_size - off))
        return ov.pieces(off, n), self._under(spool, ov)

    def _wrote(self, spool: str, off: int, n: int) -> None:
        """Bytes now in the spool (pwritten already: the map never claims more)."""
        if (ov := self._overlay(spool)) is not None:
            ov.wrote(off, n)

    def _sync(self, spool: str) -> None:
        """The spool's bytes, then its overlay map (which claims them), made durable."""
        os.fsync(self.fds[spool][0])
        if (ov := self._overlay(spool)) is not None:
            ov.sync()

    def _truncate_spool(self, spool: str, size: int) -> None:
        if spool in self.fds:
            os.ftruncate(self.fds[spool][0], size)
        else:
            os.truncate(self.stage.spool_path(spool), size)
        if (ov := self._overlay(spool)) is not None:
            ov.truncated(size)  # after the spool's: a lost record is what recovery finds anyway

    def spooled_bytes(self) -> int:
        """Bytes of committed files the open overlays hold (what range copy-on-write copied)."""
        return sum(ov.spooled() for ov in self.overlays.values() if ov is not None)


__all__ = ["SpoolFiles"]
