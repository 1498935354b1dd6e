"""Publishing a commit to the MLflow model registry: a registered model version whose
artifacts are the commit's files, loadable with ``mlflow.pyfunc.load_model``.

The version is a pyfunc model logged "from code" (MLflow's models-from-code: the model is
the Python file :data:`MODEL_CODE`, not a pickle), with the commit's files as its
``weights`` artifact directory. Loading it builds the model from those files:

- a sentence-transformers folder (``modules.json``): ``predict(list of str)`` gives the
  embeddings;
- a transformers folder (``config.json`` and a tokenizer): ``predict(list of str)`` gives
  the last hidden state of ``AutoModel``;
- any other safetensors weights: ``predict(list of tensor names)`` gives those tensors.

The run it is logged in (experiment ``coralfs-publish``) and the model version carry the
tags ``coralfs.commit``, ``coralfs.release`` (when the commit is released) and
``coralfs.repository``; the version's description is the commit's message.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

from ..export import export_rev
from ..objects.errors import CoralError
from ..objects.ids import to_hex
from ..objects.repository import Repository
from . import published as pub
from .mlflow import TAG_COMMIT, TAG_REPO, _client

SYSTEM = "mlflow"
EXPERIMENT = "coralfs-publish"
TAG_RELEASE = "coralfs.release"

MODEL_CODE = '''"""An MLflow pyfunc model of weights published by coralfs (models from code)."""
import os

import mlflow
from mlflow.pyfunc import PythonModel


def _texts(model_input):
    if hasattr(model_input, "columns"):          # a DataFrame: its first column
        model_input = model_input[model_input.columns[0]]
    return [str(x) for x in list(model_input)]


class CoralfsWeights(PythonModel):
    def load_context(self, context):
        d = context.artifacts["weights"]
        if os.path.exists(os.path.join(d, "modules.json")):
            from sentence_transformers import SentenceTransformer
            self.kind, self.model = "sentence-transformers", SentenceTransformer(d, device="cpu")
        elif os.path.exists(os.path.join(d, "config.json")) and os.path.exists(os.path.join(d, "tokenizer_config.json")):
            from transformers import AutoModel, AutoTokenizer
            self.kind = "transformers"
            self.tokenizer, self.model = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d).eval()
        else:
            from safetensors.numpy import load_file
            self.kind, self.tensors = "tensors", {}
            for root, _, files in os.walk(d):
                for f in sorted(files):
                    if f.endswith(".safetensors"):
                        self.tensors.update(load_file(os.path.join(root, f)))

    def predict(self, context, model_input, params=None):
        if self.kind == "sentence-transformers":
            return self.model.encode(_texts(model_input))
        if self.kind == "transformers":
            import torch
            with torch.no_grad():
                batch = self.tokenizer(_texts(model_input), return_tensors="pt", padding=True)
                return self.model(**batch).last_hidden_state.numpy()
        return {name: self.tensors[name] for name in _texts(model_input)}


mlflow.models.set_model(CoralfsWeights())
'''


@dataclass
class Registered:
    name: str
    version: str
    commit: str
    run_id: str | None
    source: str | None
    status: str        # new, unchanged (this commit is that version already)


def _requirements(root: str) -> list[str]:
    """What loading needs, by what the files are (pinned to the versions here)."""
    from importlib.metadata import PackageNotFoundError, version
    names = ["mlflow", "safetensors", "numpy"]
    if os.path.exists(os.path.join(root, "config.json")):
        names += ["torch", "transformers"]
    if os.path.exists(os.path.join(root, "modules.json")):
        names += ["sentence-transformers"]
    out = []
    for n in names:
        try:
            out.append(f"{n}=={version(n)}")
        except PackageNotFoundError:
            out.append(n)
    return out


def publish(repo: Repository, name: str, ref: str, uri: str) -> Registered:
    """Register ``ref`` as a new version of the registered model ``name`` at ``uri``."""
    if not name or name != name.strip() or "/" in name or ":" in name:
        raise CoralError(f"{name!r} is not an MLflow model name: no '/', ':' or surrounding spaces")
    oid = repo.resolve(ref)
    hx = to_hex(oid)
    done = pub.already(repo, SYSTEM, name, oid)
    if done is not None:
        return Registered(name, done.version, hx, None, done.url, "unchanged")
    release = pub.release_of(repo, oid)
    message = repo.read_commit(oid).message
    tags = {TAG_COMMIT: hx, TAG_REPO: repo.path, **({TAG_RELEASE: release} if release else {})}
    tmp = tempfile.mkdtemp(prefix="coralfs-mlflow-")
    try:
        weights = os.path.join(tmp, "weights")
        export_rev(repo, hx, weights)
        code = os.path.join(tmp, "coralfs_model.py")
        with open(code, "w", encoding="utf-8") as f:
            f.write(MODEL_CODE)
        with _client(uri, must_exist=False) as client:
            import mlflow
            e = client.get_experiment_by_name(EXPERIMENT)
            exp_id = e.experiment_id if e is not None else client.create_experiment(EXPERIMENT)
            from mlflow.tracking._tracking_service import utils as tracking
            saved = tracking._tracking_uri    # as it was set (None: unset), not the default it resolves to
            mlflow.set_tracking_uri(uri)
            # MLflow logs its progress (run links, "waiting for model version") on our output
            quiet = logging.getLogger("mlflow")
            level = quiet.level
            quiet.setLevel(logging.WARNING)
            run = None
            try:
                with mlflow.start_run(experiment_id=exp_id, run_name=f"publish {hx[:12]}", tags=tags) as run, \
                        contextlib.redirect_stderr(io.StringIO()):
                    info = mlflow.pyfunc.log_model(name="model", python_model=code, artifacts={"weights": weights},
                                                   pip_requirements=_requirements(weights))
                _ensure_registered(client, name)
                mv = client.create_model_version(name, source=info.model_uri, run_id=run.info.run_id, tags=tags,
                                                 description=message, model_id=getattr(info, "model_id", None))
            except BaseException:
                if run is not None:   # no version came of it: the run is not left behind as if it had
                    with contextlib.suppress(Exception):
                        client.delete_run(run.info.run_id)
                raise
            finally:
                quiet.setLevel(level)
                mlflow.set_tracking_uri(saved)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pub.record(repo, pub.Published(SYSTEM, name, hx, str(mv.version), release=release,
                                   url=f"models:/{name}/{mv.version}", files={}))
    return Registered(name, str(mv.version), hx, run.info.run_id, f"models:/{name}/{mv.version}", "new")


def _ensure_registered(client, name: str) -> None:
    from mlflow.exceptions import MlflowException
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
