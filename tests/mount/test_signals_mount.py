"""A signal to `coralfs commit MNT` while the writable mount's daemon commits: the daemon
cannot be stopped from the client, so the client waits and reports the commit (exit 0)
instead of dying while the commit lands anyway."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.conftest import PYTHON, run_cli
from tests.mount.conftest import mounted

pytestmark = pytest.mark.mount


def _head(repo: str) -> str | None:
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        h = r.branch_head("main")
        return h.hex() if h else None
    finally:
        r.close()


def _has_control_open(pid: int) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/.coral/control"):
                return True
        except OSError:
            pass
    return False


def test_sigterm_to_a_mount_commit_reports_the_landed_commit(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    mp = str(tmp_path / "stage")
    with mounted(repo, mp, None, "--write"):
        rng = np.random.default_rng(0)
        for i in range(3):
            with open(os.path.join(mp, f"w{i}.bin"), "wb") as f:
                f.write(rng.standard_normal(12 << 20, dtype=np.float32).tobytes())
        p = subprocess.Popen([PYTHON, "-m", "coralfs", "commit", mp, "-m", "during a signal"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, CORALFS_REPO=repo))
        # Signal once the client has the control file open: the request is (being) sent.
        deadline = time.monotonic() + 60
        while not _has_control_open(p.pid) and time.monotonic() < deadline:
            assert p.poll() is None, p.communicate()
            time.sleep(0.005)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        head = _head(repo)
        assert head is not None and head[:12] in out
        assert "SIGTERM arrived while the mount was committing" in out
