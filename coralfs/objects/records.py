"""Experiment records: the ref ``refs/experiments/NAME``, a chain of commits with an empty
tree, one per event, the event in the commit's metadata under ``coralfs.experiment``.

The chain primitive lives here, in the object layer, so that both coralfs.workflow (the
`coralfs experiment` commands) and a writable mount's control file (a trainer logging a
metric into the mount) append events the same way: by compare-and-swap on the ref,
retried when another logger won.
"""

from __future__ import annotations

import math
import time

from .errors import CoralError
from .ids import ObjectId, to_hex
from .kinds import Commit, Tree
from .refs import EXPERIMENTS, HEADS, RefMoved, default_identity

RECORD = "coralfs.experiment"
BRANCH = "exp/"


class NoExperiment(CoralError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no experiment named {name!r}: `coralfs experiment list` shows them")


def append_event(repo, name: str, event: dict, *, create: bool = False) -> ObjectId:
    """Add one event to experiment ``name``'s record (``create``: the first one, refused if
    the experiment exists). Returns the new record commit."""
    ref = EXPERIMENTS + name
    for _ in range(20):
        prev = repo.refs.read(ref)
        if create and prev is not None:
            raise CoralError(f"experiment {name!r} exists already: pick another name")
        if not create and prev is None:
            raise NoExperiment(name)
        rec = Commit(repo.put(Tree({})), [prev] if prev else [], default_identity(), int(time.time()),
                     f"experiment {name}: {event['event']}", {RECORD: event})
        rid = repo.put(rec)
        try:
            repo.refs.set_if_equals(ref, prev, rid, f"experiment: {event['event']}")
            return rid
        except RefMoved:
            continue
    raise CoralError(f"experiment {name!r}: its record kept moving; retry")


def experiment_of_branch(repo, branch: str | None) -> str | None:
    """The experiment whose branch is ``branch`` (exp/NAME with a record), if any."""
    if branch and branch.startswith(BRANCH) and repo.refs.read(EXPERIMENTS + branch[len(BRANCH):]) is not None:
        return branch[len(BRANCH):]
    return None


def is_stopped(repo, name: str) -> bool:
    rid = repo.refs.read(EXPERIMENTS + name)
    while rid is not None:
        c = repo.read_commit(rid)
        if (c.metadata.get(RECORD) or {}).get("event") == "stop":
            return True
        rid = c.parents[0] if c.parents else None
    return False


def metric_event(repo, name: str, metric: str, value, step=None, branch: str | None = None) -> dict:
    """A checked ``metric`` event at the head of the experiment's branch."""
    if not isinstance(metric, str) or not metric.strip() or "\n" in metric:
        raise CoralError(f"invalid metric name {metric!r}")
    if isinstance(value, bool):
        raise CoralError(f"metric {metric}: {value!r} is not a number")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise CoralError(f"metric {metric}: {value!r} is not a number") from None
    if not math.isfinite(value):
        raise CoralError(f"metric {metric}: {value} is not a finite number")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or int(step) != step or step < 0):
        raise CoralError(f"--step {step!r}: a whole number >= 0")
    if is_stopped(repo, name):
        raise CoralError(f"experiment {name!r} is stopped: start a new one to log more")
    head = repo.refs.read(HEADS + (branch or BRANCH + name))
    return {"event": "metric", "metric": metric, "value": value,
            "step": None if step is None else int(step), "commit": to_hex(head) if head else None}
