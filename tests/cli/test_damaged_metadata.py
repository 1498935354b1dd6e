"""A ref, HEAD, tag, reflog, staging-roots or config file that does not parse is never
treated as absent: fsck fails naming it (and reports every such file, not the first),
gc refuses and removes nothing, and neither prints a traceback."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.cli.test_cli import _ckpt, cli
from tests.conftest import run_cli


@pytest.fixture
def filled(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _ckpt(tmp_path / "c0", 0), "-m", "step 0")
    cli(repo, "commit", _ckpt(tmp_path / "c1", 1), "-m", "step 1")
    cli(repo, "tag", "v1", "-m", "release")
    return repo


def _write(repo: str, rel: str, data: bytes) -> None:
    p = os.path.join(repo, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)


def _read(repo: str, rel: str) -> bytes:
    with open(os.path.join(repo, rel), "rb") as f:
        return f.read()


def truncate_branch(repo):
    _write(repo, "refs/heads/main", _read(repo, "refs/heads/main")[:40])
    shutil.rmtree(os.path.join(repo, "logs"))  # the repro: no reflog to fall back on


def _roots(repo):  # a staging area written before pins: turned into a pin, if it parses
    _write(repo, "staging/branches/main/base.roots", b"not an id\n")


def _pin(repo):
    _write(repo, "pins/staging/main/base", b"not an id\n")


CASES = {
    "branch-truncated": (truncate_branch, "refs/heads/main"),
    "branch-not-hex": (lambda r: _write(r, "refs/heads/main", b"z" * 64 + b"\n"), "refs/heads/main"),
    "branch-not-utf8": (lambda r: _write(r, "refs/heads/main", b"\xff\xfe" * 32 + b"\n"), "refs/heads/main"),
    "branch-symbolic": (lambda r: _write(r, "refs/heads/main", b"ref: refs/heads/main\n"), "refs/heads/main"),
    "tag-damaged": (lambda r: _write(r, "refs/tags/v1", b"v1\n"), "refs/tags/v1"),
    "tag-not-utf8": (lambda r: _write(r, "refs/tags/v1", b"\x80" * 64), "refs/tags/v1"),
    "head-self-loop": (lambda r: _write(r, "HEAD", b"ref: HEAD\n"), "HEAD"),
    "head-garbage": (lambda r: _write(r, "HEAD", b"hello\n"), "HEAD"),
    "head-not-utf8": (lambda r: _write(r, "HEAD", b"ref: refs/heads/\xff\n"), "HEAD"),
    "reflog-bad-line": (lambda r: _write(r, "logs/refs/heads/main", b"garbage\n" + _read(r, "logs/refs/heads/main")),
                        "logs/refs/heads/main"),
    "reflog-not-utf8": (lambda r: _write(r, "logs/HEAD", _read(r, "logs/HEAD") + b"\xff\xff\n"), "logs/HEAD"),
    "staging-roots": (_roots, "base.roots"),
    "pin-damaged": (_pin, "pins/staging/main/base"),
    "config-not-toml": (lambda r: _write(r, "config.toml", b"[core\nformat = 1\n"), "config.toml"),
    "config-not-utf8": (lambda r: _write(r, "config.toml", b"[core]\nformat = 1\n# \xff\n"), "config.toml"),
    "config-bad-value": (lambda r: _write(r, "config.toml", b"[core]\nformat = 1\n[storage]\nchunk_size = 0\n"),
                         "storage.chunk_size"),
}


def _objects(repo: str) -> int:
    return sum(len(fs) for _d, _s, fs in os.walk(os.path.join(repo, "objects")))


def _clean_exit(r) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_metadata_fails_fsck_and_stops_gc(filled, case):
    repo = filled
    damage, name = CASES[case]
    before = _objects(repo)
    damage(repo)
    r = cli(repo, "fsck", code=3)
    _clean_exit(r)
    assert name in r.output
    g = cli(repo, "gc", "--prune-age", "0", code=2 if case.startswith("config") else 3)
    _clean_exit(g)
    assert name in g.output
    assert len([ln for ln in g.output.splitlines() if ln.strip()]) == 1, g.output
    assert _objects(repo) == before  # nothing was removed


def test_fsck_reports_every_damaged_file(filled):
    repo = filled
    for case in ("branch-not-hex", "tag-damaged", "reflog-bad-line", "staging-roots", "config-bad-value"):
        CASES[case][0](repo)
    r = cli(repo, "fsck", code=3)
    _clean_exit(r)
    for name in ("refs/heads/main", "refs/tags/v1", "logs/refs/heads/main", "base.roots", "storage.chunk_size"):
        assert name in r.output, name


def test_damaged_ref_as_real_process(filled):
    """The issue's repro, through real processes: no traceback on stderr, exit 3."""
    repo = filled
    truncate_branch(repo)
    for args in (("fsck",), ("gc", "--prune-age", "0"), ("log",)):
        p = run_cli(*args, repo=repo, check=False)
        assert p.returncode == 3, (args, p.stdout, p.stderr)
        assert "refs/heads/main is damaged" in p.stderr and "Traceback" not in p.stderr


def test_checkout_repairs_a_damaged_head(filled):
    repo = filled
    _write(repo, "HEAD", b"ref: HEAD\n")
    assert "HEAD is damaged" in cli(repo, "status", code=3).output
    cli(repo, "checkout", "main")
    cli(repo, "fsck")


def test_torn_last_reflog_line_is_not_damage(filled):
    """A crash can leave the last reflog line half-written: that is tolerated."""
    repo = filled
    _write(repo, "logs/refs/heads/main", _read(repo, "logs/refs/heads/main") + b"0000abc")
    cli(repo, "fsck")
    cli(repo, "gc", "--prune-age", "0")


def test_staging_roots_of_an_earlier_version_become_pins(filled):
    """A staging area written before pins kept its gc roots in ``*.roots`` files: gc turns
    each into its pin first, so what they keep survives."""
    from coralfs import Repository
    from coralfs.objects.kinds import Tree
    repo = filled
    r = Repository.open(repo)
    orphan = r.put(Tree({}))  # reached by nothing but the old roots files
    r.close()
    _write(repo, "staging/branches/main/base.roots", (orphan.hex() + "\n").encode())
    _write(repo, "staging/stash/main/0/stash.roots", (orphan.hex() + "\n").encode())
    cli(repo, "gc", "--prune-age", "0")
    r = Repository.open(repo)
    assert r.store.has(orphan)
    assert r.pins.names() == ["staging/main/base", "staging/main/stash/0"]
    assert not os.path.exists(os.path.join(repo, "staging/branches/main/base.roots"))
    r.pins.delete("staging/main/base")
    r.pins.delete("staging/main/stash/0")
    assert r.gc(grace_seconds=0).removed >= 1 and not r.store.has(orphan)
    r.close()
