"""The inodes of a writable mount: numbers handed out per name as the kernel looks names
up, following their entry through renames; the names of one hard-link group (Entry.link)
share one inode. An inode the kernel forgot and no handle holds is dropped."""

from __future__ import annotations

import errno

from ...staging import StagingArea
from ..model import InodeT

ROOT_INO = InodeT(1)
FIRST_INO = 16  # below: the root and the .coral files


class InodeNames:
    """The inode table a StageFS keeps (``handles`` is the StageFS's: held inodes stay)."""

    handles: dict

    def __init__(self, stage: StagingArea) -> None:
        self.stage = stage
        self.paths: dict[InodeT, str] = {ROOT_INO: ""}  # an inode -> one of its names
        self.inos: dict[str, InodeT] = {"": ROOT_INO}
        # Hard links: the names of one link group share one inode.
        self.group_inos: dict[str, InodeT] = {}   # link group -> inode
        self.ino_groups: dict[InodeT, str] = {}   # inode -> link group
        self.lookups: dict[InodeT, int] = {}
        self._next_ino = FIRST_INO

    # -- inodes --------------------------------------------------------------------------
    def _ino(self, path: str) -> InodeT:
        ino = self.inos.get(path)
        if ino is None:
            e = self.stage.get(path)
            link = e.link if e is not None else None
            ino = self.group_inos.get(link) if link else None
            if ino is None:
                ino = InodeT(self._next_ino)
                self._next_ino += 1
                if link:
                    self.group_inos[link], self.ino_groups[ino] = ino, link
            self.inos[path] = ino
            self.paths.setdefault(ino, path)
        return ino

    def _grouped(self, ino: InodeT, link: str) -> None:
        """``ino``'s file became a hard-link group: its other names get the same inode."""
        self.group_inos[link], self.ino_groups[ino] = ino, link

    def path(self, ino: InodeT) -> str:
        p = self.paths.get(ino)
        if p is None:
            raise OSError(errno.ENOENT, f"inode {ino}")
        return p

    def _detach(self, path: str) -> None:
        """``path`` and everything under it left the tree; their inodes live on only for
        the handles that hold them, or under another name (a hard link)."""
        prefix = path + "/"
        for p in [p for p in self.inos if p == path or p.startswith(prefix)]:
            ino = self.inos.pop(p)
            if self.paths.get(ino) != p:
                continue
            link = self.ino_groups.get(ino)
            other = next(iter(sorted(self.stage.links.get(link, ()))), None) if link else None
            if other is not None:
                self.paths[ino] = other
                self.inos[other] = ino
            else:
                self.paths.pop(ino, None)
                if link:
                    self.group_inos.pop(link, None)
                    self.ino_groups.pop(ino, None)

    def _move(self, old: str, new: str) -> None:
        prefix = old + "/"
        moved = {p: ino for p, ino in self.inos.items() if p == old or p.startswith(prefix)}
        for p in moved:
            del self.inos[p]
        for p, ino in moved.items():
            np = new + p[len(old):]
            self.inos[np] = ino
            self.paths[ino] = np

    def remember(self, ino: InodeT) -> None:
        self.lookups[ino] = self.lookups.get(ino, 0) + 1

    def forget(self, ino: InodeT, n: int) -> None:
        left = self.lookups.get(ino, 0) - n
        if left > 0:
            self.lookups[ino] = left
            return
        self.lookups.pop(ino, None)
        if ino < FIRST_INO or any(h.ino == ino for h in self.handles.values()):
            return
        p = self.paths.pop(ino, None)
        if p is not None:
            self.inos.pop(p, None)
        link = self.ino_groups.pop(ino, None)
        if link:
            self.group_inos.pop(link, None)
            for name in self.stage.links.get(link, ()):
                if self.inos.get(name) == ino:
                    del self.inos[name]

    def known_inodes(self) -> list[InodeT]:
        """Inodes the kernel holds a reference to."""
        return list(self.lookups)


__all__ = ["FIRST_INO", "ROOT_INO", "InodeNames"]
