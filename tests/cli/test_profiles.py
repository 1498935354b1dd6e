"""Config scopes and profiles: default < user < repository < profile < environment <
command line, `config explain`, profile create/use/list/show/export/import, secrets
refused where they would be shared."""

from __future__ import annotations

import json

from coralfs import Repository
from tests.cli.test_cli import cli
from tests.conftest import fails, run_cli


def _explain(repo: str, key: str, env: dict | None = None, *pre: str) -> list[dict]:
    return json.loads(run_cli(*pre, "config", "explain", key, "--json", repo=repo, env=env).stdout)


def _winner(chain: list[dict]) -> tuple[str, object]:
    (w,) = [c for c in chain if c["wins"]]
    return w["scope"], w["value"]


def test_scopes_stack_in_git_order(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    key = "storage.max_chain"
    assert _winner(_explain(repo, key)) == ("default", 8)
    cli(None, "config", "set", "--user", key, "7")
    assert _winner(_explain(repo, key)) == ("user", 7)
    cli(repo, "config", "set", key, "6")
    assert _winner(_explain(repo, key)) == ("repository", 6)
    cli(repo, "config", "profile", "create", "prod")
    cli(repo, "config", "set", "--profile", "prod", key, "5")
    assert _winner(_explain(repo, key)) == ("repository", 6)     # not in use yet
    cli(repo, "config", "profile", "use", "prod")
    assert _winner(_explain(repo, key)) == ("profile prod", 5)
    env = {"CORALFS_STORAGE_MAX_CHAIN": "4"}
    chain = _explain(repo, key, env)
    assert _winner(chain) == ("environment", 4)
    assert [c["scope"] for c in chain] == ["default", "user", "repository", "profile prod", "environment", "command line"]
    assert [c["value"] for c in chain if c["set"]] == [8, 7, 6, 5, 4]
    assert _winner(_explain(repo, key, env, "-c", f"{key}=3")) == ("command line", 3)
    # the value in effect is what the repository uses
    r = Repository.open(repo)
    try:
        assert r.settings.max_chain == 5
    finally:
        r.close()
    assert cli(repo, "config", "get", key).output.strip() == "5"
    # the text form names the winner and every scope
    out = run_cli("config", "explain", key, repo=repo, env=env).stdout
    assert out.splitlines()[0] == f"{key} = 4  (from environment)"
    assert "$CORALFS_STORAGE_MAX_CHAIN  <- wins" in out and "profile prod" in out


def test_profiles_create_copy_export_import_and_select(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "config", "profile", "create", "dev")
    cli(repo, "config", "set", "--profile", "dev", "storage.tensor_level", "3")
    cli(repo, "config", "set", "--profile", "dev", "staging.min_interval", "60")
    cli(repo, "config", "profile", "create", "prod", "--from", "dev")
    cli(repo, "config", "set", "--profile", "prod", "storage.tensor_level", "19")
    assert json.loads(cli(repo, "config", "profile", "show", "prod", "--json").output) == \
        {"staging.min_interval": 60, "storage.tensor_level": 19}
    text = cli(repo, "config", "profile", "export", "prod").output
    f = tmp_path / "shared.toml"
    f.write_text(text)
    other = str(tmp_path / "other")
    cli(None, "init", other)
    assert "Imported profile shared" in cli(other, "config", "profile", "import", str(f)).output
    assert json.loads(cli(other, "config", "profile", "show", "shared", "--json").output)["storage.tensor_level"] == 19
    cli(repo, "config", "profile", "use", "dev")
    assert cli(repo, "config", "profile", "list").output.splitlines() == ["* dev", "  prod"]
    assert cli(repo, "config", "get", "storage.tensor_level").output.strip() == "3"
    # $CORALFS_PROFILE picks another one for this process only
    got = run_cli("config", "get", "storage.tensor_level", repo=repo, env={"CORALFS_PROFILE": "prod"}).stdout
    assert got.strip() == "19"
    cli(repo, "config", "profile", "use", "--none")
    assert cli(repo, "config", "get", "storage.tensor_level").output.strip() == "1"


def test_bad_profiles_and_secrets_are_refused(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    before = (tmp_path / "repo" / "config.toml").read_text()
    assert "does not exist" in fails(repo, "config", "profile", "use", "nope")
    assert "$CORALFS_PROFILE" in fails(repo, "log", env={"CORALFS_PROFILE": "ghost"})
    assert "does not exist" in fails(repo, "config", "profile", "show", "ghost")
    assert "looks like a secret" in fails(repo, "config", "set", "s3.secret_access_key", "abc")
    cli(repo, "config", "profile", "create", "p")
    assert "looks like a secret" in fails(repo, "config", "set", "--profile", "p", "hub.token", "hf_x")
    bad = tmp_path / "bad.toml"
    bad.write_text('[azure]\nconnection_string = "DefaultEndpointsProtocol=https;AccountKey=k"\n')
    assert "looks like a secret" in fails(repo, "config", "profile", "import", str(bad))
    assert not (tmp_path / "repo" / "profiles" / "bad.toml").exists()
    assert "exists already" in fails(repo, "config", "profile", "create", "p")
    assert "profile name" in fails(repo, "config", "profile", "create", "../x")
    assert "$CORALFS_STORAGE_MAX_CHAIN" in fails(repo, "log", env={"CORALFS_STORAGE_MAX_CHAIN": "100"})
    assert "-c storage.chunk_size" in fails(repo, "-c", "storage.chunk_size=tiny", "log")
    assert "KEY=VALUE" in fails(repo, "-c", "nonsense", "log")
    assert "not to a profile" in fails(repo, "config", "set", "--profile", "p", "core.profile", "p")
    assert (tmp_path / "repo" / "config.toml").read_text() == before   # nothing changed by the refusals
