"""Every config key has a type and a range: out-of-range and wrong-type values are refused
by `config set` and by the reader of a hand-edited config.toml, with one line naming the
key and what it takes."""

from __future__ import annotations

import json
import os

import pytest

from coralfs.objects.config import KEYS, REPO, USER, Config, ConfigError


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)


def bad_values(key: str):
    """(text for `config set`, value for a hand-edited file) pairs the key must refuse."""
    spec = KEYS[key]
    if spec.type is int:
        sets = [str(spec.lo - 1) if spec.lo > 0 else "-1", str(spec.hi + 1), "abc", "1.5"]
        files = [spec.lo - 1, spec.hi + 1, "8", 1.5, True, [1]]
    elif spec.type is bool:
        sets = ["maybe", "2", ""]
        files = [1, "true", "yes", 0.0]
    else:
        sets = ["a\x01b", "tab\there", "x" * 5000]
        files = [5, True, "line\nbreak", "x" * 5000, ["a"]]
    return sets, files


def _scope(key: str) -> str:
    return USER if KEYS[key].scope == USER else REPO


@pytest.mark.parametrize("key", sorted(KEYS))
def test_config_set_refuses_out_of_range_and_wrong_type(tmp_path, key):
    cfg = Config(str(tmp_path / "config.toml"), _scope(key))
    sets, _ = bad_values(key)
    for text in sets:
        with pytest.raises(ConfigError) as e:
            cfg.set(key, text)
        msg = str(e.value)
        assert key in msg and "\n" not in msg, msg
    assert not os.path.exists(cfg.path)  # nothing half-written


@pytest.mark.parametrize("key", sorted(KEYS))
def test_config_reader_refuses_hand_edited_values(tmp_path, key):
    section, _, name = key.partition(".")
    _, files = bad_values(key)
    for v in files:
        p = tmp_path / "config.toml"
        p.write_text(f"[{section}]\n{name} = {_toml(v)}\n")
        with pytest.raises(ConfigError) as e:
            Config(str(p), _scope(key))
        msg = str(e.value)
        assert key in msg and "takes" in msg or key == "core.format" and "format" in msg, msg
        assert str(p) in msg and "\n" not in msg


@pytest.mark.parametrize("key", sorted(KEYS))
def test_config_accepts_its_bounds(tmp_path, key):
    spec = KEYS[key]
    cfg = Config(str(tmp_path / "config.toml"), _scope(key))
    if spec.type is int:
        values = [(str(spec.lo), spec.lo), (str(spec.hi), spec.hi)]
    elif spec.type is bool:
        values = [("true", True), ("off", False)]
    elif key == "core.profile":
        values = [("", ""), ("prod-1", "prod-1")]   # a profile name
    else:
        values = [("", ""), ("ok text", "ok text")]
    for text, want in values:
        if key == "core.format":
            continue  # set by coralfs itself
        assert cfg.set(key, text) == want
        assert Config(cfg.path, _scope(key)).get(key) == want


def test_user_only_and_repo_only_keys(tmp_path):
    repo_cfg = Config(str(tmp_path / "repo.toml"), REPO)
    with pytest.raises(ConfigError, match="user setting"):
        repo_cfg.set("commands.trust", "true")
    (tmp_path / "repo.toml").write_text("[commands]\ntrust = true\n")
    with pytest.raises(ConfigError, match="user setting"):
        Config(str(tmp_path / "repo.toml"), REPO)
    user_cfg = Config(str(tmp_path / "user.toml"), USER)
    with pytest.raises(ConfigError, match="drop --user"):
        user_cfg.set("core.format", "1")
    assert user_cfg.set("storage.chunk_size", "1m") == 1 << 20   # the user scope sits below every repository
    with pytest.raises(ConfigError, match="unknown config key"):
        Config(str(tmp_path / "other.toml"), REPO).set("storage.nope", "1")
    (tmp_path / "other.toml").write_text("[storage]\nnope = 1\n")
    with pytest.raises(ConfigError, match="unknown config key"):
        Config(str(tmp_path / "other.toml"), REPO)


def test_aliases_are_checked(tmp_path):
    cfg = Config(str(tmp_path / "config.toml"))
    for name, cmd in (("x", ""), ("x", "commit 'unclosed"), ("bad name", "log"), ("x", "log\x1b[2J")):
        with pytest.raises(ConfigError):
            cfg.set(f"alias.{name}", cmd)
    (tmp_path / "config.toml").write_text("[alias]\nsave = 3\n")
    with pytest.raises(ConfigError, match="alias.save"):
        Config(str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text("alias = 3\n")
    with pytest.raises(ConfigError, match="section"):
        Config(str(tmp_path / "config.toml"))


def test_commit_with_refused_config_is_one_line_error(tmp_path):
    """`storage.chunk_size = 0` used to loop forever, `tensor_level = 99` and
    `max_chain = 'x'` crashed every commit: now the repository refuses to open."""
    from coralfs import Repository
    path = str(tmp_path / "repo")
    Repository.init(path).close()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 1000)
    for line in ("chunk_size = 0", "tensor_level = 99", "max_chain = 'x'"):
        with open(os.path.join(path, "config.toml"), "w") as f:
            f.write(f"[core]\nformat = 1\n[storage]\n{line}\n")
        with pytest.raises(ConfigError) as e:
            Repository.open(path).commit_paths([str(src)], "x")
        assert "storage." in str(e.value) and "takes" in str(e.value)


def test_user_name_from_the_user_config(tmp_path):
    from coralfs import Repository
    from coralfs.objects.config import user_config
    repo = Repository.init(str(tmp_path / "repo"))
    user_config().set("user.name", "Ada <ada@example.org>")
    assert repo.identity() == "Ada <ada@example.org>"
    repo.config.set("user.name", "Repo Author")
    assert repo.identity() == "Repo Author"
    repo.close()
