"""Provenance and automatic parent-model tracking through the CLI: commit --dataset/--config/
--source record hashes and names; a fine-tune committed at a new path records derived_from;
`coralfs provenance` follows it; lineage draws it."""

from __future__ import annotations

import hashlib
import json
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from tests.cli.test_cli import cli
from tests.conftest import run_cli


def _model(rng) -> dict:
    return {f"layer.{i}.weight": rng.standard_normal((32, 32)).astype(np.float32) for i in range(4)}


def _save(d, rel: str, tensors: dict) -> str:
    os.makedirs(os.path.dirname(os.path.join(d, rel)) or d, exist_ok=True)
    save_file(tensors, os.path.join(d, rel))
    return str(d)


def _meta(repo: str, rev: str = "HEAD") -> dict:
    return json.loads(cli(repo, "show", rev, "--json").output)["metadata"]


def test_provenance_and_derived_from(tmp_path):
    rng = np.random.default_rng(0)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    base = _model(rng)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"x": 1}\n')
    cfg = tmp_path / "train.yaml"
    cfg.write_text("lr: 3e-5\n")
    run_cli("commit", _save(tmp_path / "c0", "model.safetensors", base), "-m", "base",
            "--source", "hf:sentence-transformers/all-MiniLM-L6-v2", "--dataset", str(data), "--config", str(cfg), repo=repo)
    m0 = _meta(repo)
    p = m0["provenance"]
    assert p["config"]["sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert p["datasets"][0]["files"] == 1 and len(p["datasets"][0]["sha256"]) == 64
    assert p["source"] == "hf:sentence-transformers/all-MiniLM-L6-v2"
    assert p["versions"]["python"] and "numpy" in p["versions"] and p["command"].startswith("coralfs commit ")
    assert m0["derived_from"] == [{"source": "hf:sentence-transformers/all-MiniLM-L6-v2", "relation": "source"}]
    b = json.loads(cli(repo, "show", "HEAD", "--json").output)["id"]

    # the same directory now also holds a fine-tune and a bf16 copy at new paths
    ft = {k: v + np.float32(0.01) for k, v in base.items()}
    d1 = tmp_path / "c1"
    _save(d1, "model.safetensors", base)
    _save(d1, "ft/model.safetensors", ft)
    _save(d1, "bf16/model.safetensors", {k: v.astype(ml_dtypes.bfloat16) for k, v in base.items()})
    cli(repo, "commit", str(d1), "-m", "variants")
    recs = {r["file"]: r for r in _meta(repo)["derived_from"]}
    assert (recs["ft/model.safetensors"]["relation"], recs["ft/model.safetensors"]["commit"]) == ("fine-tune", b)
    assert (recs["bf16/model.safetensors"]["relation"], recs["bf16/model.safetensors"]["commit"]) == ("quantized", b)
    assert "model.safetensors" not in recs          # ordinary history: same path as in the parent

    out = cli(repo, "provenance").output
    lines = out.splitlines()
    assert lines[0].endswith("variants")
    assert any(ln.strip().startswith(f"derived from {b[:12]} model.safetensors: fine-tune (for ft/model.safetensors)")
               for ln in lines)
    base_line = next(i for i, ln in enumerate(lines) if ln.startswith(f"  commit {b[:12]}"))
    assert "source model: hf:sentence-transformers/all-MiniLM-L6-v2" in lines[base_line + 1]
    steps = json.loads(cli(repo, "provenance", "--json").output)
    assert [s["depth"] for s in steps] == [0, 1] and steps[1]["commit"] == b

    dot = run_cli("lineage", repo=repo).stdout
    assert '[style=dotted, label="fine-tune"]' in dot and '[style=dotted, label="quantized"]' in dot
    assert '"hf:sentence-transformers/all-MiniLM-L6-v2" [label=' in dot and "shape=ellipse" in dot


def test_bad_provenance_input(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    src = _save(tmp_path / "c0", "model.safetensors", {"w": np.zeros(4, np.float32)})
    for args, needle in ((["--dataset", str(tmp_path / "nope")], "no such file"),
                         (["--config", str(tmp_path)], "not a file")):
        p = run_cli("commit", src, "-m", "x", *args, repo=repo, check=False)
        assert p.returncode != 0 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert run_cli("log", repo=repo, check=False).returncode != 0      # nothing was committed
    p = run_cli("provenance", "nosuch", repo=repo, check=False)
    assert p.returncode != 0 and "nosuch" in p.stderr
