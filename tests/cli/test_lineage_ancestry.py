"""coralfs lineage (DOT, Mermaid, JSON, SVG) and ancestry of a file or one weight across a
fine-tune branch, a merge and a re-import, checked against the history the test builds and
against numpy."""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import save_file

from tests.cli.test_cli import cli
from tests.conftest import head_of, run_cli

W = "enc.q.weight"


def _save(d, tensors: dict) -> str:
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    return str(d)




def _history(tmp_path):
    """main: base -> step1 (row 0 changed); branch ft: ft1 (row 3 changed) -> ft2 (bias
    only); then ft is merged into main by averaging, and the merged weights are exported
    and re-imported unchanged (no new version of the weight)."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((64, 64)).astype(np.float32)
    b0 = np.zeros(64, np.float32)
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _save(tmp_path / "base", {W: w0, "enc.q.bias": b0}), "-m", "base")
    base = head_of(repo)
    w1 = w0.copy()
    w1[0] += 1.0
    cli(repo, "commit", _save(tmp_path / "s1", {W: w1, "enc.q.bias": b0}), "-m", "step1")
    s1 = head_of(repo)
    cli(repo, "branch", "ft", base)
    wf = w0.copy()
    wf[3] -= 2.0
    cli(repo, "commit", _save(tmp_path / "f1", {W: wf, "enc.q.bias": b0}), "-m", "ft1", "--branch", "ft")
    f1 = head_of(repo, "ft")
    cli(repo, "commit", _save(tmp_path / "f2", {W: wf, "enc.q.bias": b0 + 1}), "-m", "ft2", "--branch", "ft")
    cli(repo, "merge", "ft", "--strategy", "average", "-m", "merge ft")
    m = head_of(repo)
    out = tmp_path / "exported"
    cli(repo, "export", "HEAD", str(out))
    cli(repo, "commit", str(out), "-m", "re-import")
    return repo, {"base": base, "s1": s1, "f1": f1, "merge": m, "w0": w0, "w1": w1, "wf": wf}


def test_ancestry_of_one_weight(tmp_path):
    repo, h = _history(tmp_path)
    d = json.loads(cli(repo, "ancestry", f"HEAD:model.safetensors:{W}", "--json").output)
    got = [(e["commit"], e["kind"]) for e in d["events"]]
    # newest first; the bias-only commit ft2 and the re-import are not changes of the weight
    assert sorted(got, key=lambda x: x[0]) == sorted([(h["merge"], "merged"), (h["s1"], "changed"),
                                                      (h["f1"], "changed"), (h["base"], "added")])
    assert got[-1] == (h["base"], "added") and got[0] == (h["merge"], "merged")
    ev = {e["commit"]: e for e in d["events"]}
    assert ev[h["merge"]]["merge"] == "average"
    w0, w1, wf = h["w0"].astype(np.float64), h["w1"].astype(np.float64), h["wf"].astype(np.float64)
    rel = np.linalg.norm(w1 - w0) / np.linalg.norm(w0)
    assert abs(ev[h["s1"]]["rel_l2"] - rel) < 1e-6
    assert ev[h["s1"]]["max_abs"] == float(np.abs(w1 - w0).max()) and abs(ev[h["s1"]]["changed_frac"] - 64 / 4096) < 1e-9
    assert abs(ev[h["f1"]]["rel_l2"] - np.linalg.norm(wf - w0) / np.linalg.norm(w0)) < 1e-6
    for e in d["events"]:
        assert e["stored"] in ("keyframe", "delta of the same path"), e
    # the merged weight: halfway between the two sides
    wm = (w1 + wf) / 2
    assert abs(ev[h["merge"]]["rel_l2"] - np.linalg.norm(wm - w1) / np.linalg.norm(w1)) < 1e-6
    text = cli(repo, "ancestry", f"HEAD:model.safetensors:{W}").output
    assert text.splitlines()[0] == f"model.safetensors:{W} from HEAD: 4 changes"
    assert "merged, strategy average" in text and "added" in text.splitlines()[-1]


def test_ancestry_of_a_file_counts_tensor_changes(tmp_path):
    repo, h = _history(tmp_path)
    d = json.loads(cli(repo, "ancestry", "HEAD:model.safetensors", "--json").output)
    kinds = {e["commit"]: (e["kind"], e.get("tensors_changed")) for e in d["events"]}
    assert kinds[h["s1"]] == ("changed", 1) and kinds[h["base"]] == ("added", None)
    assert len(d["events"]) == 5          # base, step1, ft1, ft2 (bias), merge


def test_lineage_is_byte_stable_and_draws_merges(tmp_path):
    repo, h = _history(tmp_path)
    d1 = run_cli("lineage", "--format", "dot", repo=repo).stdout
    d2 = run_cli("lineage", "--format", "dot", repo=repo).stdout
    assert d1 == d2 and d1.startswith("digraph lineage {")
    assert f'"{h["merge"][:12]}" -> "{h["f1"][:12]}"' not in d1          # the merge's second parent is ft2
    assert d1.count("[style=dashed]") == 1                               # one second-parent edge
    assert "merge: average" in d1 and "(ft)" in d1
    g = json.loads(cli(repo, "lineage", "--format", "json").output)
    assert {n["id"] for n in g["nodes"]} >= {h["base"], h["s1"], h["f1"], h["merge"]}
    assert sum(e["kind"] == "merge" for e in g["edges"]) == 1
    mm = cli(repo, "lineage", "--format", "mermaid").output
    assert mm.startswith("graph BT\n") and "-.->" in mm
    svg = tmp_path / "l.svg"
    cli(repo, "lineage", "--format", "svg", "-o", str(svg))
    assert svg.read_bytes().lstrip().startswith((b"<?xml", b"<svg")) and b"</svg>" in svg.read_bytes()


def test_bad_input(tmp_path):
    repo, _ = _history(tmp_path)
    for args, needle in ((["ancestry", "HEAD:nope.safetensors"], "not a file"),
                         (["ancestry", "HEAD:model.safetensors:nope"], "no tensor"),
                         (["ancestry", "model.safetensors"], "REF:PATH"),
                         (["ancestry", "nosuchref:model.safetensors"], "nosuchref"),
                         (["lineage", "--format", "png"], "--format"),
                         (["lineage", "-o", str(tmp_path / "no" / "dir" / "x.dot")], "cannot write")):
        p = run_cli(*args, repo=repo, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode != 0 and len(lines) == 1 and needle in lines[0], (args, p.stderr)
