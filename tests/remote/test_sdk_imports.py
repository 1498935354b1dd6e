"""The cloud SDKs are imported by the three backends (and their shared module) only, so
``import coralfs`` and every other module work without the cloud extra."""

from __future__ import annotations

import ast
import pathlib

import coralfs

SDKS = {"obstore", "google", "boto3", "botocore", "azure", "requests"}
# Not cloud SDKs though under google.: protocol buffers (the W&B run log is made of them).
NOT_SDKS = ("google.protobuf",)
BACKENDS = {"coralfs/remote/s3.py", "coralfs/remote/gcs.py", "coralfs/remote/azure.py", "coralfs/remote/_common.py"}
# `coralfs publish sagemaker` talks to AWS with boto3, its own extra ([sagemaker]), imported
# inside the function that publishes (tests/integrations/test_extras.py checks import coralfs).
BACKENDS |= {"coralfs/integrations/sagemaker.py"}


def test_only_the_backends_import_a_cloud_sdk():
    root = pathlib.Path(coralfs.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root.parent))
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                if name.split(".")[0] in SDKS and not name.startswith(NOT_SDKS) and rel not in BACKENDS:
                    bad.append(f"{rel}:{node.lineno} imports {name}")
    assert bad == []
    assert len(BACKENDS) == sum((root.parent / b).is_file() for b in BACKENDS)
