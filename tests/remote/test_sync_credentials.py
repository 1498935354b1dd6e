"""Wrong credentials through the CLI: push, fetch, pull and clone against an az:// remote
with a wrong Azurite account key fail in one line naming the remote and the fix, with a
non-zero exit code, and leave the local repository as it was (refs, remote-tracking
refs, push journal: byte for byte). The same for made-up AWS keys against moto in its IAM
mode. Real subprocesses against the emulators."""

from __future__ import annotations

import base64
import os

from tests.conftest import run_cli
from tests.remote.emulators import start_moto
from tests.remote.sync_helpers import checkpoint, make_repo, snapshot


def _wrong_key(az_remote) -> dict[str, str]:
    conn = az_remote.env["AZURE_STORAGE_CONNECTION_STRING"]
    key = conn.split("AccountKey=")[1].split(";")[0]
    bad = base64.b64encode(bytes(range(64))).decode()   # well-formed, not the account's
    assert bad != key
    return {"AZURE_STORAGE_CONNECTION_STRING": conn.replace(key, bad)}


def _one_line_with_the_fix(p, where: str) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 5 and len(lines) == 1, (p.returncode, p.stderr)
    line = lines[0]
    assert where in line and "refused the credentials" in line, line
    assert "check AZURE_STORAGE_CONNECTION_STRING" in line, line   # the fix
    assert "Traceback" not in p.stderr and "AccountKey" not in line, line
    return line


def test_a_wrong_azure_key_fails_push_fetch_pull_and_clone_in_one_line_changing_nothing(az_remote, tmp_path):
    repo, _ = make_repo(tmp_path, steps=1)
    run_cli("remote", "add", "origin", az_remote.url, repo=repo.path)
    run_cli("push", repo=repo.path)   # the right key: the remote holds main
    repo.commit_paths([checkpoint(tmp_path / "ft", 3)], "fine-tune")   # something to push
    bad = _wrong_key(az_remote)
    before = snapshot(repo.path)
    assert any(k.startswith("refs/remotes/origin/") for k in before)
    for cmd in (["push"], ["push", "origin", "main"], ["fetch"], ["pull"]):
        p = run_cli(*cmd, repo=repo.path, check=False, env=bad)
        _one_line_with_the_fix(p, "remote origin")
        assert snapshot(repo.path) == before, cmd
    assert not os.path.exists(os.path.join(repo.path, "remote-journal", "origin.json"))
    dest = tmp_path / "c"
    p = run_cli("clone", az_remote.url, str(dest), check=False, env=bad)
    _one_line_with_the_fix(p, az_remote.url)
    assert not os.path.exists(dest) and not [n for n in os.listdir(tmp_path) if n.startswith(".c.clone")]
    # and with the right key the same commands work: the failure was the key's
    assert "main:" in run_cli("push", repo=repo.path).stdout
    run_cli("clone", az_remote.url, str(dest))


def test_made_up_aws_keys_fail_push_fetch_and_clone_in_one_line_changing_nothing(tmp_path):
    """moto in IAM mode accepts only keys it issued."""
    svc = start_moto(str(tmp_path), check_credentials=True)   # its own instance, stopped below
    try:
        env = {**svc.env, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1", "AWS_SECRET_ACCESS_KEY": "wrong",
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
        url = "s3://some-bucket/repo"
        repo, _ = make_repo(tmp_path, steps=1)
        run_cli("remote", "add", "origin", url, "--endpoint", svc.endpoint, repo=repo.path)
        before = snapshot(repo.path)
        for cmd in (["push"], ["fetch"], ["pull"]):
            p = run_cli(*cmd, repo=repo.path, check=False, env=env)
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 5 and len(lines) == 1, (cmd, p.stderr)
            assert "remote origin" in lines[0] and "refused the credentials" in lines[0], lines[0]
            assert "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in lines[0] and "wrong" not in lines[0], lines[0]
            assert snapshot(repo.path) == before, cmd
        p = run_cli("clone", url, str(tmp_path / "c"), "--endpoint", svc.endpoint, check=False, env=env)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 5 and len(lines) == 1 and url in lines[0] and "refused the credentials" in lines[0], p.stderr
        assert not os.path.exists(tmp_path / "c")
    finally:
        svc.stop()
