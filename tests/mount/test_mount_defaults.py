"""Mount defaults from the config (issue 16: a profile holds mount defaults): the mount.*
keys fill what `coralfs mount` was not given, through the usual scopes; an option on the
command line wins; a bad value is one line and no mount."""

from __future__ import annotations

import contextlib
import json
import os

import pytest

from tests.conftest import run_cli
from tests.mount.conftest import force_unmount

pytestmark = pytest.mark.mount


def _repo(tmp_path) -> str:
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello\n")
    run_cli("commit", str(tmp_path / "src"), "-m", "one", repo=repo)
    return repo


@contextlib.contextmanager
def mount(repo: str, target: str, *args: str, env: dict | None = None):
    """`coralfs [args before "mount"] mount REPO TARGET [args]`; yields what the daemon serves
    with (its state file, as `coralfs mounts --json` lists it)."""
    mp = target.split("@")[0]
    os.makedirs(mp, exist_ok=True)
    pre = list(args[: args.index("mount")]) if "mount" in args else []
    post = list(args[args.index("mount") + 1:]) if "mount" in args else list(args)
    p = run_cli(*pre, "mount", repo, target, *post, env=env)
    pid = int(p.stdout.split("(pid ")[1].split(",")[0])
    try:
        ms = json.loads(run_cli("mounts", "--json").stdout)
        yield next(m for m in ms if m["mountpoint"] == os.path.abspath(mp))
    finally:
        force_unmount(mp, pid)


def test_mount_takes_its_defaults_from_the_config_scopes(tmp_path):
    repo = _repo(tmp_path)
    mp = str(tmp_path / "m")
    with mount(repo, f"{mp}@main") as s:
        assert (s["threads"], s["allow_other"], s["cache_size"]) == (2, False, None)   # built-in defaults
    run_cli("config", "set", "mount.threads", "5", repo=repo)
    run_cli("config", "set", "mount.allow_other", "true", repo=repo)
    run_cli("config", "set", "mount.cache_size", "64m", repo=repo)
    with mount(repo, f"{mp}@main") as s:
        assert (s["threads"], s["allow_other"], s["cache_size"]) == (5, True, 64 << 20)
        with open(os.path.join(mp, "a.txt")) as f:
            assert f.read() == "hello\n"
    with mount(repo, f"{mp}@main", "--threads", "3", "--no-allow-other") as s:   # options win
        assert (s["threads"], s["allow_other"], s["cache_size"]) == (3, False, 64 << 20)
    with mount(repo, f"{mp}@main", env={"CORALFS_MOUNT_THREADS": "6"}) as s:      # environment over the repository
        assert s["threads"] == 6
    with mount(repo, f"{mp}@main", "-c", "mount.threads=7", "mount", env={"CORALFS_MOUNT_THREADS": "6"}) as s:
        assert s["threads"] == 7                                                  # -c over the environment


def test_a_profile_holds_mount_defaults(tmp_path):
    repo = _repo(tmp_path)
    run_cli("config", "profile", "create", "fast", repo=repo)
    run_cli("config", "set", "--profile", "fast", "mount.threads", "4", repo=repo)
    with mount(repo, f"{tmp_path / 'm'}@main", env={"CORALFS_PROFILE": "fast"}) as s:
        assert s["threads"] == 4
    with mount(repo, f"{tmp_path / 'm'}@main") as s:
        assert s["threads"] == 2


def test_writable_mount_auto_commit_from_the_config(tmp_path):
    repo = _repo(tmp_path)
    run_cli("config", "set", "mount.auto_commit", "600", repo=repo)
    with mount(repo, str(tmp_path / "w"), "--write") as s:
        assert s["auto_commit"] == 600.0
    run_cli("umount", str(tmp_path / "w"), "--keep", check=False)
    with mount(repo, f"{tmp_path / 'r'}@main") as s:
        assert s["auto_commit"] is None       # read-only mounts have none


def test_bad_mount_settings_are_one_line_and_no_mount(tmp_path):
    repo = _repo(tmp_path)
    bad = run_cli("config", "set", "mount.threads", "0", repo=repo, check=False)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert "mount.threads" in bad.stderr and "1 to 64" in bad.stderr
    mp = tmp_path / "m"
    mp.mkdir()
    p = run_cli("mount", repo, f"{mp}@main", env={"CORALFS_MOUNT_THREADS": "many"}, check=False)
    assert p.returncode != 0 and "$CORALFS_MOUNT_THREADS" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert all(m["mountpoint"] != str(mp) for m in json.loads(run_cli("mounts", "--json").stdout))
