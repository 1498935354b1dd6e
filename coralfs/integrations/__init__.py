"""Integrations with other systems. Experiment tracking: runs of MLflow, TensorBoard and Weights & Biases
imported as coralfs experiments, and experiments exported to them.

One module per system; each imports its library only inside its functions, so coralfs
works without them and a missing one is named with the extra that brings it. What every
importer shares lives here: a run read from another tracker (:class:`Run`) becomes an
experiment record once, and a second import of the same run adds only what is new.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..objects.errors import CoralError
from ..objects.ids import to_hex
from ..objects.refs import EXPERIMENTS, HEADS
from ..objects.repository import Repository
from ..workflow import experiments as ex


class MissingExtra(CoralError):
    def __init__(self, system: str, extra: str) -> None:
        super().__init__(f"{system} support needs its library: pip install 'coralfs[{extra}]'")


def need(module: str, system: str, extra: str):
    """Import ``module`` or raise the one-line error naming the extra."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(system, extra) from None


@dataclass
class ImportSource:
    """What `coralfs import KIND PATH` commits: the files (or directories) to commit, the
    metadata to add to the commit, the name for its default message, and what to remove
    once it is committed (a staging directory the importer made)."""
    paths: list[str]
    metadata: dict = field(default_factory=dict)
    name: str = ""
    cleanup: list[str] = field(default_factory=list)

    def close(self) -> None:
        import shutil
        for p in self.cleanup:
            shutil.rmtree(p, ignore_errors=True)


@dataclass
class Run:
    """One run as another tracker stored it."""
    system: str                 # mlflow, tensorboard, wandb
    key: str                    # what identifies the run there (run id, directory)
    name: str                   # the experiment name it asks for (made a valid ref name)
    params: dict = field(default_factory=dict)
    points: list[ex.ImportedPoint] = field(default_factory=list)
    started: int = 0
    stopped: int | None = None
    commit: str | None = None   # the coralfs checkpoint the run names, if any
    info: dict = field(default_factory=dict)   # kept in the source record (tracking URI, ...)
    skipped: int = 0            # values that were not finite numbers


@dataclass
class Imported:
    name: str
    run: str
    status: str      # new, updated, unchanged
    points: int      # points added
    skipped: int = 0


def param_value(v: object) -> object:
    """A tracker's parameter (often a string) as coralfs params hold it: numbers that read
    as finite numbers become numbers, as ``--param`` does."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float)):
        return v if math.isfinite(v) else str(v)
    if not isinstance(v, str):
        return str(v)
    try:
        num = float(v)
    except ValueError:
        return v
    if not math.isfinite(num):
        return v
    return int(v) if v.strip().lstrip("-").isdigit() else num


def add_point(run: Run, metric: str, value: object, step: object, when: float) -> None:
    """Append a point to ``run``, counting values that are not finite numbers as skipped
    (an experiment record holds only finite numbers)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        run.skipped += 1
        return
    if not math.isfinite(v) or not metric or "\n" in metric or isinstance(value, bool):
        run.skipped += 1
        return
    s = int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) and step >= 0 else None
    run.points.append(ex.ImportedPoint(metric, v, s, int(when)))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def ref_safe(name: str) -> str:
    """``name`` as a single-component ref name (no slashes, spaces or control bytes)."""
    n = _UNSAFE.sub("-", name).strip("-.")
    n = re.sub(r"\.{2,}", ".", n)
    if n.endswith(".lock"):
        n = n[:-5]
    return n[:120] or "run"


def _point_key(metric: str, step: int | None, when: int, value: float) -> tuple:
    return (metric, step, int(when), float(value))


def find_imported(repo: Repository, system: str, key: str) -> str | None:
    for name in ex.names(repo):
        src = ex.source_of(repo, name)
        if src and src.get("system") == system and src.get("key") == key:
            return name
    return None


def _free_name(repo: Repository, base: str, key: str) -> str:
    """``base``, or ``base-<key>``, ``base-<key>-2`` ... whichever no experiment or branch
    holds yet."""
    suffix = ref_safe(key)[-8:]
    for cand in [base, f"{base}-{suffix}"] + [f"{base}-{suffix}-{i}" for i in range(2, 100)]:
        if repo.refs.read(EXPERIMENTS + cand) is None and repo.refs.read(HEADS + ex.BRANCH + cand) is None:
            return cand
    raise CoralError(f"no free experiment name for {base!r}: rename the run or remove old experiments")


def store(repo: Repository, run: Run) -> Imported:
    """Record ``run`` as an experiment, or add to the one an earlier import made of it."""
    existing = find_imported(repo, run.system, run.key)
    if existing is not None:
        exp = ex.load(repo, existing)
        have = {_point_key(p.metric, p.step, p.time, p.value) for p in exp.points if p.source == "log"}
        new = [p for p in run.points if _point_key(p.metric, p.step, p.time, p.value) not in have]
        stop = run.stopped if run.stopped is not None and not exp.stopped else None
        if not new and stop is None:
            return Imported(existing, run.key, "unchanged", 0, run.skipped)
        ex.append_import(repo, existing, new, stop)
        return Imported(existing, run.key, "updated", len(new), run.skipped)
    name = _free_name(repo, ref_safe(run.name), run.key)
    started = run.started or min((p.time for p in run.points), default=0)
    ex.record_import(repo, name, params=run.params, points=run.points, started=started, stopped=run.stopped,
                     commit=run.commit, source={"system": run.system, "key": run.key, **run.info})
    return Imported(name, run.key, "new", len(run.points), run.skipped)


def store_all(repo: Repository, runs: list[Run]) -> list[Imported]:
    return [store(repo, r) for r in runs]


def checkpoint_of(repo: Repository, exp: ex.Experiment) -> str | None:
    """The checkpoint an exported experiment links to: its branch head (the last
    checkpoint), else the commit it started from."""
    head = repo.refs.read(HEADS + exp.branch)
    return to_hex(head) if head is not None else exp.start_commit
