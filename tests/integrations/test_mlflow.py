"""experiment import/export mlflow against a real MLflow tracking server (SQLite backend)."""

from __future__ import annotations

import json
import uuid

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from tests.cli.test_cli import cli
from tests.integrations.conftest import _free_port
from tests.integrations.helpers import fails, head, names, series, show, trained


def _client(url: str) -> MlflowClient:
    return MlflowClient(tracking_uri=url)


def test_export_then_import_into_a_fresh_repository_round_trips(tmp_path, mlflow_server):
    repo = trained(tmp_path)
    target = f"rt-{uuid.uuid4().hex[:8]}"
    out = json.loads(cli(repo, "experiment", "export", "mlflow", "lr-a", "--tracking-uri", mlflow_server,
                         "--experiment", target, "--json").output)
    assert [(d["name"], d["status"], d["points"]) for d in out] == [("lr-a", "new", 6)]
    c = _client(mlflow_server)
    run = c.get_run(out[0]["run_id"])
    assert run.info.run_name == "lr-a" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "2e-05", "opt": "adam", "layers": "4"}
    tags = run.data.tags
    assert tags["coralfs.commit"] == head(repo, "exp/lr-a") and tags["coralfs.branch"] == "exp/lr-a"
    assert tags["coralfs.repository"] == repo
    assert [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, "loss")] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]

    # exporting again adds nothing and makes no second run
    again = json.loads(cli(repo, "experiment", "export", "mlflow", "lr-a", "--tracking-uri", mlflow_server,
                           "--experiment", target, "--json").output)
    assert [(d["run_id"], d["status"]) for d in again] == [(out[0]["run_id"], "unchanged")]
    assert len(c.search_runs([c.get_experiment_by_name(target).experiment_id])) == 1

    fresh = str(tmp_path / "fresh")
    cli(None, "init", fresh)
    r = cli(fresh, "experiment", "import", "mlflow", "--tracking-uri", mlflow_server, "--experiment", target)
    assert "lr-a" in r.output and "imported 6 points" in r.output
    a, b = show(repo, "lr-a"), show(fresh, "lr-a")
    assert b["params"] == a["params"] == {"lr": 2e-5, "opt": "adam", "layers": 4}
    assert series(b) == series(a) and len(series(a)) == 6
    assert b["status"] == "stopped"
    # a second import does not duplicate
    r = cli(fresh, "experiment", "import", "mlflow", "--tracking-uri", mlflow_server, "--experiment", target)
    assert "already imported" in r.output
    assert names(fresh) == ["lr-a"] and series(show(fresh, "lr-a")) == series(a)
    # into the repository that exported it: its own runs are left as they are
    r = cli(repo, "experiment", "import", "mlflow", "--tracking-uri", mlflow_server, "--experiment", target)
    assert "exported from this repository" in r.output and names(repo) == ["lr-a"]


def test_import_runs_made_with_the_mlflow_client(tmp_path, mlflow_server):
    c = _client(mlflow_server)
    target = f"client-{uuid.uuid4().hex[:8]}"
    eid = c.create_experiment(target)
    t0 = 1_700_000_000_000
    done = c.create_run(eid, run_name="baseline", start_time=t0)
    c.log_batch(done.info.run_id, params=[Param("lr", "0.001"), Param("optimizer", "sgd")],
                metrics=[Metric("loss", 2.0 - i / 10, t0 + i * 1000, i * 10) for i in range(20)]
                + [Metric("val/acc", 0.5 + i / 100, t0 + i * 2000, i) for i in range(5)])
    c.set_terminated(done.info.run_id, "FINISHED", end_time=t0 + 60_000)
    live = c.create_run(eid, run_name="baseline", start_time=t0)   # same name: another experiment
    c.log_metric(live.info.run_id, "loss", 3.0, timestamp=t0, step=0)

    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    got = json.loads(cli(repo, "experiment", "import", "mlflow", "--tracking-uri", mlflow_server, "--experiment", target,
                         "--json").output)
    by_run = {d["run"]: d for d in got}
    assert by_run[done.info.run_id]["points"] == 25 and by_run[live.info.run_id]["points"] == 1
    finished = show(repo, by_run[done.info.run_id]["name"])
    running = show(repo, by_run[live.info.run_id]["name"])
    assert {finished["name"], running["name"]} == {"baseline", f"baseline-{live.info.run_id[-8:]}"} or \
        {finished["name"], running["name"]} == {"baseline", f"baseline-{done.info.run_id[-8:]}"}
    assert finished["params"] == {"lr": 0.001, "optimizer": "sgd"}
    assert [(s, v, t) for m, s, v, t in series(finished) if m == "loss"] == \
        [(i * 10, 2.0 - i / 10, 1_700_000_000 + i) for i in range(20)]
    assert finished["status"] == "stopped" and running["status"] == "running"

    # the live run goes on: a second import adds only its new points
    c.log_metric(live.info.run_id, "loss", 2.5, timestamp=t0 + 5000, step=1)
    again = json.loads(cli(repo, "experiment", "import", "mlflow", "--tracking-uri", mlflow_server, "--experiment", target,
                           "--json").output)
    assert {d["run"]: (d["status"], d["points"]) for d in again} == {done.info.run_id: ("unchanged", 0),
                                                                     live.info.run_id: ("updated", 1)}
    assert [(s, v) for m, s, v, t in series(show(repo, running["name"]))] == [(0, 3.0), (1, 2.5)]
    best = json.loads(cli(repo, "experiment", "best", "--metric", "loss", "--min", "--json").output)
    assert (best["experiment"], best["value"]) == (finished["name"], 2.0 - 19 / 10)


def test_bad_input_is_one_line_and_changes_nothing(tmp_path, mlflow_server):
    repo = trained(tmp_path)
    before = show(repo, "lr-a")
    nowhere = f"http://127.0.0.1:{_free_port()}"
    msg = fails(repo, "experiment", "import", "mlflow", "--tracking-uri", nowhere)
    assert nowhere in msg and "unreachable" in msg
    msg = fails(repo, "experiment", "export", "mlflow", "lr-a", "--tracking-uri", nowhere)
    assert nowhere in msg
    assert "no experiment named 'nope'" in fails(repo, "experiment", "export", "mlflow", "lr-a", "nope",
                                                 "--tracking-uri", mlflow_server, "--experiment", "never-made")
    assert _client(mlflow_server).get_experiment_by_name("never-made") is None   # nothing written for lr-a either
    assert "no experiment named 'absent-exp'" in fails(repo, "experiment", "import", "mlflow", "--tracking-uri",
                                                        mlflow_server, "--experiment", "absent-exp")
    missing = tmp_path / "none.db"
    assert str(missing) in fails(repo, "experiment", "import", "mlflow", "--tracking-uri", f"sqlite:///{missing}")
    assert not missing.exists()
    assert names(repo) == ["lr-a"] and show(repo, "lr-a") == before
