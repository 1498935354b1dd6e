"""Every command through typer's CliRunner, and each once as a real subprocess."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from coralfs.cli.main import app
from tests.conftest import run_cli

runner = CliRunner()


def cli(repo: str | None, *args, code: int = 0):
    env = {"CORALFS_REPO": repo} if repo else {}
    r = runner.invoke(app, list(args), env=env)
    assert r.exit_code == code, f"coralfs {' '.join(args)} -> {r.exit_code}\n{r.output}\n{r.exception!r}"
    return r


def _ckpt(d, seed, n=64):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((n, n)).astype(np.float32), "b": np.full(n, seed, np.float32)},
              os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"seed": seed}, f)
    return str(d)


@pytest.fixture
def filled(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _ckpt(tmp_path / "c0", 0), "-m", "step 0", "--metric", "loss=2.5", "--meta", "lr=2e-5")
    cli(repo, "commit", _ckpt(tmp_path / "c1", 1), "-m", "step 1", "--metric", "loss=1.5")
    cli(repo, "tag", "v1.0.0", "-m", "release")
    return repo, tmp_path


def test_init_and_errors(tmp_path):
    r = cli(None, "init", str(tmp_path / "r"))
    assert "Initialized" in r.output
    r = cli(None, "init", str(tmp_path / "r"), code=1)
    assert "already a coralfs repository" in r.output
    r = cli(str(tmp_path / "nowhere"), "log", code=1)
    assert "not a coralfs repository" in r.output and "Traceback" not in r.output


def test_commit_log_show_status(filled):
    repo, tmp = filled
    r = cli(repo, "log", "--oneline")
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 and "step 1" in lines[0] and "tag: v1.0.0" in lines[0]
    assert "Metrics: loss=1.5" in cli(repo, "log").output
    assert len(cli(repo, "log", "-n", "1", "--oneline").output.strip().splitlines()) == 1
    assert cli(repo, "log", "--graph", "--oneline").output.startswith("* ")
    r = cli(repo, "show", "HEAD~1")
    assert "step 0" in r.output and "model.safetensors" in r.output and '"lr": 2e-05' in r.output
    r = cli(repo, "show", "v1.0.0:model.safetensors")
    assert "F32" in r.output and "[64, 64]" in r.output
    info = json.loads(cli(repo, "show", "main", "--json").output)
    assert info["message"] == "step 1" and {f["path"] for f in info["files"]} == {"model.safetensors", "config.json"}
    assert "On branch main" in cli(repo, "status").output
    assert json.loads(cli(repo, "status", "--json").output)["files"] == 2
    r = cli(repo, "show", "HEAD:nope.bin", code=1)
    assert "not in" in r.output


def test_commit_errors(filled):
    repo, tmp = filled
    assert "needs a message" in cli(repo, "commit", str(tmp / "c0"), code=1).output
    assert "no such file" in cli(repo, "commit", str(tmp / "missing"), "-m", "x", code=1).output
    assert "KEY=VALUE" in cli(repo, "commit", str(tmp / "c0"), "-m", "x", "--metric", "oops", code=1).output


def test_diff(filled):
    repo, _ = filled
    r = cli(repo, "diff", "HEAD~1")
    assert "modified model.safetensors" in r.output and "max|Δ|" in r.output and "relL2" in r.output
    assert "config.json" in cli(repo, "diff", "HEAD~1", "HEAD", "--stat").output
    d = json.loads(cli(repo, "diff", "HEAD~1", "--json").output)
    t = {x["name"]: x for c in d for x in c["tensors"]}
    assert t["b"]["max_abs"] == 1.0 and t["b"]["status"] == "changed"
    assert "no changes" in cli(repo, "diff", "HEAD", "HEAD").output


def test_branch_tag_checkout(filled):
    repo, tmp = filled
    cli(repo, "branch", "exp", "HEAD~1")
    assert "exp" in cli(repo, "branch").output
    assert "Switched to branch exp" in cli(repo, "checkout", "exp").output
    cli(repo, "commit", _ckpt(tmp / "e", 7), "-m", "exp work")
    assert "detached" in cli(repo, "checkout", "v1.0.0").output
    cli(repo, "checkout", "main")
    assert "v1.0.0" in cli(repo, "tag").output
    cli(repo, "tag", "-d", "v1.0.0")
    assert "v1.0.0" not in cli(repo, "tag").output
    assert "invalid ref name" in cli(repo, "branch", "bad..name", code=1).output
    assert "HEAD is on it" in cli(repo, "branch", "-d", "main", code=1).output
    cli(repo, "branch", "-d", "exp")


def test_export_and_include(filled):
    repo, tmp = filled
    out = tmp / "out"
    cli(repo, "export", "HEAD~1", str(out))
    assert (out / "model.safetensors").read_bytes() == (tmp / "c0" / "model.safetensors").read_bytes()
    sub = tmp / "sub"
    cli(repo, "export", "main", str(sub), "--include", "b")
    assert set(load_file(str(sub / "model.safetensors"))) == {"b"}


def test_merge_strategies_cli(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _ckpt(tmp_path / "base", 0), "-m", "base")
    cli(repo, "branch", "ft")
    cli(repo, "commit", _ckpt(tmp_path / "a", 1), "-m", "ours")
    cli(repo, "checkout", "ft")
    cli(repo, "commit", _ckpt(tmp_path / "b", 2), "-m", "theirs")
    cli(repo, "checkout", "main")
    r = cli(repo, "merge", "ft", code=5)
    assert "merge conflict" in r.output
    r = cli(repo, "merge", "ft", "--strategy", "weighted:0.5")
    assert "Merged ft" in r.output and "combined" in r.output
    merged = cli(repo, "show", "HEAD", "--json").output
    assert len(json.loads(merged)["parents"]) == 2
    assert "weighted:A takes A between 0 and 1" in cli(repo, "merge", "ft", "-s", "weighted:7", code=1).output


def test_gc_fsck_stats(filled):
    repo, _ = filled
    assert "no problems" in cli(repo, "fsck").output
    assert "gc:" in cli(repo, "gc", "--prune-age", "0").output
    s = json.loads(cli(repo, "stats", "--json").output)
    assert s["commits"] == 2 and 0 < s["ratio"] < 1.5
    assert "ratio" in cli(repo, "stats").output
    # damage an object: fsck names it and fails
    objs = os.path.join(repo, "objects")
    d = sorted(os.listdir(objs))[0]
    f = os.path.join(objs, d, sorted(os.listdir(os.path.join(objs, d)))[0])
    os.chmod(f, 0o644)
    with open(f, "r+b") as fh:
        fh.seek(5)
        fh.write(b"\xff")
    r = cli(repo, "fsck", code=3)
    assert (d + os.path.basename(f)) in r.output


def test_config_alias_custom_command(filled):
    repo, tmp = filled
    cli(repo, "config", "set", "storage.max_chain", "4")
    assert cli(repo, "config", "get", "storage.max_chain").output.strip() == "4"
    assert "storage.chunk_size" in cli(repo, "config", "list").output
    assert "unknown config key" in cli(repo, "config", "set", "nope.x", "1", code=2).output
    assert "whole number" in cli(repo, "config", "set", "cache.size", "lots", code=2).output
    cli(repo, "config", "unset", "storage.max_chain")
    cli(repo, "alias", "save", "commit -m checkpoint")
    assert "save = commit -m checkpoint" in cli(repo, "alias").output
    r = cli(repo, "save", _ckpt(tmp / "c9", 9))
    assert "checkpoint" in r.output
    assert "is a coralfs command" in cli(repo, "alias", "log", "status", code=1).output
    cmds = os.path.join(repo, "commands")
    os.makedirs(cmds)
    script = os.path.join(cmds, "hello")
    with open(script, "w") as f:
        f.write('#!/bin/sh\necho "hello $1 from $CORALFS_REPO"\n')
    os.chmod(script, 0o755)
    # Repository-provided commands run only once the user trusts them (user scope).
    refused = run_cli("hello", "world", repo=repo, check=False)
    assert refused.returncode == 1 and "commands.trust" in refused.stderr and "hello" not in refused.stdout
    cli(repo, "config", "set", "--user", "commands.trust", "true")
    p = run_cli("hello", "world", repo=repo)
    assert p.stdout.strip() == f"hello world from {os.path.abspath(repo)}"
    assert os.stat(script).st_mode & stat.S_IXUSR


def test_import_checkpoint(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    d = _ckpt(tmp_path / "checkpoint-500", 3)
    r = cli(repo, "import", d)
    assert "import checkpoint-500" in r.output
    info = json.loads(cli(repo, "show", "--json").output)
    assert info["metadata"]["step"] == 500
    import torch
    torch.save({"w": torch.ones(3)}, tmp_path / "single.pt")
    cli(repo, "import", str(tmp_path / "single.pt"))
    assert "single.pt" in cli(repo, "show").output


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_completions(shell):
    r = cli(None, "completions", shell)
    assert "_CORALFS_COMPLETE" in r.output or "coralfs" in r.output
    assert len(r.output) > 100


def test_dynamic_completion_of_refs(filled):
    repo, _ = filled
    env = dict(os.environ, CORALFS_REPO=repo, _CORALFS_COMPLETE="complete_bash",
               COMP_WORDS="coralfs checkout v", COMP_CWORD="2")
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "coralfs"], env=env, capture_output=True, text=True)
    assert "v1.0.0" in p.stdout, (p.stdout, p.stderr)
    env.update(COMP_WORDS="coralfs show main:mod", COMP_CWORD="2")
    p = subprocess.run([sys.executable, "-m", "coralfs"], env=env, capture_output=True, text=True)
    assert "main:model.safetensors" in p.stdout, (p.stdout, p.stderr)


def test_verbose_shows_traceback(tmp_path):
    p = run_cli("-v", "log", repo=str(tmp_path / "nope"), check=False)
    assert p.returncode == 1 and "Traceback" in p.stderr
    p = run_cli("log", repo=str(tmp_path / "nope"), check=False)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_help_lists_every_command():
    out = run_cli("--help").stdout
    for c in ("init", "commit", "import", "status", "log", "show", "diff", "branch", "tag", "checkout",
              "export", "merge", "gc", "fsck", "stats", "config", "alias", "completions", "mount", "umount",
              "mounts", "preview", "watch"):
        assert c in out


def test_every_command_as_a_subprocess(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    d0, d1 = _ckpt(tmp_path / "a", 0), _ckpt(tmp_path / "b", 1)
    run_cli("commit", d0, "-m", "a", repo=repo)
    run_cli("import", d1, repo=repo)
    run_cli("branch", "x", "HEAD~1", repo=repo)
    run_cli("tag", "t1", repo=repo)
    for args in (["status"], ["log", "--graph"], ["show", "t1:model.safetensors"], ["diff", "HEAD~1", "--stat"],
                 ["branch"], ["tag"], ["checkout", "x"], ["checkout", "main"], ["export", "t1", str(tmp_path / "e")],
                 ["merge", "x", "-s", "ours"], ["gc"], ["fsck"], ["stats", "--json"], ["config", "list"],
                 ["alias", "cm", "commit -m cm"], ["alias"], ["completions", "zsh"]):
        run_cli(*args, repo=repo)
    assert (tmp_path / "e" / "model.safetensors").exists()
