"""Experiments: a branch ``exp/NAME`` for the checkpoints plus a record of what was tried
and measured, kept in the repository so it travels with it (push, pull, clone).

The record is the ref ``refs/experiments/NAME``: a chain of commits with an empty tree,
one per event, whose metadata holds the event under ``coralfs.experiment``: ``start``
(params, the commit it started from, its branch), ``metric`` (name, value, step, the
checkpoint commit it belongs to: the branch head when it was logged) and ``stop``. Each
event moves the ref by compare-and-swap, so two loggers never lose a point, and gc and
fsck treat the chain like any history. ``--metric`` values in the commits of the branch
count as metric points too (step None, at that commit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..objects.errors import CoralError
from ..objects.ids import ObjectId, short, to_hex
from ..objects.kinds import Commit, Tree
from ..objects.records import BRANCH, RECORD, NoExperiment, append_event, experiment_of_branch, metric_event
from ..objects.refs import EXPERIMENTS, HEADS, RefMoved, check_ref_name, default_identity
from ..objects.repository import Repository


@dataclass
class MetricPoint:
    metric: str
    value: float
    step: int | None
    commit: str | None     # hex of the checkpoint commit the value belongs to
    time: int
    source: str = "log"    # log (experiment log / log_metric) or commit (--metric)


@dataclass
class Experiment:
    name: str
    branch: str
    params: dict
    start_commit: str | None
    started: int
    stopped: int | None = None
    points: list[MetricPoint] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "stopped" if self.stopped else "running"

    def series(self, metric: str) -> list[MetricPoint]:
        return [p for p in self.points if p.metric == metric]

    def last(self) -> dict[str, float]:
        """Each metric's latest value (by time; logged points after commit metadata)."""
        out: dict[str, float] = {}
        for p in sorted(self.points, key=lambda p: (p.time, p.source == "log")):
            out[p.metric] = p.value
        return out

    def to_json(self) -> dict:
        return {"name": self.name, "branch": self.branch, "params": self.params, "status": self.status,
                "start_commit": self.start_commit, "started": self.started, "stopped": self.stopped,
                "metrics": [vars(p) for p in self.points]}


def _append(repo: Repository, name: str, event: dict, *, create: bool = False) -> None:
    append_event(repo, name, event, create=create)


def load(repo: Repository, name: str) -> Experiment:
    check_ref_name(name, "experiment")
    rid = repo.refs.read(EXPERIMENTS + name)
    if rid is None:
        raise NoExperiment(name)
    events = []
    while rid is not None:
        c = repo.read_commit(rid)
        ev = c.metadata.get(RECORD)
        if not isinstance(ev, dict):
            raise CoralError(f"refs/experiments/{name} points at {short(rid)}, which is not an experiment record")
        events.append((c.time, ev))
        rid = c.parents[0] if c.parents else None
    events.reverse()
    t0, first = events[0]
    exp = Experiment(name, str(first.get("branch", BRANCH + name)), dict(first.get("params") or {}),
                     first.get("from"), t0)
    for t, ev in events[1:]:
        if ev.get("event") == "metric":
            exp.points.append(MetricPoint(str(ev["metric"]), float(ev["value"]), ev.get("step"), ev.get("commit"), t))
        elif ev.get("event") == "stop":
            exp.stopped = t
    exp.points += _commit_points(repo, exp)
    exp.points.sort(key=lambda p: (p.time, p.source == "log"))
    return exp


def _commit_points(repo: Repository, exp: Experiment) -> list[MetricPoint]:
    """``--metric`` values of the commits made on the experiment's branch since it began."""
    head = repo.refs.read(HEADS + exp.branch)
    out: list[MetricPoint] = []
    oid = head
    stop = exp.start_commit
    while oid is not None and to_hex(oid) != stop:
        c = repo.read_commit(oid)
        for k, v in (c.metadata.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(MetricPoint(str(k), float(v), None, to_hex(oid), c.time, "commit"))
        oid = c.parents[0] if c.parents else None
    return out


def names(repo: Repository) -> list[str]:
    return sorted(repo.refs.list(EXPERIMENTS))


def start(repo: Repository, name: str, from_ref: str | None = None, params: dict | None = None) -> Experiment:
    """Branch ``exp/NAME`` at ``from_ref`` (default HEAD), switch to it, record the params."""
    check_ref_name(name, "experiment")
    branch = BRANCH + name
    with repo.write_session():
        if repo.refs.read(EXPERIMENTS + name) is not None:
            raise CoralError(f"experiment {name!r} exists already: pick another name")
        if repo.refs.read(HEADS + branch) is not None:
            raise CoralError(f"branch {branch} exists already: pick another experiment name")
        base = repo.resolve(from_ref or "HEAD")
        repo.create_branch(branch, to_hex(base))
        _append(repo, name, {"event": "start", "params": dict(params or {}), "from": to_hex(base),
                             "branch": branch}, create=True)
        repo.checkout(branch)
    return load(repo, name)


def current(repo: Repository) -> str | None:
    """The experiment whose branch HEAD is on, if any."""
    return experiment_of_branch(repo, repo.head_branch())


def _pick(repo: Repository, name: str | None) -> str:
    name = name or current(repo)
    if name is None:
        raise CoralError("no experiment on this branch: `coralfs experiment start NAME`, or name one with --experiment")
    return name


def log_metric(repo: Repository, metric: str, value: float, step: int | None = None, *,
               experiment: str | None = None) -> MetricPoint:
    """Record ``metric`` = ``value`` for the experiment (default: the one HEAD is on), at its
    branch's current checkpoint."""
    name = _pick(repo, experiment)
    exp = load(repo, name)
    with repo.write_session():
        ev = metric_event(repo, name, metric, value, step, exp.branch)
        _append(repo, name, ev)
    return MetricPoint(ev["metric"], ev["value"], ev["step"], ev["commit"], int(time.time()))


def stop(repo: Repository, name: str | None = None) -> Experiment:
    name = _pick(repo, name)
    exp = load(repo, name)
    if exp.stopped:
        raise CoralError(f"experiment {name!r} is already stopped")
    with repo.write_session():
        _append(repo, name, {"event": "stop"})
    return load(repo, name)


def best(repo: Repository, metric: str, maximize: bool = True,
         only: list[str] | None = None) -> tuple[Experiment, MetricPoint]:
    """The experiment and point with the highest (or lowest) ``metric`` value; ties go to
    the earliest point."""
    found: tuple[Experiment, MetricPoint] | None = None
    for name in only or names(repo):
        exp = load(repo, name)
        for p in exp.series(metric):
            if found is None or (p.value > found[1].value if maximize else p.value < found[1].value):
                found = (exp, p)
    if found is None:
        raise CoralError(f"no experiment has logged {metric!r}: `coralfs experiment show NAME` lists what each has")
    return found


def compare(exps: list[Experiment], show_all: bool = False) -> list[tuple[str, str, list]]:
    """Rows (kind, key, one value per experiment) of params and latest metrics; only the
    rows whose values differ unless ``show_all``."""
    rows: list[tuple[str, str, list]] = []
    lasts = [e.last() for e in exps]
    for kind, dicts in (("param", [e.params for e in exps]), ("metric", lasts)):
        keys = sorted({k for d in dicts for k in d})
        for k in keys:
            vals = [d.get(k) for d in dicts]
            if show_all or len({repr(v) for v in vals}) > 1:
                rows.append((kind, k, vals))
    return rows


# -- records written by imports from other trackers (coralfs.integrations) -------------
# An imported run keeps the times and steps it was measured at, so its record commits
# carry those times (a record's time is its point's time), and the whole chain is
# written before the ref moves once: an import that fails leaves nothing behind.

@dataclass
class ImportedPoint:
    metric: str
    value: float
    step: int | None
    time: int


def _chain(repo: Repository, name: str, prev: ObjectId | None, events: list[tuple[int, dict]]) -> ObjectId | None:
    who = default_identity()
    for t, event in events:
        rec = Commit(repo.put(Tree({})), [prev] if prev else [], who, int(t), f"experiment {name}: {event['event']}",
                     {RECORD: event})
        prev = repo.put(rec)
    return prev


def _commit_hex(repo: Repository, commit: str | None) -> str | None:
    """``commit`` if it names a commit of this repository, else None."""
    if not commit:
        return None
    try:
        return to_hex(repo.resolve(commit))
    except CoralError:
        return None


def record_import(repo: Repository, name: str, *, params: dict, points: list[ImportedPoint], source: dict,
                  started: int, stopped: int | None = None, commit: str | None = None) -> Experiment:
    """A new experiment from another tracker's run: ``source`` (system, id) is kept in its
    start event so a later import finds it. ``commit``: the coralfs checkpoint the run
    names; when this repository has it, the branch ``exp/NAME`` points there (created if
    missing) and every point belongs to it."""
    check_ref_name(name, "experiment")
    branch = BRANCH + name
    at = _commit_hex(repo, commit)
    with repo.write_session():
        if repo.refs.read(EXPERIMENTS + name) is not None:
            raise CoralError(f"experiment {name!r} exists already: pick another name")
        events = [(started, {"event": "start", "params": dict(params), "from": at, "branch": branch,
                             "source": dict(source)})]
        events += _point_events(points, at)
        if stopped is not None:
            events.append((max(stopped, events[-1][0]), {"event": "stop"}))
        head = _chain(repo, name, None, events)
        if at is not None and repo.refs.read(HEADS + branch) is None:
            repo.create_branch(branch, at)
        repo.refs.set_if_equals(EXPERIMENTS + name, None, head, "experiment: import")
    return load(repo, name)


def _point_events(points: list[ImportedPoint], commit: str | None) -> list[tuple[int, dict]]:
    return [(p.time, {"event": "metric", "metric": p.metric, "value": float(p.value),
                      "step": None if p.step is None else int(p.step), "commit": commit})
            for p in sorted(points, key=lambda p: (p.time, -1 if p.step is None else p.step))]


def append_import(repo: Repository, name: str, points: list[ImportedPoint], stopped: int | None = None) -> Experiment:
    """Add the points (and a stop) a later import of the same run found."""
    exp = load(repo, name)
    at = _commit_hex(repo, exp.start_commit)
    events = _point_events(points, at)
    if stopped is not None and not exp.stopped:
        events.append((max([stopped] + [t for t, _ in events]), {"event": "stop"}))
    if not events:
        return exp
    with repo.write_session():
        prev = repo.refs.read(EXPERIMENTS + name)
        try:
            repo.refs.set_if_equals(EXPERIMENTS + name, prev, _chain(repo, name, prev, events), "experiment: import")
        except RefMoved:
            raise CoralError(f"experiment {name!r} changed during the import; run it again") from None
    return load(repo, name)


def source_of(repo: Repository, name: str) -> dict | None:
    """The ``source`` an imported experiment's start event keeps (None: not imported)."""
    rid = repo.refs.read(EXPERIMENTS + name)
    first = None
    while rid is not None:
        first = repo.read_commit(rid)
        rid = first.parents[0] if first.parents else None
    ev = first.metadata.get(RECORD) if first is not None else None
    src = ev.get("source") if isinstance(ev, dict) else None
    return src if isinstance(src, dict) else None
