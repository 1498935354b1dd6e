"""Without its library, each integration says which extra to install, in one line."""

from __future__ import annotations

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
