"""`coralfs import KIND PATH`: the pytorch kind and the import-pytorch alias are the plain
import; an unknown kind is a one-line error that commits nothing."""

from __future__ import annotations

from tests.cli.test_cli import _ckpt, cli
from tests.conftest import fails, head_of


def test_pytorch_kind_and_alias_are_the_plain_import(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    ck = _ckpt(tmp_path / "checkpoint-300", 0, n=8)
    cli(repo, "import", "pytorch", ck)
    first = head_of(repo)
    cli(repo, "import-pytorch", _ckpt(tmp_path / "checkpoint-400", 1, n=8))
    out = cli(repo, "log", "--oneline").output.splitlines()
    assert out[0].endswith("import checkpoint-400") and out[1].endswith("import checkpoint-300")
    meta = cli(repo, "show", first, "--json").output
    assert '"step": 300' in meta


def test_an_unknown_kind_is_one_line_and_commits_nothing(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    ck = _ckpt(tmp_path / "c", 0, n=8)
    line = fails(repo, "import", "caffe", ck)
    assert "unknown import kind 'caffe'" in line and "pytorch" in line
    from coralfs import Repository
    r = Repository.open(repo)
    try:
        assert r.head() is None
    finally:
        r.close()
