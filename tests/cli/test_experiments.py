"""coralfs experiment: start, log (CLI and coralfs.log_metric), list, show, compare, best,
stop, on real checkpoints; the record survives gc and is checked by fsck."""

from __future__ import annotations

import json
import subprocess

from tests.cli.test_cli import _ckpt, cli
from tests.conftest import PYTHON, fails, head_of


def test_experiment_lifecycle(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _ckpt(tmp_path / "c0", 0, n=16), "-m", "base")
    base = head_of(repo)
    assert "on branch exp/lr-a" in cli(repo, "experiment", "start", "lr-a", "--param", "lr=2e-5", "-p", "opt=adam").output
    cli(repo, "commit", _ckpt(tmp_path / "c1", 1, n=16), "-m", "a step 1", "--metric", "loss=0.9")
    a1 = head_of(repo)
    assert head_of(repo, "exp/lr-a") == a1 and head_of(repo, "main") == base   # commits go to the experiment branch
    cli(repo, "experiment", "log", "accuracy", "0.71", "--step", "1")
    cli(repo, "commit", _ckpt(tmp_path / "c2", 2, n=16), "-m", "a step 2")
    a2 = head_of(repo)
    cli(repo, "experiment", "log", "accuracy", "0.69", "--step", "2")
    # from Python, as a training loop would
    p = subprocess.run([PYTHON, "-c", f"import coralfs; print(coralfs.log_metric('loss', 0.5, step=2, repo={repo!r}).commit)"],
                       capture_output=True, text=True, check=True)
    assert p.stdout.strip() == a2

    cli(repo, "experiment", "start", "lr-b", "--from", "main", "--param", "lr=1e-4", "-p", "opt=adam")
    cli(repo, "commit", _ckpt(tmp_path / "c3", 3, n=16), "-m", "b step 1")
    b1 = head_of(repo)
    cli(repo, "experiment", "log", "accuracy", "0.70", "--step", "1")
    cli(repo, "experiment", "stop")

    best = json.loads(cli(repo, "experiment", "best", "--metric", "accuracy", "--json").output)
    assert (best["experiment"], best["value"], best["step"], best["commit"]) == ("lr-a", 0.71, 1, a1)
    assert "lr-a: accuracy=0.71 step 1 at " + a1[:12] in cli(repo, "experiment", "best", "--metric", "accuracy").output
    worst = json.loads(cli(repo, "experiment", "best", "-m", "accuracy", "--min", "--json").output)
    assert (worst["experiment"], worst["value"], worst["commit"]) == ("lr-a", 0.69, a2)
    only_b = json.loads(cli(repo, "experiment", "best", "-m", "accuracy", "lr-b", "--json").output)
    assert (only_b["experiment"], only_b["commit"]) == ("lr-b", b1)

    show = json.loads(cli(repo, "experiment", "show", "lr-a", "--json").output)
    assert show["params"] == {"lr": 2e-5, "opt": "adam"} and show["status"] == "running"
    pts = [(m["metric"], m["value"], m["step"], m["commit"], m["source"]) for m in show["metrics"]]
    assert sorted(pts, key=repr) == sorted([("loss", 0.9, None, a1, "commit"), ("accuracy", 0.71, 1, a1, "log"),
                                            ("accuracy", 0.69, 2, a2, "log"), ("loss", 0.5, 2, a2, "log")], key=repr)
    lst = {e["name"]: e for e in json.loads(cli(repo, "experiment", "list", "--json").output)}
    assert (lst["lr-a"]["status"], lst["lr-b"]["status"]) == ("running", "stopped")

    rows = json.loads(cli(repo, "experiment", "compare", "lr-a", "lr-b", "--json").output)
    got = {(r["kind"], r["key"]): r["values"] for r in rows}
    assert got == {("param", "lr"): {"lr-a": 2e-5, "lr-b": 1e-4},
                   ("metric", "accuracy"): {"lr-a": 0.69, "lr-b": 0.70},
                   ("metric", "loss"): {"lr-a": 0.5, "lr-b": None}}   # opt=adam is equal: left out
    every = json.loads(cli(repo, "experiment", "compare", "lr-a", "lr-b", "--all", "--json").output)
    assert ("param", "opt") in {(r["kind"], r["key"]) for r in every}
    assert "lr" in cli(repo, "experiment", "compare", "lr-a", "lr-b").output

    # the record is history: gc keeps it, fsck checks it, and it still loads
    cli(repo, "gc", "--prune-age", "0")
    cli(repo, "fsck")
    assert len(json.loads(cli(repo, "experiment", "show", "lr-a", "--json").output)["metrics"]) == 4


def test_experiment_bad_input(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _ckpt(tmp_path / "c0", 0, n=16), "-m", "base")
    assert "no experiment on this branch" in fails(repo, "experiment", "log", "acc", "0.5")
    assert "no experiment named 'nope'" in fails(repo, "experiment", "show", "nope")
    assert "no experiment has logged" in fails(repo, "experiment", "best", "--metric", "acc")
    cli(repo, "experiment", "start", "x")
    assert "exists already" in fails(repo, "experiment", "start", "x")
    assert "not a number" in fails(repo, "experiment", "log", "acc", "high")
    assert "finite" in fails(repo, "experiment", "log", "acc", "nan")
    assert "KEY=VALUE" in fails(repo, "experiment", "start", "y", "--param", "lr")
    assert "invalid" in fails(repo, "experiment", "start", "bad..name")
    assert "two or more" in fails(repo, "experiment", "compare", "x")
    cli(repo, "experiment", "stop")
    assert "stopped" in fails(repo, "experiment", "log", "acc", "0.5", "-e", "x")
    # nothing half-made by the refused starts
    assert [e["name"] for e in json.loads(cli(repo, "experiment", "list", "--json").output)] == ["x"]
    assert "exp/y" not in cli(repo, "branch").output
