"""push, fetch and clone show a progress bar (bar, bytes, objects, MB/s) on a terminal,
and none when their output goes to a pipe. Real subprocesses; the terminal is a pty."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading

from tests.conftest import run_cli
from tests.remote.sync_helpers import checkpoint, make_repo

ENV = {"CORALFS_PACK_SIZE": str(96 << 10)}   # several packs: the bar moves more than once
# "push: [#####-----]  50% 1.2 MiB / 2.4 MiB, 7/14 objects, 31 MB/s"
BAR = re.compile(r"(push|fetch): \[[#-]{30}\] +\d+% \d+(\.\d)? (B|KiB|MiB|GiB) / \d+(\.\d)? (B|KiB|MiB|GiB), "
                 r"\d+/\d+ objects, \d+ MB/s")


def _cli_env(repo: str | None) -> dict[str, str]:
    env = dict(os.environ, **ENV)
    env.pop("CORALFS_REPO", None)
    if repo:
        env["CORALFS_REPO"] = repo
    return env


def _on_a_terminal(*args: str, repo: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, what reached the terminal): stderr is a pty, stdout a pipe."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:   # read as it comes: a full pty would block the child
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:   # EIO: every holder of the slave closed it
                return
            if not data:
                return
            chunks.append(data)

    try:
        p = subprocess.Popen([sys.executable, "-m", "coralfs", *args], env=_cli_env(repo), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = -1
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        out, _ = p.communicate(timeout=300)
        t.join(30)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return p.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def _piped(*args: str, repo: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coralfs", *args], env=_cli_env(repo), capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def _bars(term: str, phase: str) -> list[str]:
    """The bar's successive states (each redrawn after a carriage return)."""
    return [m.group(0) for m in BAR.finditer(term) if m.group(1) == phase]


def test_push_fetch_and_clone_show_a_progress_bar_on_a_terminal_and_none_on_a_pipe(tmp_path):
    repo, _ = make_repo(tmp_path, steps=2)
    for name in ("tty", "pipe"):
        (tmp_path / name).mkdir()
        run_cli("remote", "add", name, f"file://{tmp_path / name}", repo=repo.path)

    rc, out, term = _on_a_terminal("push", "tty", "main", repo=repo.path)
    assert rc == 0 and "pushed" in out, term
    bars = _bars(term, "push")
    assert len(bars) >= 2 and "\r" in term and "\x1b[K" in term, term   # redrawn in place, more than once
    assert bars[-1].startswith("push: [" + "#" * 30 + "] 100%"), bars[-1]
    n = int(re.search(r"(\d+)/\1 objects", bars[-1]).group(1))
    assert n == len(list(repo.store))
    assert term.endswith("\n")   # the bar's line is ended before the summary

    p = _piped("push", "pipe", "main", repo=repo.path)
    assert p.returncode == 0 and "pushed" in p.stdout, p.stderr
    assert "\r" not in p.stderr and "\x1b[" not in p.stderr and not BAR.search(p.stderr) and "[#" not in p.stderr, p.stderr

    rc, out, term = _on_a_terminal("clone", f"file://{tmp_path / 'tty'}", str(tmp_path / "c1"))
    assert rc == 0 and "cloned" in out, term
    bars = _bars(term, "fetch")
    assert bars and bars[-1].startswith("fetch: [" + "#" * 30 + "] 100%") and "\r" in term, term
    p = _piped("clone", f"file://{tmp_path / 'pipe'}", str(tmp_path / "c2"))
    assert p.returncode == 0 and "cloned" in p.stdout, p.stderr
    assert "\r" not in p.stderr and "\x1b[" not in p.stderr and "[#" not in p.stderr, p.stderr

    repo.commit_paths([checkpoint(tmp_path / "ft", 4)], "fine-tune")
    run_cli("push", "tty", "main", repo=repo.path)
    run_cli("push", "pipe", "main", repo=repo.path)
    rc, out, term = _on_a_terminal("fetch", repo=str(tmp_path / "c1"))
    assert rc == 0 and "fetched" in out, term
    bars = _bars(term, "fetch")
    assert bars and bars[-1].startswith("fetch: [" + "#" * 30 + "] 100%") and "\r" in term, term
    p = _piped("fetch", repo=str(tmp_path / "c2"))
    assert p.returncode == 0 and "fetched" in p.stdout, p.stderr
    assert "\r" not in p.stderr and "\x1b[" not in p.stderr and "[#" not in p.stderr, p.stderr
