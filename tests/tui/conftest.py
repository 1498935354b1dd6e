"""A small repository the browser tests drive, the same bytes every run: fixed seeds, fixed
commit times and author, so commit ids and snapshots do not change."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs import Repository
from coralfs.ingest import DiskFile, ingest_files
from coralfs.objects.kinds import Tree

T0 = 1_760_000_000   # 2025-10-09 08:53:20 UTC
AUTHOR = "Ada <ada@example.org>"


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    head = rng.standard_normal(8).astype(np.float32)
    head[2], head[5] = np.nan, np.inf   # the statistics count them apart
    return {
        "encoder.layer.0.attn.q.weight": rng.standard_normal((256, 128)).astype(np.float32),
        "encoder.layer.0.attn.k.weight": rng.standard_normal((16, 16)).astype(np.float32),
        "encoder.layer.1.mlp.weight": rng.standard_normal((32, 16)).astype(np.float32),
        "encoder.layer.1.mlp.bias": rng.standard_normal(32).astype(np.float32),
        "encoder.layer.1.norm.weight": np.ones(32, np.float32),
        "head.bias": head,
    }


def commit_dir(repo: Repository, d: str, message: str, t: int, *, branch: str | None = None,
               metadata: dict | None = None) -> bytes:
    files = [DiskFile(os.path.relpath(os.path.join(r, n), d), os.path.join(r, n), 0o644)
             for r, _, names in os.walk(d) for n in sorted(names)]
    target = branch or repo.head_branch()
    head = repo.branch_head(target)
    base = repo.tree_of(head).entries if head else {}
    entries, _ = ingest_files(repo, files, base)
    return repo.commit(Tree(entries), message, branch=target, author=AUTHOR, time=t, metadata=metadata)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Dates on screen in UTC, whatever the machine's zone (snapshots stay equal)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def history(tmp_path):
    """The small tensors after the large one are packed (four or more in a run).
    main: "initial model" (tag v1) -> "fine-tune layer 1" (one row of
    encoder.layer.1.mlp.weight changed, metrics); exp: "scaled attention" from v1."""
    path = str(tmp_path / "repo")
    repo = Repository.init(path)
    src = tmp_path / "src"
    src.mkdir()
    m = model(0)
    save_file(m, str(src / "model.safetensors"))
    (src / "README.txt").write_text("a small model\n")
    c1 = commit_dir(repo, str(src), "initial model", T0, metadata={"metrics": {"loss": 1.25}})
    repo.create_tag("v1", c1.hex())
    repo.create_branch("exp", c1.hex())
    m2 = dict(m)
    w = m2["encoder.layer.1.mlp.weight"].copy()
    w[3] += 0.5
    m2["encoder.layer.1.mlp.weight"] = w
    save_file(m2, str(src / "model.safetensors"))
    c2 = commit_dir(repo, str(src), "fine-tune layer 1", T0 + 3600,
                    metadata={"metrics": {"loss": 0.75, "accuracy": 0.875}, "dataset": "wiki-small"})
    m3 = dict(m)
    m3["encoder.layer.0.attn.q.weight"] = m["encoder.layer.0.attn.q.weight"] * 1.5
    save_file(m3, str(src / "model.safetensors"))
    c3 = commit_dir(repo, str(src), "scaled attention", T0 + 7200, branch="exp")
    yield {"repo": repo, "path": path, "ids": {"c1": c1, "c2": c2, "c3": c3}, "model": m, "model2": m2}
    repo.close()
