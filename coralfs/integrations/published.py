"""Which commit became which registry version: the record ``coralfs publish`` keeps.

One JSON file in the repository directory, ``published.json``: a list of entries, one per
publish that reached its registry, oldest first. Each names the system (huggingface,
mlflow, sagemaker), the target there (Hub repo id, registered model name, model package
group), the coralfs commit, the version the registry gave it (Hub commit id, MLflow
model version, model package ARN), the release tag of the commit if any, and the content
id of each file published, so the next publish to the same target uploads only what
changed. It is written after the registry answered, under an flock, with the durable
write (temp, fsync, rename, fsync dir): a crash leaves the old record or the new one.
docs/decisions.md ("Publish: the registry mapping") says why a file and not refs.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ..objects.durable import open_private, write_durable
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, to_hex
from ..objects.kinds import Tag
from ..objects.repository import Repository

FILE = "published.json"
SYSTEMS = ("huggingface", "mlflow", "sagemaker")


@dataclass
class Published:
    system: str
    target: str
    commit: str                 # hex
    version: str                # what the registry calls it
    time: int = 0
    release: str | None = None
    url: str | None = None
    files: dict[str, str] = field(default_factory=dict)   # path -> content id

    def to_json(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """One line for `show` and `releases`: system, target, version."""
        v = self.version[:12] if self.system == "huggingface" else self.version
        return f"{self.system} {self.target} {v}"


def _path(repo: Repository) -> str:
    return os.path.join(repo.path, FILE)


def load(repo: Repository) -> list[Published]:
    """Every entry, oldest first; none when nothing was published. A damaged file is an
    error naming it (never read as "nothing published", which would upload all again)."""
    path = _path(repo)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return [Published(**e) for e in doc["entries"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as e:
        raise CoralError(f"{path} is damaged ({type(e).__name__}): restore it from a backup or remove it "
                         "(the next publish then uploads every file)") from None


@contextmanager
def _locked(repo: Repository) -> Iterator[None]:
    fd = open_private(_path(repo) + ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record(repo: Repository, entry: Published) -> Published:
    """Append ``entry`` (re-reading under the lock, so two publishes keep both)."""
    entry.time = entry.time or int(time.time())
    with _locked(repo):
        entries = load(repo) + [entry]
        data = json.dumps({"entries": [e.to_json() for e in entries]}, indent=1, sort_keys=True).encode()
        write_durable(_path(repo), data + b"\n")
    return entry


def last(repo: Repository, system: str, target: str) -> Published | None:
    """The newest publish of ``system`` ``target``."""
    found = [e for e in load(repo) if e.system == system and e.target == target]
    return found[-1] if found else None


def of_commits(repo: Repository, commits: list[str]) -> dict[str, list[Published]]:
    """commit hex -> its publishes, for the commits asked about."""
    want = set(commits)
    out: dict[str, list[Published]] = {}
    for e in load(repo):
        if e.commit in want:
            out.setdefault(e.commit, []).append(e)
    return out


def release_of(repo: Repository, commit: ObjectId) -> str | None:
    """The release tag (vX.Y.Z) on ``commit``, if it has one."""
    from ..workflow import semver
    for name, oid in sorted(repo.tags().items()):
        if semver.parse_tag(name) is None:
            continue
        obj = repo.odb.get_object(oid)
        if (repo.peel(oid) if isinstance(obj, Tag) else oid) == commit:
            return name
    return None


def already(repo: Repository, system: str, target: str, commit: ObjectId) -> Published | None:
    """The publish of exactly this commit to this target, if it happened."""
    hx = to_hex(commit)
    for e in reversed(load(repo)):
        if e.system == system and e.target == target and e.commit == hx:
            return e
    return None
