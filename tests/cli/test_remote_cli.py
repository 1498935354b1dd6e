"""The remote commands through the CLI: remote add|list|show|remove|doctor, push, fetch,
pull, clone, fsck --remote; bad input and faults answer one line, a non-zero exit and an
unchanged repository."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from coralfs.cli.main import app
from tests.conftest import run_cli
from tests.remote.sync_helpers import checkpoint, sha_file, snapshot

runner = CliRunner()


def cli(repo, *args, code: int = 0):
    env = {"CORALFS_REPO": str(repo)} if repo else {}
    r = runner.invoke(app, [str(a) for a in args], env=env)
    assert r.exit_code == code, f"coralfs {' '.join(map(str, args))} -> {r.exit_code}\n{r.output}\n{r.exception!r}"
    return r


@pytest.fixture
def origin(tmp_path):
    repo = tmp_path / "repo"
    cli(None, "init", repo)
    for i in range(2):
        cli(repo, "commit", checkpoint(tmp_path / f"c{i}", i), "-m", f"step {i}")
    (tmp_path / "remote").mkdir()
    url = f"file://{tmp_path / 'remote'}"
    cli(repo, "remote", "add", "origin", url)
    return repo, url


def test_remote_add_list_show_remove(tmp_path, origin):
    repo, url = origin
    assert cli(repo, "remote", "list").output.split() == ["origin", url]
    r = cli(repo, "remote", "show", "origin")
    assert "empty: nothing pushed yet" in r.output
    cli(repo, "push")
    r = cli(repo, "remote", "show", "origin")
    assert f"url: {url}" in r.output and "HEAD branch: main" in r.output and "up to date" in r.output
    cli(repo, "commit", checkpoint(tmp_path / "c9", 9), "-m", "more")
    assert "ahead by 1 (push)" in cli(repo, "remote", "show", "origin").output
    r = cli(repo, "remote", "add", "origin", url, code=1)
    assert "exists already" in r.output
    cli(repo, "remote", "remove", "origin")
    assert cli(repo, "remote", "list").output == ""
    assert not os.path.exists(repo / "refs" / "remotes" / "origin" / "main")


def test_urls_with_credentials_are_refused_and_never_echoed(tmp_path):
    repo = tmp_path / "r"
    cli(None, "init", repo)
    r = cli(repo, "remote", "add", "origin", "s3://AKIA:s3cret@bucket/p", code=2)
    assert "credentials" in r.output and "s3cret" not in r.output and len(r.output.strip().splitlines()) == 1
    r = cli(repo, "remote", "add", "origin", "s3://bucket/p", "--endpoint", "http://u:pw@127.0.0.1:9000", code=2)
    assert "pw@" not in r.output
    r = cli(repo, "config", "set", "remote.origin.url", "gs://user:pw@bucket/x", code=2)
    assert "credentials" in r.output
    r = cli(None, "clone", "az://me:key@container/x", tmp_path / "c", code=2)
    assert "key@" not in r.output and not os.path.exists(tmp_path / "c")
    r = cli(None, "clone", "az://container/x?sig=SECRET", tmp_path / "c", code=2)
    assert "SECRET" not in r.output
    assert "remote" not in (repo / "config.toml").read_text()


def test_unknown_scheme_and_missing_directory_fail_in_one_line_leaving_the_repository(tmp_path, origin):
    repo, _url = origin
    r = cli(repo, "remote", "add", "x", "ftp://host/p", code=2)
    assert "unknown remote URL" in r.output and "s3://" in r.output
    cli(repo, "remote", "add", "gone", f"file://{tmp_path / 'nowhere'}")
    before = snapshot(str(repo))
    for cmd in (["push", "gone", "main"], ["fetch", "gone"], ["pull", "gone"], ["fsck", "--remote", "gone"]):
        r = cli(repo, *cmd, code=5)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "remote gone:" in lines[0] and "mkdir -p" in lines[0], r.output
    assert snapshot(str(repo)) == before
    r = cli(None, "clone", f"file://{tmp_path / 'nowhere'}", tmp_path / "c", code=5)
    assert "mkdir -p" in r.output and not os.path.exists(tmp_path / "c")
    r = cli(repo, "push", "nosuch", code=1)   # not a remote: taken as a ref to push
    assert "no branch or tag 'nosuch'" in r.output


def test_push_clone_pull_through_the_cli(tmp_path, origin):
    repo, url = origin
    r = cli(repo, "push", "origin", "main")
    assert "main: (new) ->" in r.output and "pushed" in r.output
    r = cli(repo, "push", "origin", "main")
    assert "pushed 0 objects, 0 B in 0 packs" in r.output and "(up-to-date)" in r.output
    r = cli(None, "clone", url, tmp_path / "clone")
    assert "on branch main" in r.output
    cli(tmp_path / "clone", "export", "main~1", tmp_path / "out")
    assert sha_file(tmp_path / "out" / "model.safetensors") == sha_file(tmp_path / "c0" / "model.safetensors")
    cli(repo, "commit", checkpoint(tmp_path / "c2", 2), "-m", "step 2")
    cli(repo, "push")
    r = cli(tmp_path / "clone", "pull")
    assert "main: fast-forward" in r.output
    assert cli(tmp_path / "clone", "log", "--oneline").output.count("\n") == 3
    cli(tmp_path / "clone", "fsck")
    assert "no problems" in cli(repo, "fsck", "--remote", "origin").output


def test_non_fast_forward_push_exits_4_and_diverged_pull_names_the_merge(tmp_path, origin):
    repo, url = origin
    cli(repo, "push")
    cli(None, "clone", url, tmp_path / "b")
    cli(repo, "commit", checkpoint(tmp_path / "a2", 2), "-m", "a")
    cli(repo, "push")
    (tmp_path / "bdir").mkdir()
    (tmp_path / "bdir" / "notes.txt").write_text("b")
    cli(tmp_path / "b", "commit", tmp_path / "bdir", "-m", "b")
    r = cli(tmp_path / "b", "push", code=4)
    assert "pull first" in r.output
    r = cli(tmp_path / "b", "pull", code=1)
    assert "coralfs merge origin/main" in r.output
    cli(tmp_path / "b", "merge", "origin/main", "--strategy", "theirs")
    cli(tmp_path / "b", "push")
    cli(repo, "pull")
    assert cli(repo, "log", "--oneline").output.count("\n") == 5


def test_tags_push_with_tags(tmp_path, origin):
    repo, url = origin
    cli(repo, "tag", "v1", "-m", "release")
    cli(repo, "push", "--tags")
    cli(None, "clone", url, tmp_path / "c")
    assert "v1" in cli(tmp_path / "c", "tag").output


def test_remote_doctor_on_a_directory(tmp_path, origin):
    repo, _url = origin
    r = cli(repo, "remote", "doctor", "origin")
    lines = r.output.strip().splitlines()
    assert all(ln.startswith("ok   ") for ln in lines) and {"write", "conditional writes", "layout"} <= {
        ln[5:].split(":")[0] for ln in lines}
    assert [f for _r, _d, fs in os.walk(tmp_path / "remote") for f in fs if "doctor" in f] == []  # cleaned up
    r = cli(repo, "remote", "add", "bad", f"file://{tmp_path / 'remote'}/sub")
    os.makedirs(tmp_path / "remote" / "sub")
    (tmp_path / "remote" / "sub" / "coralfs-remote.json").write_text("junk")
    r = cli(repo, "remote", "doctor", "bad", code=1)
    assert "FAIL layout" in r.output and "point the remote at another prefix" in r.output


def test_fsck_remote_names_a_damaged_object_with_exit_3(tmp_path, origin):
    repo, _url = origin
    cli(repo, "push")
    packs = tmp_path / "remote" / "packs"
    pack = next(p for p in packs.iterdir() if p.suffix == ".pack")
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    r = cli(repo, "fsck", "--remote", "origin", code=3)
    assert f"packs/{pack.name}" in r.output and "problems" in r.output


def test_clone_depth_and_filter_from_a_real_process(tmp_path, origin):
    repo, url = origin
    cli(repo, "push")
    r = run_cli("clone", url, str(tmp_path / "s"), "--depth", "1")
    assert "(shallow)" in r.stdout and "push:" not in r.stderr
    assert run_cli("log", "--oneline", repo=str(tmp_path / "s")).stdout.count("\n") == 1
    run_cli("fsck", repo=str(tmp_path / "s"))
    r = run_cli("clone", url, str(tmp_path / "p"), "--filter", "head.*")
    assert "(partial: head.*)" in r.stdout and "fetch:" in r.stderr   # plain progress lines off a terminal
    run_cli("fsck", repo=str(tmp_path / "p"))   # checks what is here, reads headers of the rest
    run_cli("export", "main~1", str(tmp_path / "out"), repo=str(tmp_path / "p"))
    assert sha_file(tmp_path / "out" / "model.safetensors") == sha_file(tmp_path / "c0" / "model.safetensors")


def test_an_experiment_travels_with_its_branch(tmp_path, origin):
    import json
    repo, url = origin
    cli(repo, "experiment", "start", "sweep", "--param", "lr=1e-4")
    cli(repo, "commit", checkpoint(tmp_path / "e1", 7), "-m", "exp step")
    cli(repo, "experiment", "log", "acc", "0.8", "--step", "1")
    cli(repo, "push", "origin", "exp/sweep")
    cli(None, "clone", url, tmp_path / "clone")
    show = json.loads(cli(tmp_path / "clone", "experiment", "show", "sweep", "--json").output)
    assert show["params"] == {"lr": 1e-4}
    assert [(m["metric"], m["value"]) for m in show["metrics"] if m["source"] == "log"] == [("acc", 0.8)]
    # more points logged on the first machine arrive with the next fetch (a fast-forward)
    cli(repo, "experiment", "log", "acc", "0.85", "--step", "2")
    cli(repo, "push", "origin", "exp/sweep")
    cli(tmp_path / "clone", "fetch")
    best = json.loads(cli(tmp_path / "clone", "experiment", "best", "--metric", "acc", "--json").output)
    assert (best["experiment"], best["value"]) == ("sweep", 0.85)
