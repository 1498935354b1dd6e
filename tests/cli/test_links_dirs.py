"""Symbolic links and empty directories through the CLI: commit -> export round trips, a
link out of the tree never followed (commit, export), what diff/show/log --stat/status
say of them, and --preserve-owner (commit from a directory, export as root)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from coralfs import Repository
from tests.conftest import run_cli, sha

SECRET = os.urandom(4096)  # incompressible: stored, it would be found in a decoded object


def _decoded_objects(repo: str) -> list[bytes]:
    from coralfs.objects import codecs
    r = Repository.open(repo)
    try:
        return [codecs.decode(r.odb.store.get(oid), oid, r.odb.read_chunk) for oid in r.store]
    finally:
        r.close()


def _listing(d) -> dict[str, str]:
    """Relative path -> what it is: "link:TARGET", "dir" (empty), or "file:SHA"."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, d)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif os.path.isdir(p):
                if not os.listdir(p):
                    out[rel] = "dir"
            else:
                out[rel] = "file:" + sha(p)
    return out


@pytest.fixture
def world(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    src = tmp_path / "run"
    for d in ("checkpoint-500", "checkpoint-600", "logs", "tb/empty"):
        os.makedirs(src / d)
    (src / "checkpoint-500" / "model.bin").write_bytes(b"five hundred" * 50)
    (src / "checkpoint-600" / "model.bin").write_bytes(b"six hundred" * 50)
    os.symlink("checkpoint-500", src / "latest")
    os.symlink("/etc/shadow", src / "evil")
    os.symlink(secret, src / "checkpoint-500" / "leak")
    return repo, src, secret


def test_commit_export_round_trip_keeps_links_and_empty_dirs(world, tmp_path):
    repo, src, _secret = world
    p = run_cli("commit", str(src), "-m", "run", repo=repo)
    assert "2 files, 3 links, 2 empty directories" in p.stdout, p.stdout
    p = run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    assert "exported 2 files, 3 links, 2 empty directories of main" in p.stdout
    assert _listing(tmp_path / "out") == _listing(src)
    assert os.readlink(tmp_path / "out" / "evil") == "/etc/shadow"
    # --path takes links and directories like files
    run_cli("export", "main", str(tmp_path / "part"), "--path", "latest", "--path", "tb", repo=repo)
    assert _listing(tmp_path / "part") == {"latest": "link:checkpoint-500", "tb/empty": "dir"}


def test_a_link_out_of_the_tree_is_stored_as_text_never_followed(world):
    repo, src, secret = world
    run_cli("commit", str(src), "-m", "run", repo=repo)
    with open("/etc/shadow", "rb") as f:
        shadow = f.read()
    stored = _decoded_objects(repo)
    assert any(b == b"/etc/shadow" for b in stored)  # the link's File content is the target text
    assert not any(shadow in b for b in stored)
    assert not any(SECRET[:64] in b for b in stored)
    p = run_cli("show", "main:evil", repo=repo)
    assert p.stdout.strip() == "evil: symbolic link to /etc/shadow"
    p = run_cli("show", "main:checkpoint-500/leak", "--json", repo=repo)
    assert json.loads(p.stdout)["target"] == str(secret)


def test_export_never_writes_through_a_link_it_made(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    outside = tmp_path / "outside"
    outside.mkdir()
    one = tmp_path / "one"
    one.mkdir()
    os.symlink(outside, one / "data")          # a link out of the destination
    run_cli("commit", str(one), "-m", "link", repo=repo)
    two = tmp_path / "two"
    (two / "data").mkdir(parents=True)
    (two / "data" / "x.bin").write_bytes(b"must not land outside")
    run_cli("commit", str(two), "-m", "dir", repo=repo)
    dest = tmp_path / "dest"
    run_cli("export", "main~1", str(dest), repo=repo)
    assert os.readlink(dest / "data") == str(outside)
    p = run_cli("export", "main", str(dest), repo=repo, check=False)  # data/x.bin lies under the link
    err = p.stderr.strip()
    assert p.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{dest}/data is a symbolic link" in err
    assert os.listdir(outside) == [] and os.readlink(dest / "data") == str(outside)


def test_export_refuses_a_link_where_the_destination_has_a_directory(world, tmp_path):
    repo, src, _secret = world
    run_cli("commit", str(src), "-m", "run", repo=repo)
    dest = tmp_path / "dest"
    (dest / "latest").mkdir(parents=True)
    (dest / "latest" / "keep.txt").write_text("mine")
    p = run_cli("export", "main", str(dest), repo=repo, check=False)
    assert p.returncode != 0 and "latest is a directory but the revision has a symbolic link there" in p.stderr
    assert sorted(os.listdir(dest)) == ["latest"] and os.listdir(dest / "latest") == ["keep.txt"]


def test_diff_show_log_and_status_name_links_and_dirs(world, tmp_path):
    repo, src, _secret = world
    run_cli("commit", str(src), "-m", "first", repo=repo)
    os.unlink(src / "latest")
    os.symlink("checkpoint-600", src / "latest")
    os.rmdir(src / "logs")
    os.mkdir(src / "eval")
    os.unlink(src / "evil")
    (src / "evil").write_text("now a file")
    run_cli("commit", str(src), "-m", "second", repo=repo)
    out = run_cli("diff", "main~1", "main", repo=repo).stdout.splitlines()
    assert "modified link latest: checkpoint-500 -> checkpoint-600" in out
    assert "removed dir logs/" in out and "added dir eval/" in out
    assert "modified evil: link to /etc/shadow -> file (10 B)" in out
    changes = {c["path"]: c for c in json.loads(run_cli("diff", "main~1", "main", "--json", repo=repo).stdout)}
    assert (changes["latest"]["target_old"], changes["latest"]["target_new"]) == ("checkpoint-500", "checkpoint-600")
    assert changes["logs"]["kind_old"] == "dir" and changes["logs"]["kind_new"] is None
    log = run_cli("log", "--stat", repo=repo).stdout
    assert " added link latest -> checkpoint-500" in log and " added dir logs/" in log
    assert " modified link latest: checkpoint-500 -> checkpoint-600" in log
    show = run_cli("show", "main", repo=repo).stdout
    assert "link latest -> checkpoint-600" in show and "dir eval/" in show and "dir tb/empty/" in show
    st = run_cli("status", repo=repo).stdout
    assert "3 files," in st and "2 links, 2 empty directories" in st
    info = json.loads(run_cli("status", "--json", repo=repo).stdout)
    assert (info["files"], info["links"], info["dirs"]) == (3, 2, 2)


def test_preserve_owner_round_trip(world, tmp_path):
    repo, src, _secret = world
    w = src / "checkpoint-500" / "model.bin"
    os.chown(w, 1234, 4321)
    os.chmod(w, 0o640)
    os.chown(src / "logs", 1001, 1002)
    os.chmod(src / "logs", 0o700)
    os.chown(src / "latest", 77, 88, follow_symlinks=False)
    run_cli("commit", str(src), "-m", "plain", repo=repo)
    run_cli("commit", str(src), "-m", "owned", "--preserve-owner", repo=repo)
    r = Repository.open(repo)
    try:
        plain, owned = r.read_commit(r.resolve("main~1")), r.read_commit(r.resolve("main"))
    finally:
        r.close()
    assert plain.tree == owned.tree and "owners" not in plain.metadata
    assert owned.metadata["owners"]["checkpoint-500/model.bin"] == [1234, 4321, 0o640]
    assert "Owners: uid, gid and mode of" in run_cli("show", "main", repo=repo).stdout
    # without the flag, an export is owned by whoever runs it
    run_cli("export", "main", str(tmp_path / "mine"), repo=repo)
    assert os.stat(tmp_path / "mine" / "checkpoint-500" / "model.bin").st_uid == os.getuid()
    p = run_cli("export", "main", str(tmp_path / "out"), "--preserve-owner", repo=repo)
    assert "with their owners" in p.stdout
    st = os.stat(tmp_path / "out" / "checkpoint-500" / "model.bin")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o640)
    st = os.stat(tmp_path / "out" / "logs")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1001, 1002, 0o700)
    st = os.lstat(tmp_path / "out" / "latest")
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (77, 88)
    assert os.stat(tmp_path / "out" / "checkpoint-600").st_uid == os.getuid()  # nothing followed the links
    # a commit made without the flag records nothing to restore: refused before writing
    p = run_cli("export", "main~1", str(tmp_path / "none"), "--preserve-owner", repo=repo, check=False)
    assert p.returncode != 0 and "committed without --preserve-owner" in p.stderr
    assert not os.path.exists(tmp_path / "none")


def test_a_crafted_owner_record_is_refused(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    run_cli("commit", str(src), "-m", "m", "--meta", "owners=oops", repo=repo)
    p = run_cli("export", "main", str(tmp_path / "out"), "--preserve-owner", repo=repo, check=False)
    assert p.returncode != 0 and "is not a record of [uid, gid, mode] per path" in p.stderr
    assert not os.path.exists(tmp_path / "out")
    p = run_cli("commit", str(src), "-m", "m", "--meta", "owners=1", "--preserve-owner", repo=repo, check=False)
    assert p.returncode != 0 and "drop --meta owners" in p.stderr
