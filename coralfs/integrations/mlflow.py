"""MLflow: runs imported as experiments, experiments exported as runs.

A run maps to an experiment record like this: its params (strings in MLflow; numbers
come back as numbers), every metric's full history with steps and timestamps (seconds
in coralfs), its start and end time (a finished, failed or killed run is a stopped
experiment) and its MLflow run id, kept in the record so a second import adds only new
points. An exported run carries the tags ``coralfs.commit`` (the experiment's last
checkpoint), ``coralfs.branch``, ``coralfs.repository`` and ``coralfs.experiment``; an
import uses ``coralfs.experiment`` as the name and ``coralfs.commit`` as the checkpoint
when the repository has it.
"""

from __future__ import annotations

import contextlib
import io
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from ..objects.errors import CoralError
from ..objects.repository import Repository
from ..workflow import experiments as ex
from . import Imported, Run, add_point, checkpoint_of, need, param_value, store_all

SYSTEM = "mlflow"
TAG_COMMIT, TAG_BRANCH, TAG_REPO, TAG_EXP = "coralfs.commit", "coralfs.branch", "coralfs.repository", "coralfs.experiment"
_BATCH = 1000   # MLflow's limit of metrics per log_batch call (params and tags: 100)


class Unreachable(CoralError):
    def __init__(self, uri: str, why: str) -> None:
        super().__init__(f"MLflow tracking server {uri} is unreachable ({why}): check --tracking-uri and that the server runs")


def _check_reachable(uri: str, must_exist: bool) -> None:
    """Fail in a second with the URI named, instead of MLflow's minutes of retries; a
    local store must exist to import from."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as r:
                r.read(1)
        except urllib.error.HTTPError as e:
            if e.code in (404, 405, 502, 503, 504):
                raise Unreachable(uri, f"HTTP {e.code} from {url}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise Unreachable(uri, str(getattr(e, "reason", e))) from None
        return
    if must_exist:
        path = parsed.path if parsed.scheme in ("sqlite", "file") else uri if not parsed.scheme else None
        if parsed.scheme == "sqlite" and path and path.startswith("//"):
            path = path[1:]   # sqlite:////abs/path -> /abs/path
        if path is not None and not os.path.exists(path):
            raise CoralError(f"no MLflow store at {uri} ({path} does not exist)")


@contextlib.contextmanager
def _client(uri: str, must_exist: bool) -> Iterator[object]:
    """An MlflowClient for ``uri`` with few retries; MLflow's errors become one line
    naming the URI, and what it prints (run links) is kept off our output."""
    need("mlflow", "MLflow", "mlflow")
    _check_reachable(uri, must_exist)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    except MlflowException as e:
        msg = (str(e.message) if hasattr(e, "message") else str(e)).strip().splitlines()
        raise CoralError(f"MLflow at {uri}: {msg[0] if msg else type(e).__name__}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pages(fetch) -> Iterator[object]:
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


def _experiments(client, name: str | None, uri: str) -> list:
    if name is not None:
        e = client.get_experiment_by_name(name)
        if e is None:
            raise CoralError(f"MLflow at {uri} has no experiment named {name!r}")
        return [e]
    return list(_pages(lambda t: client.search_experiments(max_results=1000, page_token=t)))


def _read_run(client, run, exp_name: str, uri: str) -> Run:
    info, data = run.info, run.data
    tags = dict(data.tags)
    out = Run(SYSTEM, info.run_id, tags.get(TAG_EXP) or info.run_name or info.run_id,
              params={k: param_value(v) for k, v in data.params.items()},
              started=int((info.start_time or 0) // 1000), commit=tags.get(TAG_COMMIT),
              info={"tracking_uri": uri, "experiment": exp_name, "run_id": info.run_id})
    if tags.get(TAG_REPO):
        out.info["repository"] = tags[TAG_REPO]
    if info.status in ("FINISHED", "FAILED", "KILLED") and info.end_time:
        out.stopped = int(info.end_time // 1000)
    for key in sorted(data.metrics):
        for m in client.get_metric_history(info.run_id, key):
            add_point(out, m.key, m.value, m.step, m.timestamp / 1000)
    return out


def read_runs(uri: str, experiment: str | None = None) -> list[Run]:
    """Every run of ``experiment`` (default: of every experiment) at ``uri``."""
    with _client(uri, must_exist=True) as client:
        runs = []
        for e in _experiments(client, experiment, uri):
            for r in _pages(lambda t, e=e: client.search_runs([e.experiment_id], max_results=1000, page_token=t)):
                runs.append(_read_run(client, r, e.name, uri))
        return runs


def import_runs(repo: Repository, uri: str, experiment: str | None = None) -> list[Imported]:
    """Import the runs (all read before anything is recorded). Runs this repository
    exported itself are left out: their experiments are here already."""
    runs = read_runs(uri, experiment)
    mine = set(ex.names(repo))
    own = [r for r in runs if r.info.get("repository") == repo.path and r.name in mine]
    return store_all(repo, [r for r in runs if r not in own]) + [Imported(r.name, r.key, "own", 0) for r in own]


@dataclass
class Exported:
    name: str
    run_id: str
    status: str     # new, updated, unchanged
    points: int


def _find_exported(client, exp_id: str, repo: Repository, name: str):
    for r in _pages(lambda t: client.search_runs([exp_id], max_results=1000, page_token=t)):
        if r.data.tags.get(TAG_EXP) == name and r.data.tags.get(TAG_REPO) == repo.path:
            return r
    return None


def export_experiments(repo: Repository, names: list[str], uri: str, experiment: str | None = None) -> list[Exported]:
    """One run per experiment (a second export adds what is new to the same run)."""
    exps = [ex.load(repo, n) for n in names]     # every name checked before anything is written
    need("mlflow", "MLflow", "mlflow")
    from mlflow.entities import Metric, Param, RunTag
    target = experiment or "Default"
    out = []
    with _client(uri, must_exist=False) as client:
        e = client.get_experiment_by_name(target)
        exp_id = e.experiment_id if e is not None else client.create_experiment(target)
        for exp in exps:
            commit = checkpoint_of(repo, exp)
            tags = {TAG_EXP: exp.name, TAG_BRANCH: exp.branch, TAG_REPO: repo.path}
            if commit:
                tags[TAG_COMMIT] = commit
            run = _find_exported(client, exp_id, repo, exp.name)
            have: set = set()
            if run is None:
                run = client.create_run(exp_id, start_time=exp.started * 1000, run_name=exp.name, tags=tags)
                status = "new"
                params = [Param(k, str(v)) for k, v in exp.params.items()]
            else:
                status = "updated"
                for key in run.data.metrics:
                    have |= {(m.key, m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key)}
                params = [Param(k, str(v)) for k, v in exp.params.items() if k not in run.data.params]
            rid = run.info.run_id
            metrics = [Metric(p.metric, p.value, p.time * 1000, p.step or 0) for p in exp.points]
            metrics = [m for m in metrics if (m.key, m.step, m.timestamp, m.value) not in have]
            tag_list = [RunTag(k, v) for k, v in tags.items()]
            for i in range(0, max(len(params), 1), 100):
                client.log_batch(rid, params=params[i:i + 100], tags=tag_list if i == 0 else [])
            for i in range(0, len(metrics), _BATCH):
                client.log_batch(rid, metrics=metrics[i:i + _BATCH])
            if exp.stopped and run.info.status == "RUNNING":
                client.set_terminated(rid, "FINISHED", end_time=exp.stopped * 1000)
            if status == "updated" and not metrics and not params:
                status = "unchanged"
            out.append(Exported(exp.name, rid, status, len(metrics)))
    return out
