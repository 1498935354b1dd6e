"""experiment import wandb: an offline run directory written by the real wandb client
(WANDB_MODE=offline: no network)."""

from __future__ import annotations

import glob
import os
import subprocess

from tests.cli.test_cli import cli
from tests.conftest import PYTHON
from tests.integrations.helpers import fails, names, series, show

TRAIN = """
import wandb
run = wandb.init(project="coral", name="wb-run", config={"lr": 0.01, "optimizer": "adam", "layers": 4})
for i in range(6):
    wandb.log({"loss": 1.0 / (i + 1), "acc": 0.5 + i / 20}, step=i * 100)
run.summary["best_acc"] = 0.77
run.finish()
"""


def _offline_run(tmp_path) -> str:
    d = tmp_path / "wb"
    d.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(d),
           "WANDB_CONFIG_DIR": str(d / "config"), "WANDB_CACHE_DIR": str(d / "cache"), "WANDB_DISABLE_GIT": "true"}
    subprocess.run([PYTHON, "-c", TRAIN], env=env, check=True, capture_output=True, timeout=300, cwd=d)
    [run_dir] = glob.glob(str(d / "wandb" / "offline-run-*"))
    return run_dir


def test_import_an_offline_run(tmp_path):
    run_dir = _offline_run(tmp_path)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    r = cli(repo, "experiment", "import", "wandb", run_dir)
    assert "wb-run" in r.output and "imported 13 points" in r.output
    e = show(repo, "wb-run")
    assert e["params"] == {"lr": 0.01, "optimizer": "adam", "layers": 4}
    got = series(e)
    assert [(s, v) for m, s, v, _ in got if m == "loss"] == [(i * 100, 1.0 / (i + 1)) for i in range(6)]
    assert [(s, v) for m, s, v, _ in got if m == "acc"] == [(i * 100, 0.5 + i / 20) for i in range(6)]
    assert [(s, v) for m, s, v, _ in got if m == "best_acc"] == [(None, 0.77)]   # summary only
    assert e["status"] == "stopped"
    assert "already imported" in cli(repo, "experiment", "import", "wandb", run_dir).output
    assert names(repo) == ["wb-run"] and series(show(repo, "wb-run")) == got


def test_not_a_run_and_a_damaged_log_are_refused(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    (tmp_path / "plain").mkdir()
    assert "not a wandb run directory" in fails(repo, "experiment", "import", "wandb", str(tmp_path / "plain"))
    assert "no such directory" in fails(repo, "experiment", "import", "wandb", str(tmp_path / "nope"))
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "run-x.wandb").write_bytes(b"PK\x03\x04 not a wandb log")
    assert "no :W&B header" in fails(repo, "experiment", "import", "wandb", str(fake))
    run_dir = _offline_run(tmp_path)
    [log] = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    data = bytearray(open(log, "rb").read())
    data[len(data) // 2] ^= 0x55
    open(log, "wb").write(bytes(data))
    assert "fails its checksum" in fails(repo, "experiment", "import", "wandb", run_dir)
    assert names(repo) == []
