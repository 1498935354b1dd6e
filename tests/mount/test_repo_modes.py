"""Other users stay out of a repository: it is created 0700 with 0600 files (0750/0640
with --shared), and everything a commit, a writable mount's staging area, a stash and the
similarity index create later keeps those bits. Repositories made before keep working."""

from __future__ import annotations

import contextlib
import os
import stat

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import run_cli
from tests.mount.conftest import mounted


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(repo: str) -> dict[str, int]:
    out = {".": stat.S_IMODE(os.stat(repo).st_mode)}
    for root, dirs, files in os.walk(repo):
        for x in dirs + files:
            p = os.path.join(root, x)
            out[os.path.relpath(p, repo)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def _ckpt(d, seed: int) -> str:
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((128, 128)).astype(np.float32)}, os.path.join(d, "model.safetensors"))
    return str(d)


def _use(repo: str, tmp_path) -> None:
    """Commit, stage through a writable mount (kept staged), stash, tag, gc and fsck."""
    run_cli("commit", _ckpt(tmp_path / "c0", 0), "-m", "step 0", repo=repo)
    run_cli("commit", _ckpt(tmp_path / "c1", 1), "-m", "step 1", repo=repo)
    run_cli("branch", "exp", repo=repo)
    run_cli("tag", "v1", "-m", "first", repo=repo)
    mp = str(tmp_path / "stage")
    with mounted(repo, mp, None, "--write"):
        rng = np.random.default_rng(5)
        save_file({"w": rng.standard_normal((64, 64)).astype(np.float32)}, os.path.join(mp, "new.safetensors"))
        with open(os.path.join(mp, "notes.txt"), "w") as f:
            f.write("staged")
        run_cli("stash", "--mount", mp, "-m", "aside", repo=repo)
        with open(os.path.join(mp, "later.txt"), "w") as f:
            f.write("staged, kept")
        run_cli("umount", mp, "--keep", repo=repo)
    run_cli("gc", "--prune-age", "0", repo=repo)
    run_cli("fsck", repo=repo)
    assert any(p.startswith("staging/") and p.endswith("stage.db") for p in _modes(repo))
    assert os.path.exists(os.path.join(repo, "index", "similarity.sqlite"))


def test_default_repository_is_private_to_its_owner(tmp_path):
    repo = str(tmp_path / "repo")
    with umask(0o022):  # the usual umask, which alone would leave files world-readable
        run_cli("init", repo)
        _use(repo, tmp_path)
    modes = _modes(repo)
    assert len(modes) > 20
    bad = {p: oct(m) for p, m in modes.items() if m & 0o077}
    assert not bad, bad
    assert modes["."] == 0o700 and modes["HEAD"] == 0o600 and modes["config.toml"] == 0o600
    objects = [m for p, m in modes.items() if p.startswith("objects/") and p.count("/") == 2]
    assert objects and set(objects) == {0o400}


def test_shared_repository_is_group_readable_even_under_a_strict_umask(tmp_path):
    repo = str(tmp_path / "repo")
    with umask(0o077):
        run_cli("init", "--shared", repo)
        _use(repo, tmp_path)
    modes = _modes(repo)
    assert modes["."] == 0o2750
    for p, m in modes.items():
        assert not m & 0o007, (p, oct(m))  # never for others
        is_dir = stat.S_ISDIR(os.lstat(os.path.join(repo, p)).st_mode)
        if is_dir:
            assert m & 0o050 == 0o050, (p, oct(m))
        elif not p.startswith("staging/"):  # a user's staged bytes stay theirs (spool 0600)
            assert m & 0o040, (p, oct(m))
    objects = [m for p, m in modes.items() if p.startswith("objects/") and p.count("/") == 2]
    assert set(objects) == {0o440}


def test_repository_made_before_the_rule_keeps_working(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", _ckpt(tmp_path / "c0", 0), "-m", "step 0", repo=repo)
    # what an older coralfs left: 0755 directories, 0644 files, 0444 objects
    for root, dirs, files in os.walk(repo):
        os.chmod(root, 0o755)
        for f in files:
            p = os.path.join(root, f)
            os.chmod(p, 0o444 if "/objects/" in p else 0o644)
    with umask(0o022):
        run_cli("commit", _ckpt(tmp_path / "c1", 1), "-m", "step 1", repo=repo)
        run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    run_cli("fsck", repo=repo)
    modes = _modes(repo)
    assert modes["."] == 0o755  # its owner's choice is left alone
    assert {m for p, m in modes.items() if p.startswith("objects/") and p.count("/") == 2} == {0o444}
    assert modes["HEAD"] == 0o644 and modes["refs/heads/main"] == 0o644


@pytest.mark.parametrize("shared", [False, True])
def test_api_init_modes(tmp_path, shared):
    from coralfs import Repository
    with umask(0o022):
        r = Repository.init(str(tmp_path / "r"), shared=shared)
        r.close()
    want_dir, want_file = (0o2750, 0o640) if shared else (0o700, 0o600)
    modes = _modes(str(tmp_path / "r"))
    for p, m in modes.items():
        is_dir = stat.S_ISDIR(os.lstat(os.path.join(tmp_path, "r", p)).st_mode)
        assert m == (want_dir if is_dir else want_file), (p, oct(m))


def _as_other_user(gid: int, fn) -> str:
    """Run ``fn`` in a forked child as uid nobody with only group ``gid``; its result or
    error as text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(65534)
            msg = repr(fn())
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            msg = f"error {type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        return f.read().decode()


def test_group_reads_a_shared_repository_others_read_nothing():
    import shutil
    import tempfile

    from coralfs import Repository
    base = tempfile.mkdtemp(dir="/tmp")  # pytest's own tmp dirs are 0700
    try:
        os.chmod(base, 0o755)
        os.mkdir(os.path.join(base, "outs"))
        os.chmod(os.path.join(base, "outs"), 0o1777)
        shared, private = os.path.join(base, "shared"), os.path.join(base, "private")
        run_cli("init", "--shared", shared)
        for root, dirs, files in os.walk(shared):  # `chgrp -R`: what is made later keeps it (setgid)
            for x in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(x, -1, 4242)
            assert os.stat(root).st_mode & 0o2000
        run_cli("init", private)
        for repo in (shared, private):
            run_cli("commit", _ckpt(os.path.join(base, "c"), 0), "-m", "step 0", repo=repo)
        assert {os.stat(os.path.join(root, f)).st_gid for root, _, files in os.walk(shared)
                for f in files} == {4242}

        def export(repo: str):
            def run():
                out = os.path.join(base, "outs", f"{os.path.basename(repo)}-{os.getgid()}")
                with Repository.open(repo) as r:
                    return r.export("HEAD", out)
            return run

        assert _as_other_user(4242, export(shared)) == "['model.safetensors']"
        assert _as_other_user(4243, export(shared)).startswith("error")
        assert _as_other_user(4242, export(private)).startswith("error")
        got = _as_other_user(4242, lambda: open(os.path.join(private, "config.toml")).read())
        assert got.startswith("error PermissionError")
        # the owner's staged changes: the group's `status` says it cannot read them
        from typer.testing import CliRunner

        from coralfs.cli.main import app
        from coralfs.staging import StagingArea
        with Repository.open(shared) as r:
            st = StagingArea.open(r, "main")
            st.create("staged.bin", 0o644)
            st.close()

        def status():
            res = CliRunner().invoke(app, ["-R", shared, "status"])
            return res.exit_code, res.output.splitlines()[-1]
        assert status() == (0, "  A staged.bin")  # (also imports what the child needs)
        assert _as_other_user(4242, status) == \
            "(0, \"Staged on branch main: not readable by you (another user's staging area)\")"
    finally:
        shutil.rmtree(base)
