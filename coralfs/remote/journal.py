"""The push journal: ``REPO/remote-journal/NAME.json``, written durably around each pack.

A push records the id of the pack it is about to upload (``in_flight``) before the first
byte leaves, and moves it to ``uploaded`` once the pack's index is written. The remote's
indexes already say which objects arrived (an interrupted push resumes by walking again,
stopping at what the remote has), so what the journal adds is ownership: the pack a
killed push left without an index is this repository's, and the next push deletes it
instead of leaving it behind or, worse, deleting a pack another pusher is uploading.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..objects.durable import fsync_dir, make_dirs, write_durable

JOURNAL_DIR = "remote-journal"


@dataclass
class Journal:
    path: str
    url: str
    in_flight: str | None = None
    uploaded: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, repo_path: str, remote: str, url: str) -> Journal:
        path = os.path.join(repo_path, JOURNAL_DIR, f"{remote}.json")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            if d.get("url") == url:
                return cls(path, url, d.get("in_flight"), list(d.get("uploaded", [])))
        except FileNotFoundError:
            pass
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass  # a torn journal only loses the clean-up of one interrupted pack
        return cls(path, url)

    def save(self) -> None:
        make_dirs(os.path.dirname(self.path))
        data = {"url": self.url, "in_flight": self.in_flight, "uploaded": self.uploaded}
        write_durable(self.path, json.dumps(data).encode())

    def begin(self, pack_id: str) -> None:
        self.in_flight = pack_id
        self.save()

    def done(self, pack_id: str) -> None:
        self.uploaded.append(pack_id)
        self.in_flight = None
        self.save()

    def finish(self) -> None:
        """The push completed: nothing left to resume."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(self.path))
