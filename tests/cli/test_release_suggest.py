"""coralfs release --suggest / auto, changelog, and metrics in releases: the bump derived
from the weights (names, dtypes, shapes), on real safetensors checkpoints."""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import save_file

from tests.cli.test_cli import cli
from tests.conftest import fails


def _save(d, tensors: dict, cfg: str = "{}") -> str:
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(cfg)
    return str(d)


def _base(rng) -> dict:
    return {"enc.0.weight": rng.standard_normal((8, 8)).astype(np.float32),
            "enc.0.bias": rng.standard_normal(8).astype(np.float32),
            "enc.1.weight": rng.standard_normal((8, 8)).astype(np.float32)}




def _suggest(repo) -> dict:
    return json.loads(cli(repo, "release", "--suggest", "--json").output)


def test_suggest_follows_the_weights(tmp_path):
    rng = np.random.default_rng(0)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    t = _base(rng)
    cli(repo, "commit", _save(tmp_path / "c0", t), "-m", "base", "--metric", "acc=0.5")
    assert _suggest(repo)["part"] == "minor"          # a first release: everything is new
    cli(repo, "release", "auto")
    assert "nothing changed since v0.1.0" in cli(repo, "release", "--suggest").output

    t2 = dict(t, **{"enc.1.weight": t["enc.1.weight"] + 1})   # values only
    cli(repo, "commit", _save(tmp_path / "c1", t2), "-m", "tuned", "--metric", "acc=0.6")
    s = _suggest(repo)
    assert s["part"] == "patch" and s["since"] == "v0.1.0"
    assert s["reasons"] == ["model.safetensors: values of 1 of 3 tensors changed"]
    assert "as v0.1.1" in cli(repo, "release", "auto").output

    t3 = dict(t2, **{"head.weight": np.zeros((2, 8), np.float32)})   # a tensor added
    cli(repo, "commit", _save(tmp_path / "c2", t3), "-m", "head")
    s = _suggest(repo)
    assert s["part"] == "minor" and s["reasons"] == ["model.safetensors: tensor head.weight added (F32 [2, 8])"]

    t4 = dict(t3, **{"enc.0.weight": t3["enc.0.weight"].astype(np.float16)})   # a dtype changed
    del t4["enc.0.bias"]                                                     # and one removed
    cli(repo, "commit", _save(tmp_path / "c3", t4), "-m", "half")
    r = cli(repo, "release", "--suggest")
    assert r.output.splitlines()[0] == "suggested: major since v0.1.1"
    assert "  model.safetensors: tensor enc.0.bias removed" in r.output
    assert "  model.safetensors: tensor enc.0.weight F32 [8, 8] -> F16 [8, 8]" in r.output
    # --suggest tags nothing; auto does, and goes to the next major
    assert [x["tag"] for x in json.loads(cli(repo, "releases", "--json").output)] == ["v0.1.0", "v0.1.1"]
    assert "as v1.0.0" in cli(repo, "release", "auto", "-m", "half precision").output
    rs = json.loads(cli(repo, "releases", "--json").output)
    assert [x["metrics"] for x in rs] == [{"acc": 0.5}, {"acc": 0.6}, {}]
    assert "[acc=0.6]" in cli(repo, "releases").output.splitlines()[1]


def test_suggest_names_file_level_changes_and_refuses_bad_input(tmp_path):
    rng = np.random.default_rng(1)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    c0 = _save(tmp_path / "c0", _base(rng))
    cli(repo, "commit", c0, "-m", "base")
    cli(repo, "release", "minor")
    os.remove(os.path.join(c0, "model.safetensors"))
    with open(os.path.join(c0, "config.json"), "w") as f:
        f.write('{"x": 1}')
    cli(repo, "commit", c0, "-m", "weights gone")
    s = _suggest(repo)
    assert s["part"] == "major" and s["reasons"][0] == "model.safetensors removed (3 tensors)"
    assert "config.json changed" not in s["reasons"]   # the most severe level only
    assert "nosuchref" in fails(repo, "release", "--suggest", "nosuchref")
    assert "major|minor|patch|auto" in fails(repo, "release")
    assert "nothing changed" not in fails(repo, "release", "bogus")


def test_changelog_between_releases(tmp_path):
    rng = np.random.default_rng(2)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    t = _base(rng)
    cli(repo, "commit", _save(tmp_path / "c0", t), "-m", "base", "--metric", "loss=2.0")
    cli(repo, "release", "minor")
    t1 = dict(t, **{"enc.0.weight": t["enc.0.weight"] * 1.5})
    cli(repo, "commit", _save(tmp_path / "c1", t1), "-m", "step 1", "--metric", "loss=1.5")
    t2 = dict(t1, **{"enc.0.bias": t1["enc.0.bias"] + 0.25, "extra.weight": np.ones(4, np.float32)})
    cli(repo, "commit", _save(tmp_path / "c2", t2, '{"v": 2}'), "-m", "step 2", "--metric", "loss=1.0")
    cli(repo, "release", "auto")
    d = json.loads(cli(repo, "changelog", "--format", "json").output)
    assert (d["base"], d["head"]) == ("v0.1.0", "v0.2.0")
    assert [c["message"] for c in d["commits"]] == ["step 2", "step 1"]
    assert (d["metrics_before"], d["metrics_after"]) == ({"loss": 2.0}, {"loss": 1.0})
    layers = {x["layer"]: x for x in d["layers"]}
    assert set(layers) == {"enc.0", "extra"}, layers
    assert (layers["enc.0"]["changed"], layers["enc.0"]["added"]) == (2, 0)
    assert (layers["extra"]["added"], layers["extra"]["changed"]) == (1, 0)
    # the weight moved by 0.5x of itself: relative L2 0.5, above the bias's share
    w, b = t["enc.0.weight"], t1["enc.0.bias"]
    rel_b = float(np.linalg.norm(np.float32(0.25) * np.ones_like(b)) / np.linalg.norm(b))
    assert abs(layers["enc.0"]["max_rel_l2"] - max(0.5, rel_b)) < 1e-5, (layers, np.linalg.norm(w))
    assert d["files"] == [{"path": "config.json", "status": "modified"}]
    assert d["suggestion"]["part"] == "minor"
    md = cli(repo, "changelog", "v0.1.0..v0.2.0").output
    assert md.startswith("# Changelog v0.1.0..v0.2.0\n")
    assert "| loss | 2 | 1 |" in md and "| model.safetensors | extra | 0 | 1 | 0 | - |" in md
    assert "## Commits (2)" in md and "Suggested bump: **minor**" in md
    # bad ranges: one line, non-zero
    assert "not an ancestor" in fails(repo, "changelog", "v0.2.0..v0.1.0")
    assert "FROM..TO" in fails(repo, "changelog", "..v0.2.0")
    assert "md or json" in fails(repo, "changelog", "--format", "xml")
    assert "nope" in fails(repo, "changelog", "nope..HEAD")


def test_release_tags_are_never_moved_or_deleted(tmp_path):
    rng = np.random.default_rng(5)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _save(tmp_path / "c0", _base(rng)), "-m", "base")
    cli(repo, "release", "minor")
    cli(repo, "commit", _save(tmp_path / "c1", _base(rng)), "-m", "next")
    assert "is a release" in fails(repo, "tag", "-f", "v0.1.0", "HEAD")
    assert "is a release" in fails(repo, "tag", "-d", "v0.1.0")
    assert [x["tag"] for x in json.loads(cli(repo, "releases", "--json").output)] == ["v0.1.0"]
    # ordinary tags, and a lightweight-looking name that no release made, stay under the user's control
    cli(repo, "tag", "nightly", "HEAD")
    cli(repo, "tag", "-f", "nightly", "HEAD~1")
    cli(repo, "tag", "-d", "nightly")
