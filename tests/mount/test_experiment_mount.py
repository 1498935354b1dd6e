"""A trainer saving into a writable mount of an experiment's branch logs its metrics
through the same mount (the control file), from the CLI and from Python."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.cli.test_cli import _ckpt
from tests.conftest import PYTHON, run_cli
from tests.mount.conftest import mounted

pytestmark = pytest.mark.mount


def test_metrics_logged_through_a_writable_mount(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", _ckpt(tmp_path / "c0", 0, n=8), "-m", "base", repo=repo)
    run_cli("experiment", "start", "sweep", "--param", "lr=3e-4", repo=repo)
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, None, "--write", "--branch", "exp/sweep"):
        _ckpt(tmp_path / "mnt", 1, n=8)            # the trainer saves into the mount
        run_cli("commit", "--mount", mp, "-m", "step 1")
        p = run_cli("experiment", "log", "loss", "0.25", "--step", "1", "--mount", mp, repo=repo)
        assert "loss=0.25 step 1 at " in p.stdout and "(sweep)" in p.stdout
        code = f"import coralfs; print(coralfs.log_metric('acc', 0.9, step=1, mount={mp!r})['commit'])"
        head = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        bad = run_cli("experiment", "log", "loss", "nan", "--mount", mp, repo=repo, check=False)
        assert bad.returncode != 0 and "finite" in bad.stderr
    show = json.loads(run_cli("experiment", "show", "sweep", "--json", repo=repo).stdout)
    logged = [(m["metric"], m["value"], m["step"], m["commit"]) for m in show["metrics"] if m["source"] == "log"]
    assert logged == [("loss", 0.25, 1, head), ("acc", 0.9, 1, head)]
    assert head == json.loads(run_cli("show", "exp/sweep", "--json", repo=repo).stdout)["id"]


def test_a_mount_of_another_branch_refuses_metrics(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", _ckpt(tmp_path / "c0", 0, n=8), "-m", "base", repo=repo)
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, None, "--write", "--branch", "main"):
        p = run_cli("experiment", "log", "loss", "1", "--mount", mp, repo=repo, check=False)
        assert p.returncode != 0 and "not an experiment's" in p.stderr and len(p.stderr.strip().splitlines()) == 1
