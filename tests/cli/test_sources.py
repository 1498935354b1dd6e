"""What a commit reads from its sources: symbolic links inside a source are stored as links
(never followed out of it), a source typed as a link is followed, a watched entry that is
a link is refused; real Hugging Face Trainer checkpoint directories commit, import and
watch byte-identical."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from coralfs import Repository
from tests.conftest import run_cli, sha, tree_sha
from tests.hf_trainer import TRAINER_FILES, train

SECRET = os.urandom(4096)  # incompressible: stored raw, it would be found in an object file


def _objects(repo: str) -> dict[str, bytes]:
    out = {}
    for d, _, fs in os.walk(os.path.join(repo, "objects")):
        for f in fs:
            with open(os.path.join(d, f), "rb") as g:
                out[os.path.relpath(os.path.join(d, f), repo)] = g.read()
    return out


def _refs(repo: str) -> dict[str, str]:
    out = {}
    for d, _, fs in os.walk(os.path.join(repo, "refs")):
        for f in fs:
            with open(os.path.join(d, f)) as g:
                out[os.path.join(d, f)] = g.read()
    return out


@pytest.fixture
def world(tmp_path):
    """A repository with one commit, a secret outside any source, and a source dir."""
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    first = tmp_path / "first"
    first.mkdir()
    (first / "a.txt").write_text("first")
    run_cli("commit", str(first), "-m", "first", repo=repo)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET)
    os.chmod(secret, 0o640)
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(b"weights" * 100)
    (src / "sub" / "notes.txt").write_text("notes")
    return repo, src, secret


def _stored_as_link(repo: str, src, link, *cmd: str) -> None:
    """``cmd`` commits ``link`` (inside ``src``) as a link holding its target text, and
    nothing of what it points to."""
    run_cli(*cmd, repo=repo)
    r = Repository.open(repo)
    try:
        e = r.tree_of("main").entries[os.path.relpath(link, src)]
        assert e.is_symlink
        assert r.open_file(e.file).read(0, 4096) == os.fsencode(os.readlink(link))
    finally:
        r.close()
    assert not any(SECRET[:64] in b for b in _objects(repo).values())


@pytest.mark.parametrize("where", ["top", "nested"])
def test_link_to_a_file_outside_is_stored_as_a_link(world, where):
    repo, src, secret = world
    link = src / "leak" if where == "top" else src / "sub" / "leak"
    os.symlink(secret, link)
    _stored_as_link(repo, src, link, "commit", str(src), "-m", "leak")
    _stored_as_link(repo, src, link, "import", str(src))


def test_link_to_a_directory_and_dangling_link_are_stored_as_links(world, tmp_path):
    repo, src, _secret = world
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.bin").write_bytes(SECRET)
    os.symlink(outside, src / "sub" / "dir")
    _stored_as_link(repo, src, src / "sub" / "dir", "commit", str(src), "-m", "dir link")
    assert not any(p.startswith("sub/dir/") for p in Repository.open(repo).tree_of("main").entries)
    os.unlink(src / "sub" / "dir")
    os.symlink(tmp_path / "nowhere", src / "dangling")
    _stored_as_link(repo, src, src / "dangling", "commit", str(src), "-m", "dangling")
    os.unlink(src / "dangling")
    # without links the same source commits
    run_cli("commit", str(src), "-m", "clean", repo=repo)
    run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    assert tree_sha(tmp_path / "out") == tree_sha(src)


def test_source_typed_as_a_link_is_followed(world, tmp_path):
    repo, src, _secret = world
    alias = tmp_path / "latest"
    os.symlink(src, alias)  # like a trainer's "latest -> checkpoint-500"
    run_cli("commit", str(alias), "-m", "via alias", repo=repo)
    run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    assert tree_sha(tmp_path / "out") == tree_sha(src)
    file_alias = tmp_path / "weights.bin"
    os.symlink(src / "model.bin", file_alias)
    run_cli("commit", str(file_alias), "-m", "file alias", repo=repo)
    run_cli("export", "main", str(tmp_path / "out2"), repo=repo)
    assert os.listdir(tmp_path / "out2") == ["weights.bin"]
    assert sha(tmp_path / "out2" / "weights.bin") == sha(src / "model.bin")


def test_watch_stores_a_link_in_a_checkpoint_and_refuses_a_linked_entry(world, tmp_path):
    repo, _src, secret = world
    out = tmp_path / "run"
    ck = out / "checkpoint-1"
    ck.mkdir(parents=True)
    (ck / "model.bin").write_bytes(b"w" * 100)
    os.symlink(secret, ck / "leak")
    old = time.time() - 60
    os.utime(ck / "model.bin", (old, old))
    os.utime(ck / "leak", (old, old), follow_symlinks=False)
    _stored_as_link(repo, ck, ck / "leak", "watch", str(out), "--debounce", "0.5", "--exit-after", "1",
                    "--timeout", "30")
    before = _objects(repo), _refs(repo)
    os.unlink(ck / "leak")
    os.rename(ck, tmp_path / "elsewhere")
    ck = out / "checkpoint-2"  # checkpoint-1 is committed: a watcher skips it now
    os.symlink(tmp_path / "elsewhere", ck)  # the entry itself is a link out of the directory
    p = run_cli("watch", str(out), "--debounce", "0.5", "--exit-after", "1", "--timeout", "30",
                repo=repo, check=False)
    assert p.returncode != 0 and str(ck) in p.stderr and "symbolic link" in p.stderr, p.stderr
    assert (_objects(repo), _refs(repo)) == before


# -- real Hugging Face Trainer checkpoints ---------------------------------------------------

@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("trainer") / "run")
    left = train(out, steps=6, save_steps=2, save_total_limit=2)
    assert left == ["checkpoint-4", "checkpoint-6"]  # checkpoint-2 was rotated away
    return out


@pytest.mark.timeout(600)
def test_trainer_checkpoints_commit_and_import_byte_identical(trainer_run, tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    for name in ("checkpoint-4", "checkpoint-6"):
        ck = os.path.join(trainer_run, name)
        assert TRAINER_FILES <= set(os.listdir(ck))
        run_cli("commit", ck, "-m", name, repo=repo)
        run_cli("export", "main", str(tmp_path / f"out-{name}"), repo=repo)
        assert tree_sha(tmp_path / f"out-{name}") == tree_sha(ck)
    r = Repository.open(repo)
    try:
        f = r.read_file(r.tree_of("main").entries["optimizer.pt"].file)
        assert f.format == "torch" and {t for t in f.tensors()}  # storages kept as tensors
        assert r.read_file(r.tree_of("main").entries["training_args.bin"].file).format == "torch"
    finally:
        r.close()
    # the whole output directory (both checkpoints) through import, into a second repository
    repo2 = str(tmp_path / "repo2")
    run_cli("init", repo2)
    run_cli("import", trainer_run, repo=repo2)
    run_cli("export", "main", str(tmp_path / "out-all"), repo=repo2)
    assert tree_sha(tmp_path / "out-all") == tree_sha(trainer_run)


@pytest.mark.timeout(600)
def test_watch_commits_a_rotating_trainer_run(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    out = tmp_path / "run"
    out.mkdir()
    w = subprocess.Popen([sys.executable, "-m", "coralfs", "watch", str(out), "--debounce", "1",
                          "--exit-after", "3", "--timeout", "300"],
                         env=dict(os.environ, CORALFS_REPO=repo), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        # a pause after each save lets each checkpoint settle, as in a longer training
        left = train(str(out), steps=6, save_steps=2, save_total_limit=2, pause_after_save=3.0)
        stdout, stderr = w.communicate(timeout=300)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert w.returncode == 0, stderr
    assert left == ["checkpoint-4", "checkpoint-6"]
    assert "3 checkpoints committed" in stdout
    r = Repository.open(repo)
    try:
        commits = [c for _oid, c in r.log(r.branch_head("main"))]
        assert sorted(c.metadata["step"] for c in commits) == [2, 4, 6]
    finally:
        r.close()
    for rev, name in (("main", "checkpoint-6"), ("main~1", "checkpoint-4")):
        run_cli("export", rev, str(tmp_path / f"out-{name}"), repo=repo)
        assert tree_sha(tmp_path / f"out-{name}") == tree_sha(out / name)


def test_watch_skips_an_entry_rotated_away_while_it_is_committed(tmp_path):
    from coralfs.watch import Watcher

    class RotatesDuringCommit(Repository):
        """The Trainer deletes the checkpoint (save_total_limit) while it is being read."""

        def commit_paths(self, sources, *a, **k):
            import shutil
            shutil.rmtree(sources[0])
            return super().commit_paths(sources, *a, **k)

    Repository.init(str(tmp_path / "repo")).close()
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "model.bin").write_bytes(b"w" * 100)
    r = RotatesDuringCommit.open(str(tmp_path / "repo"))
    try:
        w = Watcher(r, str(out), debounce=0)
        assert w.commit(str(out / "checkpoint-2")) is None
        assert r.branch_head("main") is None
    finally:
        r.close()
