"""coralfs watch (a real training loop saving checkpoints) and coralfs preview."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from coralfs import Repository
from tests.conftest import run_cli, tree_sha


def _save_checkpoint(out_dir, step, net, opt):
    """What HF Trainer writes: weights, optimizer, trainer state; written in place."""
    d = os.path.join(out_dir, f"checkpoint-{step}")
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(d, "model.safetensors"))
    torch.save(opt.state_dict(), os.path.join(d, "optimizer.pt"))
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step}, f)
    return d


@pytest.mark.timeout(300)
def test_watch_commits_each_settled_checkpoint(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    out = tmp_path / "run"
    out.mkdir()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    # one checkpoint exists before the watcher starts: it is caught up
    first = _save_checkpoint(str(out), 0, net, opt)
    old = time.time() - 60
    for dp, _, fs in os.walk(first):
        for f in fs:
            os.utime(os.path.join(dp, f), (old, old))
    w = subprocess.Popen([sys.executable, "-m", "coralfs", "watch", str(out), "--debounce", "1",
                          "--exit-after", "3", "--timeout", "120"],
                         env=dict(os.environ, CORALFS_REPO=repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    saved = [first]
    try:
        for step in range(1, 7):
            loss = net(torch.randn(32, 64)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 3 == 0:
                saved.append(_save_checkpoint(str(out), step, net, opt))
                time.sleep(2.5)  # the trainer goes on; the checkpoint settles
        stdout, stderr = w.communicate(timeout=120)
    finally:
        if w.poll() is None:
            w.kill()
    assert w.returncode == 0, stderr
    assert "3 checkpoints committed" in stdout
    r = Repository.open(repo)
    commits = list(r.log("main"))
    assert [c.metadata["step"] for _, c in commits] == [6, 3, 0]
    assert all(c.metadata["source"] == os.path.join(str(out), f"checkpoint-{c.metadata['step']}") for _, c in commits)
    for (oid, c), d in zip(commits, reversed(saved)):
        exp = tmp_path / f"exp-{c.metadata['step']}"
        r.export(oid.hex(), str(exp))
        assert tree_sha(exp) == tree_sha(d)
    # a restarted watcher does not commit the same checkpoints again
    p = run_cli("watch", str(out), "--debounce", "0.2", "--timeout", "2", repo=repo)
    assert "0 checkpoints committed" in p.stdout
    assert len(list(Repository.open(repo).log("main"))) == 3


def test_watch_rules_min_interval_and_keep_last_tags(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("config", "set", "staging.keep_last", "2", repo=repo)  # the rules writable mounts use
    out = tmp_path / "run"
    for step in (1, 2, 3, 4):
        d = out / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "w.bin").write_bytes(os.urandom(1000))
    t0 = time.monotonic()
    p = run_cli("watch", str(out), "--debounce", "0", "--min-interval", "1", "--exit-after", "4",
                "--timeout", "60", repo=repo)
    took = time.monotonic() - t0
    assert "4 checkpoints committed" in p.stdout
    assert took >= 3.0  # three waits of at least min-interval between four commits
    r = Repository.open(repo)
    tags = {n: r.peel(t) for n, t in r.tags().items()}
    head = r.branch_head("main")
    assert sorted(tags) == ["auto/main/3", "auto/main/4"] and tags["auto/main/4"] == head
    assert r.read_commit(tags["auto/main/3"]).metadata["step"] == 3


def test_watch_errors(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    p = run_cli("watch", str(tmp_path / "missing"), repo=repo, check=False)
    assert p.returncode != 0 and "not a directory to watch" in p.stderr


def test_preview_and_checkout_dry_run(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    d = tmp_path / "c"
    d.mkdir()
    save_file({"w": torch.zeros(8, 8)}, str(d / "model.safetensors"))
    run_cli("commit", str(d), "-m", "zeros", repo=repo)
    run_cli("tag", "zeros", repo=repo)
    save_file({"w": torch.ones(8, 8), "b": torch.ones(3)}, str(d / "model.safetensors"))
    run_cli("commit", str(d), "-m", "ones", repo=repo)
    before = Repository.open(repo).head()
    p = run_cli("preview", "zeros", repo=repo)
    assert "would change 1 files" in p.stdout and "removed" in p.stdout and "max|Δ|=1" in p.stdout
    p = run_cli("checkout", "zeros", "--dry-run", repo=repo)
    assert "would change 1 files" in p.stdout
    assert json.loads(run_cli("preview", "zeros", "--json", repo=repo).stdout)[0]["path"] == "model.safetensors"
    r = Repository.open(repo)
    assert r.head() == before and r.head_branch() == "main"  # nothing changed
