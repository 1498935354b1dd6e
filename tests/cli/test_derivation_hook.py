"""derived_from is inferred by the commands that commit paths (`coralfs commit`, `import`,
`watch`: tests/cli/test_provenance.py) through a Repository-level commit option; the
FormatOps layer (coralfs.api.Operations) only translates a call to coralfs.ingest."""

from __future__ import annotations

import numpy as np

from coralfs import Repository
from coralfs.api import infer_derivations
from tests.cli.test_provenance import _model, _save


def _two_commits(tmp_path, infer: bool) -> dict:
    rng = np.random.default_rng(0)
    repo = Repository.init(str(tmp_path / "repo"))
    if infer:
        assert infer_derivations(repo) is repo
    base = _model(rng)
    repo.commit_paths([_save(tmp_path / "c0", "model.safetensors", base)], "base")
    d1 = tmp_path / "c1"
    _save(d1, "model.safetensors", base)
    _save(d1, "ft/model.safetensors", {k: v + np.float32(0.01) for k, v in base.items()})
    repo.commit_paths([str(d1)], "variants")
    return repo.read_commit(repo.head()).metadata


def test_a_repository_asked_to_infer_records_derived_from(tmp_path):
    meta = _two_commits(tmp_path, infer=True)
    assert [(r["file"], r["relation"]) for r in meta["derived_from"]] == [("ft/model.safetensors", "fine-tune")]


def test_without_the_option_a_commit_of_paths_adds_nothing(tmp_path):
    assert "derived_from" not in _two_commits(tmp_path, infer=False)


def test_an_explicit_annotate_wins_over_the_repository_option(tmp_path):
    repo = infer_derivations(Repository.init(str(tmp_path / "repo")))
    rng = np.random.default_rng(1)
    repo.commit_paths([_save(tmp_path / "c0", "model.safetensors", _model(rng))], "base",
                      annotate=lambda tree, parent: {"note": "mine"})
    assert repo.read_commit(repo.head()).metadata.get("note") == "mine"
