"""coralfs import wandb: an offline run written by the real wandb client (WANDB_MODE=offline,
no network) and a downloaded artifact folder become commits with the run's config and
metrics in their metadata."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import numpy as np
from safetensors.numpy import save_file

from coralfs import Repository
from tests.conftest import PYTHON, fails, run_cli, sha

TRAIN = """
import wandb, numpy as np
from safetensors.numpy import save_file
run = wandb.init(project="coral", name="wb-model", config={"lr": 0.01, "layers": 4})
for i in range(4):
    wandb.log({"loss": 1.0 / (i + 1)}, step=i)
save_file({"w": np.arange(64, dtype=np.float32).reshape(8, 8)}, "model.safetensors")
wandb.save("model.safetensors", policy="now")
art = wandb.Artifact("tuned", type="model")
art.add_file("model.safetensors", name="weights/model.safetensors")
run.log_artifact(art)
run.summary["best"] = 0.9
run.finish()
"""


def _offline_run(tmp_path, script: str = TRAIN) -> str:
    d = tmp_path / "wb"
    d.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(d),
           "WANDB_CONFIG_DIR": str(d / "config"), "WANDB_CACHE_DIR": str(d / "cache"),
           "WANDB_DATA_DIR": str(d / "data"), "WANDB_DISABLE_GIT": "true"}
    subprocess.run([PYTHON, "-c", script], env=env, check=True, capture_output=True, timeout=300, cwd=d)
    [run_dir] = glob.glob(str(d / "wandb" / "offline-run-*"))
    return run_dir


def test_import_an_offline_run_with_its_model_files(tmp_path):
    run_dir = _offline_run(tmp_path)
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    out = run_cli("import", "wandb", run_dir, repo=repo).stdout
    assert "import wandb wb-model" in out
    with Repository.open(repo) as r:
        c = r.read_commit(r.resolve("HEAD"))
        tree = r.tree_of("HEAD").entries
    assert sorted(tree) == ["artifacts/tuned/weights/model.safetensors", "model.safetensors"]
    assert c.metadata["import"] == "wandb"
    assert c.metadata["wandb"]["config"] == {"lr": 0.01, "layers": 4}
    assert c.metadata["wandb"]["project"] == "coral" and c.metadata["wandb"]["name"] == "wb-model"
    assert c.metadata["metrics"] == {"loss": 0.25, "best": 0.9}
    assert "Metrics: " in run_cli("log", repo=repo).stdout
    run_cli("export", "HEAD", str(tmp_path / "out"), repo=repo)
    assert sha(tmp_path / "out" / "model.safetensors") == sha(tmp_path / "wb" / "model.safetensors")


def test_import_a_downloaded_artifact_folder(tmp_path):
    art = tmp_path / "tuned:v3"
    art.mkdir()
    save_file({"w": np.ones((4, 4), np.float32)}, str(art / "model.safetensors"))
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("import", "wandb", str(art), repo=repo)
    with Repository.open(repo) as r:
        c = r.read_commit(r.resolve("HEAD"))
        assert list(r.tree_of("HEAD").entries) == ["model.safetensors"]
    assert c.metadata["wandb"] == {"artifact": "tuned", "version": "v3"}


def test_a_run_without_model_files_and_a_moved_file_are_refused(tmp_path):
    script = TRAIN.replace('wandb.save("model.safetensors", policy="now")\n', "").replace(
        "run.log_artifact(art)\n", "")
    bare = _offline_run(tmp_path, script)
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    assert "saved no model files" in fails(repo, "import", "wandb", bare)
    shutil.rmtree(tmp_path / "wb")
    run_dir = _offline_run(tmp_path)
    os.unlink(tmp_path / "wb" / "model.safetensors")  # files/ holds a link to it
    assert "is missing" in fails(repo, "import", "wandb", run_dir)
    with Repository.open(repo) as r:
        assert r.head() is None
