"""What the integration tests share: a repository with an experiment on real checkpoints,
and the CLI's one-line failures."""

from __future__ import annotations

import json

from tests.cli.test_cli import _ckpt, cli
from tests.conftest import fails
from tests.conftest import head_of as head

__all__ = ["fails", "head", "names", "series", "show", "trained"]


def trained(tmp_path, name: str = "lr-a") -> str:
    """A repository with experiment ``name``: params, two checkpoints, a stepped loss and
    accuracy series, stopped."""
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _ckpt(tmp_path / "c0", 0, n=16), "-m", "base")
    cli(repo, "experiment", "start", name, "--param", "lr=2e-5", "-p", "opt=adam", "-p", "layers=4")
    for step in (1, 2, 3):
        cli(repo, "commit", _ckpt(tmp_path / f"c{step}", step, n=16), "-m", f"step {step}")
        cli(repo, "experiment", "log", "loss", str(1.0 / step), "--step", str(step))
        cli(repo, "experiment", "log", "accuracy", str(0.5 + step / 10), "--step", str(step))
    cli(repo, "experiment", "stop")
    return repo


def show(repo: str, name: str) -> dict:
    return json.loads(cli(repo, "experiment", "show", name, "--json").output)


def series(doc: dict) -> list[tuple]:
    """(metric, step, value, time) of every logged point, sorted."""
    return sorted((m["metric"], m["step"], m["value"], m["time"]) for m in doc["metrics"] if m["source"] == "log")


def names(repo: str) -> list[str]:
    return [e["name"] for e in json.loads(cli(repo, "experiment", "list", "--json").output)]
