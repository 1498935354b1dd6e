"""The push journal: ``REPO/remote-journal/NAME.json``, written durably around each pack.

A push records the id of each pack it is about to upload (``in_flight``: one pack on the
way; a journal of the coralfs that kept two lists the second in ``also_in_flight``) before
the first byte leaves, and moves it to ``uploaded`` once the pack's index is written. The remote's
indexes already say which objects arrived (an interrupted push resumes by walking again,
stopping at what the remote has), so what the journal adds is ownership: the packs a
killed push left without an index are this repository's, and the next push deletes it
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
    in_flight: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, repo_path: str, remote: str, url: str) -> Journal:
        path = os.path.join(repo_path, JOURNAL_DIR, f"{remote}.json")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            if d.get("url") == url:
                # "in_flight" is the oldest pack on the way (one string, as a journal of a
                # push that sent one pack at a time held), "also_in_flight" the others
                first = d.get("in_flight")
                more = [p for p in d.get("also_in_flight", []) if isinstance(p, str)]
                return cls(path, url, ([first] if isinstance(first, str) else []) + more, list(d.get("uploaded", [])))
        except FileNotFoundError:
            pass
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass  # a torn journal only loses the clean-up of one interrupted pack
        return cls(path, url)

    def save(self) -> None:
        make_dirs(os.path.dirname(self.path))
        data = {"url": self.url, "in_flight": self.in_flight[0] if self.in_flight else None,
                "also_in_flight": self.in_flight[1:], "uploaded": self.uploaded}
        write_durable(self.path, json.dumps(data).encode())

    def begin(self, pack_id: str) -> None:
        self.in_flight.append(pack_id)
        self.save()

    def done(self, pack_id: str) -> None:
        """Its index is written."""
        self.uploaded.append(pack_id)
        self.in_flight.remove(pack_id)
        self.save()

    def finish(self) -> None:
        """The push completed: nothing left to resume."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        fsync_dir(os.path.dirname(self.path))
