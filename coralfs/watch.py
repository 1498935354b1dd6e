"""``coralfs watch``: commit each settled checkpoint a trainer writes into a directory.

A trainer that already saves to a plain directory (for example Hugging Face Trainer's
``checkpoint-500/``) keeps doing so; entries of the directory matching a glob are watched
with inotify (watchdog). An entry has settled once no file event touched it for
``debounce`` seconds; it is then committed on the branch, with its step (the number in
its name) and its source path in the commit metadata. An entry is committed once: the
source paths already recorded on the branch are skipped, so a restarted watcher does not
commit twice. Entries already present when the watcher starts are caught up.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .api import infer_derivations
from .ingest import CommitResult
from .objects.errors import CoralError
from .objects.repository import Repository, in_write_session

log = logging.getLogger(__name__)

STEP = re.compile(r"(\d+)(?!.*\d)")


def step_of(name: str) -> int | None:
    m = STEP.search(name)
    return int(m.group(1)) if m else None


@dataclass
class Watcher:
    repo: Repository
    directory: str
    branch: str | None = None
    pattern: str = "checkpoint-*"
    debounce: float = 30.0
    on_commit: Callable[[str, CommitResult], None] | None = None
    min_interval: float = 0.0   # seconds between two commits (a settled entry waits)
    keep_last: int = 0          # > 0: tag each commit auto/BRANCH/N, keep the newest N tags
    _last_commit: float = 0.0
    _last_event: dict[str, float] = field(default_factory=dict)
    _done: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        infer_derivations(self.repo)   # as `coralfs commit` does
        self.directory = os.path.abspath(self.directory)
        if not os.path.isdir(self.directory):
            raise CoralError(f"{self.directory}: not a directory to watch; create it or point at the trainer's output_dir")
        self.branch = self.branch or self.repo.head_branch()
        if self.branch is None:
            raise CoralError("HEAD is detached: give --branch for the commits")
        head = self.repo.branch_head(self.branch)
        if head is not None:
            for _oid, c in self.repo.log(head):
                src = c.metadata.get("source")
                if isinstance(src, str):
                    self._done.add(src)

    def _entry_of(self, path: str) -> str | None:
        """The watched entry (a direct child of the directory) that ``path`` lies in."""
        rel = os.path.relpath(os.path.abspath(path), self.directory)
        if rel.startswith("..") or rel == ".":
            return None
        top = rel.split(os.sep, 1)[0]
        if not fnmatch.fnmatchcase(top, self.pattern):
            return None
        return os.path.join(self.directory, top)

    def touched(self, path: str) -> None:
        entry = self._entry_of(path)
        if entry is not None:
            with self._lock:
                self._last_event[entry] = time.monotonic()

    def catch_up(self) -> None:
        """Entries present at start count as touched when last modified."""
        now_wall, now = time.time(), time.monotonic()
        for name in sorted(os.listdir(self.directory)):
            entry = os.path.join(self.directory, name)
            if fnmatch.fnmatchcase(name, self.pattern) and entry not in self._done:
                newest = max((os.lstat(os.path.join(d, f)).st_mtime for d, _, fs in os.walk(entry) for f in fs),
                             default=os.lstat(entry).st_mtime)
                with self._lock:
                    self._last_event.setdefault(entry, now - max(0.0, now_wall - newest))

    def settled(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            ready = [e for e, t in self._last_event.items() if now - t >= self.debounce and e not in self._done]
        return sorted(ready, key=lambda e: (step_of(os.path.basename(e)) or 0, e))

    @in_write_session
    def commit(self, entry: str) -> CommitResult | None:
        name = os.path.basename(entry)
        if not os.path.lexists(entry):  # deleted before it settled (rotated away)
            with self._lock:
                self._last_event.pop(entry, None)
            return None
        meta: dict = {"source": entry}
        step = step_of(name)
        if step is not None:
            meta["step"] = step
        # An entry is a child of the watched directory, not a path the user typed: a
        # link there is refused like any link inside a source.
        try:
            res = self.repo.commit_paths([entry], f"{name}", branch=self.branch, metadata=meta,
                                         follow_top_links=False)
        except (CoralError, OSError):
            if os.path.lexists(entry):
                raise
            # Rotated away while it was read (save_total_limit): nothing was committed.
            log.info("%s was deleted while being committed; skipped", entry)
            with self._lock:
                self._last_event.pop(entry, None)
            return None
        self._last_commit = time.monotonic()
        if self.keep_last > 0:
            self.repo.tag_rotating(f"auto/{self.branch}", res.commit, self.keep_last, f"watch: {name}")
        with self._lock:
            self._done.add(entry)
            self._last_event.pop(entry, None)
        if self.on_commit:
            self.on_commit(entry, res)
        return res

    def run(self, exit_after: int | None = None, timeout: float | None = None, poll: float = 0.2) -> int:
        """Watch until interrupted, ``exit_after`` commits, or ``timeout`` seconds."""
        handler = _Handler(self)
        observer = Observer()
        observer.schedule(handler, self.directory, recursive=True)
        observer.start()
        made = 0
        start = time.monotonic()
        try:
            self.catch_up()
            while True:
                for entry in self.settled():
                    if self.min_interval and self._last_commit and \
                            time.monotonic() - self._last_commit < self.min_interval:
                        break  # too soon after the last commit: it waits for the interval
                    if self.commit(entry) is not None:
                        made += 1
                        if exit_after is not None and made >= exit_after:
                            return made
                if timeout is not None and time.monotonic() - start >= timeout:
                    return made
                time.sleep(poll)
        finally:
            observer.stop()
            observer.join()


class _Handler(FileSystemEventHandler):
    def __init__(self, w: Watcher) -> None:
        self.w = w

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.w.touched(event.src_path)
        dest = getattr(event, "dest_path", "")
        if dest:
            self.w.touched(dest)
