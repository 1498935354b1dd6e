"""publish mlflow against a real MLflow tracking server (SQLite backend, local artifact
root): a registered model version whose artifacts are the commit's files, tagged with the
commit, that mlflow.pyfunc loads back into the same model."""

from __future__ import annotations

import json
import os
import uuid

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from safetensors.numpy import save_file

from coralfs import Repository
from coralfs.integrations import published as pub
from tests.cli.test_cli import cli
from tests.conftest import fails, sha
from tests.conftest import head_of as head

SENTENCES = ["coralfs versions weights", "a mount serves them"]


def _load(url: str, model_uri: str):
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    return mlflow.pyfunc.load_model(model_uri)


def test_a_published_version_loads_back_with_pyfunc_and_gives_the_same_embeddings(tmp_path, mlflow_server, minilm):
    from sentence_transformers import SentenceTransformer
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", minilm, "-m", "minilm")
    cli(repo, "release", "minor")
    name = f"minilm-{uuid.uuid4().hex[:8]}"
    out = json.loads(cli(repo, "publish", "mlflow", name, "--tracking-uri", mlflow_server, "--json").output)
    assert (out["version"], out["status"], out["commit"]) == ("1", "new", head(repo))
    c = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    mv = c.get_model_version(name, "1")
    assert mv.tags["coralfs.commit"] == head(repo) and mv.tags["coralfs.release"] == "v0.1.0"
    assert mv.tags["coralfs.repository"] == repo and mv.description == "minilm"
    assert c.get_run(mv.run_id).data.tags["coralfs.commit"] == head(repo)
    # the weights are artifacts, byte for byte
    got = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/1", tracking_uri=mlflow_server,
                                              dst_path=str(tmp_path / "dl"))
    assert sha(os.path.join(got, "artifacts", "weights", "model.safetensors")) == sha(os.path.join(minilm, "model.safetensors"))
    model = _load(mlflow_server, f"models:/{name}/1")
    np.testing.assert_array_equal(model.predict(SENTENCES), SentenceTransformer(minilm, device="cpu").encode(SENTENCES))

    # the same commit again registers nothing; the mapping names the version
    again = json.loads(cli(repo, "publish", "mlflow", name, "--tracking-uri", mlflow_server, "--json").output)
    assert (again["version"], again["status"]) == ("1", "unchanged")
    assert len(c.search_model_versions(f"name = '{name}'")) == 1
    r = Repository.open(repo)
    assert [(e.system, e.target, e.version, e.commit) for e in pub.load(r)] == [("mlflow", name, "1", head(repo))]
    r.close()


def test_plain_weights_load_back_as_their_tensors(tmp_path, mlflow_server):
    src = tmp_path / "w"
    src.mkdir()
    rng = np.random.default_rng(3)
    tensors = {"w": rng.standard_normal((32, 32)).astype(np.float32), "b": np.arange(32, dtype=np.float32)}
    save_file(tensors, str(src / "model.safetensors"))
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", str(src), "-m", "v1")
    name = f"plain-{uuid.uuid4().hex[:8]}"
    cli(repo, "publish", "mlflow", name, "--tracking-uri", mlflow_server)
    tensors["w"] = tensors["w"] * 2
    save_file(tensors, str(src / "model.safetensors"))
    cli(repo, "commit", str(src), "-m", "v2")
    out = cli(repo, "publish", "mlflow", name, "--tracking-uri", mlflow_server).output
    assert f"as {name} version 2" in out
    got = _load(mlflow_server, f"models:/{name}/2").predict(["w", "b"])
    np.testing.assert_array_equal(got["w"], tensors["w"])
    np.testing.assert_array_equal(_load(mlflow_server, f"models:/{name}/1").predict(["w"])["w"], tensors["w"] / 2)


def test_bad_input_is_one_line(tmp_path, mlflow_server):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    src = tmp_path / "w"
    src.mkdir()
    save_file({"w": np.zeros(4, np.float32)}, str(src / "model.safetensors"))
    cli(repo, "commit", str(src), "-m", "v1")
    assert "nope" in fails(repo, "publish", "mlflow", "m", "nope", "--tracking-uri", mlflow_server)
    assert "--tracking-uri" in fails(repo, "publish", "mlflow", "m")
    assert "is not an MLflow model name" in fails(repo, "publish", "mlflow", "a/b", "--tracking-uri", mlflow_server)
    assert "unreachable" in fails(repo, "publish", "mlflow", "m", "--tracking-uri", "http://127.0.0.1:9")
    assert not os.path.exists(os.path.join(repo, pub.FILE))


def test_a_transformers_folder_loads_back_as_the_model(tmp_path, mlflow_server, minilm):
    import shutil

    import torch
    from transformers import AutoModel, AutoTokenizer
    src = tmp_path / "bert"
    shutil.copytree(minilm, src, ignore=shutil.ignore_patterns("modules.json", "1_Pooling", "sentence_*", "config_sentence*"))
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", str(src), "-m", "bert")
    name = f"bert-{uuid.uuid4().hex[:8]}"
    cli(repo, "publish", "mlflow", name, "--tracking-uri", mlflow_server)
    got = _load(mlflow_server, f"models:/{name}/1").predict(SENTENCES)
    tok, model = AutoTokenizer.from_pretrained(str(src)), AutoModel.from_pretrained(str(src)).eval()
    with torch.no_grad():
        want = model(**tok(SENTENCES, return_tensors="pt", padding=True)).last_hidden_state.numpy()
    np.testing.assert_array_equal(got, want)
