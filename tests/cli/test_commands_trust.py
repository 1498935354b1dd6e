"""REPO/commands/NAME runs as `coralfs NAME` only after the user trusts repository
commands in the user config; a repository's own config cannot; coralfs-NAME on PATH
keeps working."""

from __future__ import annotations

import os

from tests.cli.test_cli import cli
from tests.conftest import run_cli


def _script(path: str, marker: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\ntouch "{marker}"\necho "{text} $1"\n')
    os.chmod(path, 0o755)


def test_repository_commands_need_user_trust(tmp_path, user_config_home):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    marker = str(tmp_path / "ran")
    _script(os.path.join(repo, "commands", "hello"), marker, "repo says")

    p = run_cli("hello", "x", repo=repo, check=False)
    assert p.returncode == 1 and not os.path.exists(marker)
    assert "config set --user commands.trust true" in p.stderr and "Traceback" not in p.stderr

    # The repository cannot trust itself: neither by `config set` nor by its config file.
    assert "user setting" in cli(repo, "config", "set", "commands.trust", "true", code=2).output
    with open(os.path.join(repo, "config.toml"), "a") as f:
        f.write("[commands]\ntrust = true\n")
    p = run_cli("hello", "x", repo=repo, check=False)
    assert p.returncode != 0 and not os.path.exists(marker)
    with open(os.path.join(repo, "config.toml"), "w") as f:
        f.write("[core]\nformat = 1\n")

    cli(None, "config", "set", "--user", "commands.trust", "true")
    assert os.path.isfile(user_config_home / "coralfs" / "config.toml")
    assert cli(None, "config", "get", "--global", "commands.trust").output.strip() == "True"
    assert "commands.trust = True" in cli(None, "config", "list", "--user").output
    p = run_cli("hello", "x", repo=repo)
    assert p.stdout.strip() == "repo says x" and os.path.exists(marker)

    cli(None, "config", "unset", "--user", "commands.trust")
    os.unlink(marker)
    assert run_cli("hello", "x", repo=repo, check=False).returncode == 1
    assert not os.path.exists(marker)


def test_path_commands_run_untrusted_and_win_over_untrusted_repo_commands(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    bindir = str(tmp_path / "bin")
    _script(os.path.join(bindir, "coralfs-greet"), str(tmp_path / "path-ran"), "path says")
    _script(os.path.join(repo, "commands", "greet"), str(tmp_path / "repo-ran"), "repo says")
    env = {"PATH": bindir + os.pathsep + os.environ["PATH"]}
    p = run_cli("greet", "y", repo=repo, env=env)
    assert p.stdout.strip() == "path says y"
    assert not os.path.exists(tmp_path / "repo-ran")


def test_unknown_command_without_any_provider_is_a_usage_error(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    p = run_cli("comit", repo=repo, check=False)
    assert p.returncode == 2 and "comit" in p.stderr and "Traceback" not in p.stderr
