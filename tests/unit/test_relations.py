"""Relations inferred from tensors (coralfs.analysis.relations): fine-tune, quantized
(a bf16 copy), pruned, adapter, copy and merge, on real safetensors files committed on
their own branches."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from coralfs import Repository
from coralfs.analysis.relations import infer
from coralfs.ingest import DiskFile, collect_sources, ingest_files
from coralfs.objects.kinds import Tree


def _model(rng, n=6) -> dict:
    return {f"layer.{i}.weight": rng.standard_normal((32, 32)).astype(np.float32) for i in range(n)}


def _save(tmp_path, name: str, tensors: dict) -> str:
    d = tmp_path / name
    os.makedirs(d, exist_ok=True)
    save_file(tensors, str(d / "model.safetensors"))
    return str(d)


def _commit(repo: Repository, tmp_path, name: str, tensors: dict, branch: str) -> None:
    repo.commit_paths([_save(tmp_path, name, tensors)], name, branch=branch)


def _tree(repo: Repository, tmp_path, name: str, tensors: dict) -> Tree:
    """The tree a commit of these tensors would get (stored, not committed: the relation
    is inferred before a commit lands)."""
    files = [DiskFile(rel, p, os.stat(p).st_mode) for rel, p in collect_sources([_save(tmp_path, name, tensors)]).items()]
    entries, _ = ingest_files(repo, files, {}, None)
    return Tree(entries)


def _rel(repo: Repository, tmp_path, name: str, tensors: dict) -> list[tuple[str, str]]:
    return [(r["relation"], r["commit"]) for r in infer(repo, _tree(repo, tmp_path, name, tensors), None)]


def test_relations(tmp_path):
    rng = np.random.default_rng(0)
    repo = Repository.init(str(tmp_path / "repo"))
    try:
        base = _model(rng)
        _commit(repo, tmp_path, "base", base, "main")
        b = repo.resolve("main").hex()
        ft = {k: v + np.float32(0.01) * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
        assert _rel(repo, tmp_path, "ft", ft) == [("fine-tune", b)]
        _commit(repo, tmp_path, "ft", ft, "ft")
        f = repo.resolve("ft").hex()
        # from here two lineages match by names: the nearer by value wins
        assert _rel(repo, tmp_path, "q", {k: v.astype(ml_dtypes.bfloat16) for k, v in base.items()}) == [("quantized", b)]
        assert _rel(repo, tmp_path, "q2", {k: v.astype(ml_dtypes.bfloat16) for k, v in ft.items()}) == [("quantized", f)]
        assert _rel(repo, tmp_path, "pruned", {k: v for k, v in list(base.items())[:4]}) == [("pruned", b)]
        lora = dict(base, **{"layer.0.lora_A": np.ones((4, 32), np.float32)})
        assert _rel(repo, tmp_path, "lora", lora) == [("adapter", b)]
        assert _rel(repo, tmp_path, "copy", dict(base)) == [("copy", b)]
        merged = {k: (np.float32(0.3) * base[k] + np.float32(0.7) * ft[k]) for k in base}
        recs = infer(repo, _tree(repo, tmp_path, "merged", merged), None)
        assert sorted((r["relation"], r["commit"]) for r in recs) == sorted([("merge", b), ("merge", f)])
        w = {r["commit"]: r["weight"] for r in recs}
        assert abs(w[b] - 0.3) < 1e-3 and abs(w[f] - 0.7) < 1e-3
        # a model unlike anything stored: no record
        assert _rel(repo, tmp_path, "other", {"x.weight": np.ones((3, 3), np.float32)}) == []
        # a file the parent already has at its path is ordinary history, not a new lineage
        assert infer(repo, repo.tree_of("ft"), repo.tree_of("main")) == []
    finally:
        repo.close()
