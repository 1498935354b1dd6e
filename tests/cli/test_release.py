"""coralfs release / releases on a real small repository."""

from __future__ import annotations

import json

import pytest

from coralfs import Repository
from coralfs.objects.ids import to_hex
from coralfs.objects.kinds import Tag
from tests.cli.test_cli import _ckpt, cli
from tests.conftest import run_cli


@pytest.fixture
def three(tmp_path):
    """A repository with three commits (HEAD~2, HEAD~1, HEAD)."""
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    for i in range(3):
        cli(repo, "commit", _ckpt(tmp_path / f"c{i}", i, n=16), "-m", f"step {i}")
    return repo


def _tags(repo: str) -> dict:
    r = Repository.open(repo)
    try:
        return dict(r.tags())
    finally:
        r.close()


def _one_line_error(r, *needles: str) -> None:
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coralfs: error: "), r.output
    for n in needles:
        assert n in lines[0], (n, r.output)


def test_first_releases_then_bumps_and_pre_releases(three):
    repo = three
    r = cli(repo, "release", "minor", "HEAD~2", "-m", "first one")
    assert "as v0.1.0" in r.output
    cli(repo, "tag", "v1", "HEAD~1")  # not a release: ignored by the numbering and the listing
    cli(repo, "tag", "auto/main/3", "HEAD~1")
    cli(repo, "release", "major", "HEAD~1")
    assert "as v1.0.1-beta.1" in cli(repo, "release", "patch", "--pre", "beta").output
    rs = json.loads(cli(repo, "releases", "--json").output)
    assert [x["tag"] for x in rs] == ["v0.1.0", "v1.0.0", "v1.0.1-beta.1"]
    assert rs[0]["message"] == "first one" and rs[1]["message"] == "Release v1.0.0"
    assert all(x["annotated"] for x in rs)


def test_pre_release_counts_up_on_an_existing_release(three, tmp_path):
    repo = three
    cli(repo, "tag", "v1.2.3", "HEAD~2", "-m", "made by hand")
    assert "as v1.2.4-beta.1" in cli(repo, "release", "patch", "--pre", "beta", "HEAD~1").output
    assert "as v1.2.4-beta.2" in cli(repo, "release", "patch", "--pre", "beta", "--build", "exp.7").output
    r = cli(repo, "releases")
    lines = r.output.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == ["v1.2.3", "v1.2.4-beta.1", "v1.2.4-beta.2+exp.7"]
    assert "made by hand" in lines[0] and "Release v1.2.4-beta.1" in lines[1]
    with Repository.open(repo) as rp:
        tag = rp.odb.get_object(rp.tags()["v1.2.4-beta.2+exp.7"])
        assert isinstance(tag, Tag) and tag.target == rp.resolve("HEAD")
        assert to_hex(rp.resolve("HEAD"))[:12] in lines[2]


def test_a_released_commit_is_refused_and_no_tag_moves(three):
    repo = three
    cli(repo, "release", "patch")
    before = _tags(repo)
    r = cli(repo, "release", "minor", code=1)
    _one_line_error(r, "already released as v0.0.1")
    r = cli(repo, "release", "major", "--pre", "rc", "HEAD", code=1)
    _one_line_error(r, "already released as v0.0.1")
    assert _tags(repo) == before


@pytest.mark.parametrize("args,needle,code", [
    (["release", "huge"], "major, minor, patch", 1),
    (["release", "patch", "--pre", "01"], "--pre", 1),
    (["release", "patch", "--pre", "b c"], "--pre", 1),
    (["release", "patch", "--build", "a+b"], "--build", 1),
    (["release", "patch", "nosuchref"], "bad revision 'nosuchref'", 2),
])
def test_bad_input_is_one_line_and_changes_nothing(three, args, needle, code):
    repo = three
    before = _tags(repo)
    _one_line_error(cli(repo, *args, code=code), needle)
    assert _tags(repo) == before == {}


def test_a_version_below_the_highest_is_refused(three):
    repo = three
    cli(repo, "tag", "v1.2.4-rc.1", "HEAD~2")
    cli(repo, "tag", "v1.2.3", "HEAD~1")
    before = _tags(repo)
    _one_line_error(cli(repo, "release", "patch", "--pre", "beta", code=1),
                    "v1.2.4-beta.1 would not be above the highest release v1.2.4-rc.1")
    assert _tags(repo) == before
    assert "as v1.2.4" in cli(repo, "release", "patch").output


def test_release_as_a_real_process(three):
    p = run_cli("release", "major", "-m", "ship it", repo=three)
    assert "as v1.0.0" in p.stdout
    p = run_cli("release", "minor", repo=three, check=False)
    assert p.returncode == 1 and p.stderr.strip().count("\n") == 0 and "already released as v1.0.0" in p.stderr
    p = run_cli("releases", "--json", repo=three)
    assert [(x["tag"], x["message"]) for x in json.loads(p.stdout)] == [("v1.0.0", "ship it")]
