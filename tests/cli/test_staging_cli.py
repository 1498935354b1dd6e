"""The staging commands without a mount: status, stash, stash pop and stash list read and
change a staging area that no daemon serves (as after `coralfs umount --keep`)."""

from __future__ import annotations

import json

from coralfs import Repository
from coralfs.staging import StagingArea
from tests.conftest import run_cli


def test_offline_status_and_stash_round_trip(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("committed")
    run_cli("commit", str(src), "-m", "one", repo=repo)
    r = Repository.open(repo)
    st = StagingArea.open(r, "main")  # what a writable mount leaves behind
    e = st.create("new.bin", 0o644)
    with open(st.spool_path(e.spool), "wb") as f:
        f.write(b"staged bytes")
    st.unlink("a.txt")
    st.close()
    r.close()

    info = json.loads(run_cli("status", "--json", repo=repo).stdout)
    assert {(c["status"], c["path"]) for c in info["staged"]["main"]} == {("added", "new.bin"), ("deleted", "a.txt")}
    assert "stash@{0}" in run_cli("stash", "-m", "later", repo=repo).stdout
    assert json.loads(run_cli("status", "--json", repo=repo).stdout)["staged"] == {}
    items = json.loads(run_cli("stash", "list", "--json", repo=repo).stdout)
    assert [(s["index"], s["message"], len(s["changes"])) for s in items] == [(0, "later", 2)]
    p = run_cli("stash", "pop", repo=repo)
    assert "A new.bin" in p.stdout and "D a.txt" in p.stdout
    assert "no stashes" in run_cli("stash", "list", repo=repo).stdout
    p = run_cli("stash", "pop", repo=repo, check=False)
    assert p.returncode == 7 and "no stashes" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    r = Repository.open(repo)
    st = StagingArea.open(r, "main")
    with open(st.spool_path(st.get("new.bin").spool), "rb") as f:
        assert f.read() == b"staged bytes"
    st.close()
    r.close()


def test_staging_command_errors(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    p = run_cli("stash", repo=repo, check=False)
    assert p.returncode == 7 and "no staged changes" in p.stderr
    p = run_cli("status", "--mount", str(tmp_path), repo=repo, check=False)
    assert p.returncode == 7 and "not a writable coralfs mount" in p.stderr
    p = run_cli("commit", "-m", "x", repo=repo, check=False)
    assert p.returncode != 0 and "--mount MNT" in p.stderr
    p = run_cli("umount", str(tmp_path), "--keep", check=False)
    assert p.returncode == 6 and "not mounted" in p.stderr
