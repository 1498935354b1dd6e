"""Without its library, each integration says which extra to install, in one line."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import PYTHON
from tests.integrations.helpers import trained

BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {module!r}:
            raise ImportError('blocked')
sys.meta_path.insert(0, Block())
from coralfs.cli.main import main
sys.exit(main({argv!r}))
"""


@pytest.mark.parametrize("module, extra, system", [("mlflow", "mlflow", "MLflow"), ("tensorboard", "tensorboard", "TensorBoard"),
                                                   ("wandb", "wandb", "Weights & Biases")])
def test_a_missing_library_names_its_extra(tmp_path, module, extra, system):
    repo = trained(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "events.out.tfevents.1.host").write_bytes(b"")
    (logs / "run-x.wandb").write_bytes(b"")
    args = {"mlflow": ["experiment", "export", "mlflow", "lr-a", "--tracking-uri", "http://127.0.0.1:1"],
            "tensorboard": ["experiment", "import", "tensorboard", str(logs)],
            "wandb": ["experiment", "import", "wandb", str(logs)]}[module]
    p = subprocess.run([PYTHON, "-c", BLOCKED.format(module=module, argv=["--repo", repo, *args])],
                       capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == f"coralfs: error: {system} support needs its library: pip install 'coralfs[{extra}]'"
    # and without the block the same command gets past the import (to its own error or result)
    p = subprocess.run([PYTHON, "-m", "coralfs", "--repo", repo, *args], capture_output=True, text=True)
    assert "needs its library" not in p.stderr


@pytest.mark.parametrize("module, extra, system, args", [
    ("huggingface_hub", "hf", "Hugging Face", ["publish", "huggingface", "me/model", "--dry-run"]),
    ("mlflow", "mlflow", "MLflow", ["publish", "mlflow", "model", "--tracking-uri", "http://127.0.0.1:9"]),
    ("boto3", "sagemaker", "SageMaker", ["publish", "sagemaker", "model", "--bucket", "my-bucket",
                                         "--role", "arn:aws:iam::123456789012:role/R"]),
])
def test_publish_without_its_library_names_its_extra(tmp_path, module, extra, system, args):
    repo = trained(tmp_path)
    p = subprocess.run([PYTHON, "-c", BLOCKED.format(module=module, argv=["--repo", repo, *args])],
                       capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == f"coralfs: error: {system} support needs its library: pip install 'coralfs[{extra}]'"
    # with it, the same command gets past the import (the dry run succeeds; the others fail on the
    # unreachable endpoint, in one line)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    p = subprocess.run([PYTHON, "-m", "coralfs", "--repo", repo, *args], capture_output=True, text=True, env=env)
    assert "needs its library" not in p.stderr and len(p.stderr.strip().splitlines()) <= 1, p.stderr
    assert p.returncode == 0 if "--dry-run" in args else p.stderr.startswith("coralfs: error: ")


def test_importing_coralfs_imports_none_of_the_integration_libraries():
    code = ("import sys, coralfs, coralfs.cli.main\n"
            "coralfs.cli.main.load_commands()\n"   # every command module (importing main loads none)
            "from coralfs.integrations import huggingface, mlflow, mlflow_registry, published, sagemaker, tensorboard, wandb\n"
            "print(sorted(m for m in ('huggingface_hub', 'mlflow', 'boto3', 'botocore', 'tensorboard', 'wandb',\n"
            "                          'transformers', 'sentence_transformers') if m in sys.modules))")
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
