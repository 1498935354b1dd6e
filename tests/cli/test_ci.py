"""coralfs ci: validate against a schema, benchmark against a base, the GitHub workflow
template and the pre-commit hooks run by the real pre-commit tool on scratch git
repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

from tests.cli.test_cli import cli
from tests.conftest import PYTHON, REPO_ROOT, run_cli

BIN = os.path.dirname(sys.executable)
N = 40_000   # elements of the big tensor: 160 KB, three 64 KiB chunks


def _ckpt(d, *, big=None, bias1=None, extra=False, embed_shape=(32, 16)) -> str:
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    t = {"embed.weight": rng.standard_normal(embed_shape).astype(np.float32),
         "layers.0.bias": np.zeros(16, np.float32),
         "layers.1.bias": np.zeros(16, np.float32) if bias1 is None else bias1,
         "big.weight": rng.standard_normal(N).astype(np.float32) if big is None else big,
         "step": np.array([7], np.int64)}
    if extra:
        t["surprise.weight"] = np.ones(4, np.float32)
    save_file(t, os.path.join(d, "model.safetensors"))
    return str(d)


@pytest.fixture
def repo(tmp_path) -> str:
    r = str(tmp_path / "repo")
    cli(None, "init", r)
    cli(r, "config", "set", "storage.chunk_size", "65536")
    return r


SCHEMA = """
finite = true
max_file_size = "1 MB"
required_metadata = ["metrics.accuracy", "dataset"]

[[files]]
glob = "*.safetensors"
exact = true
[files.tensors]
"embed.weight" = { dtype = "F32", shape = [32, 16] }
"layers.*.bias" = { dtype = "f32", shape = [-1] }
"big.weight" = { shape = [40000] }
"step" = { dtype = "I64" }
"""


def _validate(repo, *args, schema_text=SCHEMA, tmp_path=None):
    schema = tmp_path / "schema.toml"
    schema.write_text(schema_text)
    return run_cli("ci", "validate", *args, "--schema", str(schema), repo=repo, check=False)


def test_validate_passes_a_good_checkpoint_and_names_each_failure(repo, tmp_path):
    cli(repo, "commit", _ckpt(tmp_path / "good"), "-m", "good", "--metric", "accuracy=0.9", "--meta", "dataset=wiki")
    p = _validate(repo, tmp_path=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert all(ln.startswith("PASS  ") for ln in lines[:-1]) and lines[-1] == f"{len(lines) - 1} passed, 0 failed"
    assert "PASS  finite model.safetensors: 4 float tensor(s), no NaN or Inf" in lines
    assert "PASS  metadata metrics.accuracy: = 0.9" in lines
    assert "PASS  tensors model.safetensors layers.*.bias: 2 tensor(s) F32 [*]" in lines

    # NaN in the last chunk of a big tensor, Inf in a small (packed) one, a wrong shape,
    # a tensor the schema does not list, no dataset metadata
    big = np.random.default_rng(1).standard_normal(N).astype(np.float32)
    big[-1], big[-7] = np.nan, np.nan
    bias = np.zeros(16, np.float32)
    bias[3] = np.inf
    cli(repo, "commit", _ckpt(tmp_path / "bad", big=big, bias1=bias, extra=True, embed_shape=(16, 32)), "-m", "bad",
        "--metric", "accuracy=0.5")
    p = _validate(repo, tmp_path=tmp_path)
    assert p.returncode == 1
    fails = [ln for ln in p.stdout.splitlines() if ln.startswith("FAIL")]
    assert fails == [
        "FAIL  tensors model.safetensors embed.weight: embed.weight has shape [16, 32], expected [32, 16]",
        "FAIL  exact model.safetensors: unexpected tensors: surprise.weight",
        "FAIL  finite model.safetensors: big.weight has 2 NaN, 0 Inf; layers.1.bias has 0 NaN, 1 Inf",
        "FAIL  metadata dataset: missing from commit " + p.stdout.split("missing from commit ")[1].split()[0],
    ]
    assert p.stdout.splitlines()[-1].endswith("4 failed")
    # the good commit still passes: REF picks the revision
    assert _validate(repo, "HEAD~1", tmp_path=tmp_path).returncode == 0


def test_validate_sizes_stored_ratio_dtypes_and_globs(repo, tmp_path):
    d = _ckpt(tmp_path / "c")
    save_torch({"h": torch.tensor([1.0, float("inf"), 2.0], dtype=torch.bfloat16)}, os.path.join(d, "half.safetensors"))
    cli(repo, "commit", d, "-m", "two files")
    p = _validate(repo, tmp_path=tmp_path, schema_text="""
max_file_size = 1000
max_stored_ratio = 0.5
[[files]]
glob = "*.bin"
[[files]]
glob = "model.safetensors"
finite = false
""")
    assert p.returncode == 1
    out = p.stdout.splitlines()
    assert "FAIL  files *.bin: no file matches" in out
    assert any(ln.startswith("FAIL  size model.safetensors: ") and "(limit 1000)" in ln for ln in out)
    assert any(ln.startswith("PASS  size half.safetensors: ") for ln in out)
    assert "FAIL  finite half.safetensors: h has 0 NaN, 1 Inf" in out            # bfloat16, decoded
    assert not any(ln.startswith(("PASS  finite model", "FAIL  finite model")) for ln in out)   # finite = false
    assert any(ln.startswith("FAIL  stored ratio: ") for ln in out)            # random floats do not compress to half
    p = _validate(repo, tmp_path=tmp_path, schema_text="max_stored_ratio = 1.1\nfinite = false\n")
    assert p.returncode == 0 and p.stdout.splitlines()[0].startswith("PASS  stored ratio: ")
    # no --schema: the default checks (no NaN/Inf)
    p = run_cli("ci", "validate", repo=repo, check=False)
    assert p.returncode == 1 and "FAIL  finite half.safetensors: h has 0 NaN, 1 Inf" in p.stdout


@pytest.mark.parametrize("text, named", [
    ("finite = 3\n", "schema finite: 3 is not true or false"),
    ("colour = 'red'\n", "unknown key 'colour'"),
    ("[[files]]\nexact = true\n", "schema files[0]: needs glob"),
    ("[[files]]\nglob = '*'\n[files.tensors]\nw = { dtype = 'F33' }\n", "unknown dtype 'F33'"),
    ("[[files]]\nglob = '*'\n[files.tensors]\nw = { shape = [2, 'x'] }\n", "is not a list of lengths"),
    ("max_file_size = 'huge'\n", "schema max_file_size: size 'huge'"),
    ("max_stored_ratio = -1\n", "schema max_stored_ratio"),
    ("finite = [\n", "does not parse"),
])
def test_a_malformed_schema_exits_2_with_one_line(repo, tmp_path, text, named):
    cli(repo, "commit", _ckpt(tmp_path / "c"), "-m", "c")
    p = _validate(repo, tmp_path=tmp_path, schema_text=text)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("coralfs: error: schema "), (p.stdout, p.stderr)
    assert named in lines[0] and p.stdout == ""


def test_a_json_schema_and_a_missing_one(repo, tmp_path):
    cli(repo, "commit", _ckpt(tmp_path / "c"), "-m", "c")
    js = tmp_path / "s.json"
    js.write_text('{"files": [{"glob": "*.safetensors", "tensors": {"step": {"dtype": "I32"}}}]}')
    p = run_cli("ci", "validate", "--schema", str(js), repo=repo, check=False)
    assert p.returncode == 1 and "FAIL  tensors model.safetensors step: step is I64, expected I32" in p.stdout
    p = run_cli("ci", "validate", "--schema", str(tmp_path / "none.toml"), repo=repo, check=False)
    assert p.returncode == 2 and "none.toml" in p.stderr and "No such file" in p.stderr


EVAL = ("import os, numpy as np; from safetensors.numpy import load_file; "
        "t = load_file(os.path.join(os.environ['CORALFS_CHECKPOINT'], 'model.safetensors')); "
        "print('loading done'); print('score=%r' % float(t['layers.0.bias'].sum()))")


def test_benchmark_reports_storage_layers_and_the_eval_metric(repo, tmp_path):
    cli(repo, "commit", _ckpt(tmp_path / "a"), "-m", "base")
    cli(repo, "branch", "base")
    d = _ckpt(tmp_path / "b")
    from safetensors.numpy import load_file
    t = load_file(os.path.join(d, "model.safetensors"))
    t["layers.0.bias"] = np.full(16, 0.5, np.float32)
    big = t["big.weight"].copy()
    big[:100] += 1.0                    # one chunk of three changes
    t["big.weight"] = big
    save_file(t, os.path.join(d, "model.safetensors"))
    cli(repo, "commit", d, "-m", "tuned")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    p = run_cli("ci", "benchmark", "--against", "base", "--eval-cmd", f"{PYTHON} -c \"{EVAL}\"", "--format", "github",
                repo=repo, env={"GITHUB_STEP_SUMMARY": str(summary)}, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    md = p.stdout
    assert md.startswith("## coralfs benchmark: `HEAD` against `base`")
    assert "| files changed | 1 (" in md
    new_stored = [ln for ln in md.splitlines() if ln.startswith("| new stored bytes |")][0]
    assert "| 0 B |" not in new_stored
    assert "| score | 0 | 8 | +8 |" in md                  # the bias summed: 0 before, 16 * 0.5 after
    rows = [ln for ln in md.splitlines() if ln.startswith("| model.safetensors |")]
    # largest relative change first; an all-zero base has no relative change (-): last
    assert [r.split(" | ")[1] for r in rows] == ["big", "layers.0"] and rows[1].endswith("| - |")
    assert summary.read_text() == "earlier step\n" + md + "\n"
    # against itself: nothing new, nothing changed
    same = run_cli("ci", "benchmark", "--against", "HEAD", repo=repo).stdout
    assert "| new stored bytes | 0 B |" in same and "| files changed | 0 (0 B) |" in same and "by layer" not in same
    # an eval command that fails makes the report say so and the exit code 1
    p = run_cli("ci", "benchmark", "--against", "base", "--eval-cmd", "echo no metric here", repo=repo, check=False)
    assert p.returncode == 1 and "FAIL (its last output line is not metric=value)" in p.stdout
    p = run_cli("ci", "benchmark", "--against", "base", "--eval-cmd", "exit 3", repo=repo, check=False)
    assert p.returncode == 1 and "FAIL (exited 3)" in p.stdout
    p = run_cli("ci", "benchmark", "--against", "nope", repo=repo, check=False)
    assert p.returncode != 0 and p.stderr.startswith("coralfs: error: bad revision 'nope'")


def test_init_github_writes_a_workflow_and_refuses_to_overwrite(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    p = run_cli("ci", "init", "github", cwd=str(proj))
    wf = proj / ".github" / "workflows" / "coralfs.yml"
    assert f"wrote {os.path.join('.', '.github', 'workflows', 'coralfs.yml')}" in p.stdout
    doc = yaml.safe_load(wf.read_text())
    assert "pull_request" in doc[True]   # YAML 1.1 reads the key `on` as true
    runs = [s.get("run", "") for s in doc["jobs"]["checkpoint"]["steps"]]
    assert any(r.startswith("coralfs ci validate") for r in runs)
    assert any(r.startswith("coralfs ci benchmark") and "--format github" in r for r in runs)
    wf.write_text("mine\n")
    p = run_cli("ci", "init", "github", cwd=str(proj), check=False)
    assert p.returncode == 1 and "--force" in p.stderr and wf.read_text() == "mine\n"
    run_cli("ci", "init", "github", "--force", cwd=str(proj))
    assert "coralfs ci validate" in wf.read_text()
    assert run_cli("ci", "init", "gitlab", cwd=str(proj), check=False).returncode == 1


def _git(cwd, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _hooks_repo(tmp_path) -> str:
    """A git repository holding this checkout's .pre-commit-hooks.yaml, committed (what
    try-repo needs)."""
    d = tmp_path / "hooks"
    d.mkdir()
    shutil.copy(os.path.join(REPO_ROOT, ".pre-commit-hooks.yaml"), d)
    _git(d, "init", "-q")
    _git(d, "add", ".pre-commit-hooks.yaml")
    _git(d, "commit", "-q", "-m", "hooks")
    return str(d)


def _try(tmp_path, project, hook, *args, env=None) -> subprocess.CompletedProcess:
    e = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pc-home"), "PATH": BIN + os.pathsep + os.environ["PATH"],
         **(env or {})}
    return subprocess.run([os.path.join(BIN, "pre-commit"), "try-repo", _hooks_repo(tmp_path) if not (tmp_path / "hooks").exists()
                           else str(tmp_path / "hooks"), hook, *args], cwd=project, env=e, capture_output=True, text=True,
                          timeout=300)


def test_pre_commit_refuses_big_weight_files(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    _git(proj, "init", "-q")
    with open(proj / "big.safetensors", "wb") as f:
        f.write(os.urandom(11 * 10**6))
    (proj / "small.safetensors").write_bytes(os.urandom(1000))
    with open(proj / "big.txt", "wb") as f:
        f.write(b"x" * (11 * 10**6))
    _git(proj, "add", ".")
    p = _try(tmp_path, proj, "coralfs-no-raw-weights", "--files", "big.safetensors")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "big.safetensors: 11000000 bytes of weights (limit 10000000)" in p.stdout
    p = _try(tmp_path, proj, "coralfs-no-raw-weights", "--files", "small.safetensors", "big.txt")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Passed" in p.stdout
    # the entry point itself takes another limit
    p = run_cli("ci", "hook", "no-raw-weights", "--max-size", "500B", "small.safetensors", cwd=str(proj), check=False)
    assert p.returncode == 1 and "small.safetensors: 1000 bytes" in p.stderr
    p = run_cli("ci", "hook", "no-raw-weights", "--max-size", "lots", "small.safetensors", cwd=str(proj), check=False)
    assert p.returncode == 1 and "--max-size 'lots'" in p.stderr


def test_pre_commit_validate_hook(repo, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    _git(proj, "init", "-q")
    (proj / "README").write_text("code\n")
    _git(proj, "add", ".")
    cli(repo, "commit", _ckpt(tmp_path / "good"), "-m", "good")
    p = _try(tmp_path, proj, "coralfs-validate", "--all-files", env={"CORALFS_REPO": repo})
    assert p.returncode == 0, p.stdout + p.stderr
    big = np.zeros(N, np.float32)
    big[5] = np.nan
    cli(repo, "commit", _ckpt(tmp_path / "bad", big=big), "-m", "bad")
    p = _try(tmp_path, proj, "coralfs-validate", "--all-files", env={"CORALFS_REPO": repo})
    assert p.returncode == 1 and "FAIL  finite model.safetensors: big.weight has 1 NaN, 0 Inf" in p.stdout
