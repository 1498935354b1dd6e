"""coralfs optimize --analyze / --apply on the real MiniLM weights: the estimate made on a
sample matches what --apply then saves (within 10%), every file stays byte-identical,
and an interrupted run resumes from its journal."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from safetensors.numpy import load_file, save_file

from coralfs import Repository
from coralfs.workflow import optimize as opt
from tests.cli.test_cli import cli
from tests.conftest import run_cli


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _two_versions(tmp_path, minilm) -> tuple[str, list[str]]:
    """A repository with MiniLM and a tuned copy (the second stored as deltas)."""
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", minilm, "-m", "base")
    tuned = tmp_path / "tuned"
    shutil.copytree(minilm, tuned)
    sd = load_file(os.path.join(minilm, "model.safetensors"))
    # One element in 16 of one weight moved (a sparse change: stored as a delta; scaling the
    # whole tensor fills mantissa bits the original leaves zero, and its keyframe is smaller).
    sd["pooler.dense.weight" if "pooler.dense.weight" in sd else next(iter(sd))].reshape(-1)[::16] *= 1.001
    save_file(sd, str(tuned / "model.safetensors"))
    cli(repo, "commit", str(tuned), "-m", "tuned")
    return repo, [minilm, str(tuned)]


def _exports_match(tmp_path, repo: str, sources: list[str]) -> None:
    for i, src in enumerate(sources):
        out = tmp_path / f"out{i}"
        cli(repo, "export", f"HEAD~{len(sources) - 1 - i}", str(out))
        for name in os.listdir(src):
            p = os.path.join(src, name)
            if os.path.isfile(p):
                assert _sha(out / name) == _sha(p), name


def test_estimate_matches_the_applied_saving(tmp_path, minilm):
    repo, sources = _two_versions(tmp_path, minilm)
    a = json.loads(cli(repo, "optimize", "--analyze", "--sample", "256k", "--json").output)
    lit = next(k for k in a["kinds"] if k["kind"] == "literal")
    assert lit["sample_chunks"] < lit["chunks"]            # a real sample, not everything
    est = next(c for c in lit["candidates"] if c["level"] == 9)
    assert est["saving"] > 0.02
    r = cli(repo, "optimize", "--apply", "--literal-level", "9")
    assert "set storage.literal_level = 9" in r.output
    r2 = Repository.open(repo)
    try:
        assert r2.config.get("storage.literal_level") == 9
        kinds = opt._chunk_kinds(r2, opt.mark(r2)[0].seen)
        after = sum(r2.store.size(o) for o in kinds["literal"])
    finally:
        r2.close()
    real = 1 - after / lit["stored"]
    assert abs(real - est["saving"]) <= 0.1 * real, (real, est["saving"])
    _exports_match(tmp_path, repo, sources)
    cli(repo, "fsck")


def test_tensor_chunks_reencode_losslessly_and_resume(tmp_path, minilm):
    repo, sources = _two_versions(tmp_path, minilm)
    r = Repository.open(repo)
    try:
        kinds = opt._chunk_kinds(r, opt.mark(r)[0].seen)
        assert any(r.odb.chunk_header(o).base is not None for o in kinds["tensor"])   # deltas are there
        # an interrupted run: its journal names the level and the chunks already done
        done = sorted(kinds["tensor"])[:5]
        with open(os.path.join(repo, opt.JOURNAL), "w") as f:
            f.write("tensor=3\n" + "".join(o.hex() + "\n" for o in done))
    finally:
        r.close()
    out = cli(repo, "optimize", "--apply", "--tensor-level", "3").output
    assert "resumed after 5" in out
    assert not os.path.exists(os.path.join(repo, opt.JOURNAL))
    _exports_match(tmp_path, repo, sources)
    cli(repo, "fsck")


def test_analyze_recommends_and_prints_config_lines(tmp_path, minilm):
    repo, _ = _two_versions(tmp_path, minilm)
    out = cli(repo, "optimize", "--analyze", "--sample", "1m").output
    assert "tensor chunks:" in out and "literal chunks:" in out and "saving" in out
    assert "gc: " in out and "%" in out
    a = json.loads(cli(repo, "optimize", "--analyze", "--sample", "1m", "--json").output)
    for k in a["kinds"]:
        if k["best"]:
            assert f"coralfs config set {k['key']} {k['best']['level']}" in a["config"]
            assert k["best"]["saving"] >= opt.MIN_SAVING


def test_bad_input(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    for args, needle in ((["optimize"], "--analyze"), (["optimize", "--analyze", "--apply"], "--analyze"),
                         (["optimize", "--analyze", "--tensor-level", "3"], "goes with --apply"),
                         (["optimize", "--apply", "--tensor-level", "30"], "storage.tensor_level"),
                         (["optimize", "--analyze", "--sample", "lots"], "--sample")):
        p = run_cli(*args, repo=repo, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode != 0 and len(lines) == 1 and needle in lines[0], (args, p.stderr)
