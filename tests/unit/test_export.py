"""export does not trust the tree nor the destination: modes are masked, symlinks inside
the destination are not followed, a failed export names the path and leaves nothing."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from coralfs.export import ExportError
from coralfs.objects.kinds import BytesSegment, Tree, TreeEntry
from tests.conftest import run_cli


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _file(repo, tmp_path, name: str, data: bytes):
    p = tmp_path / "src" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return repo.write_file(str(p))[0]


def _commit(repo, tmp_path, files: dict[str, tuple[bytes, int]]) -> str:
    entries = {path: TreeEntry(_file(repo, tmp_path, path.replace("/", "_"), data), mode)
               for path, (data, mode) in files.items()}
    return repo.commit(Tree(entries), "crafted").hex()


def _listing(d) -> list[str]:
    out = []
    for root, dirs, files in os.walk(d):
        out += [os.path.relpath(os.path.join(root, x), d) for x in dirs + files]
    return sorted(out)


def _corrupt(repo, file_id) -> None:
    seg = repo.read_file(file_id).segments[0]
    assert isinstance(seg, BytesSegment)
    path = repo.store._path(seg.chunks[0][0])
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    os.chmod(path, 0o600)
    with open(path, "wb") as f:
        f.write(data)


def test_setuid_setgid_sticky_modes_are_dropped(repo, tmp_path, umask022):
    cid = _commit(repo, tmp_path, {"suid": (b"a", 0o4755), "sgid": (b"b", 0o2755),
                                   "sticky": (b"c", 0o1644), "all": (b"d", 0o7777),
                                   "plain": (b"e", 0o644), "d/exec": (b"f", 0o100)})
    out = tmp_path / "out"
    assert sorted(repo.export(cid, str(out))) == ["all", "d/exec", "plain", "sgid", "sticky", "suid"]
    modes = {p: stat.S_IMODE(os.stat(out / p).st_mode) for p in _listing(out)}
    assert modes == {"suid": 0o755, "sgid": 0o755, "sticky": 0o644, "all": 0o755, "plain": 0o644,
                     "d": 0o755, "d/exec": 0o755}
    assert (out / "suid").read_bytes() == b"a"


def test_symlinked_directory_in_dest_is_not_followed(repo, tmp_path):
    cid = _commit(repo, tmp_path, {"a.bin": (b"1", 0o644), "sub/x.bin": (b"2", 0o644),
                                   "sub/deeper/y.bin": (b"3", 0o644)})
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "sub")
    with pytest.raises(ExportError) as ei:
        repo.export(cid, str(dest))
    msg = str(ei.value)
    assert f"{dest}/sub is a symbolic link" in msg
    assert ".tmp-" not in msg and "nothing was written" in msg
    assert os.listdir(outside) == []
    assert _listing(dest) == ["sub"]  # a.bin (written before sub was reached) is gone again
    assert os.path.islink(dest / "sub")


def test_symlink_deeper_and_non_directory_in_dest_are_refused(repo, tmp_path):
    cid = _commit(repo, tmp_path, {"m/n/o/w.bin": (b"1", 0o644)})
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    (dest / "m").mkdir(parents=True)
    os.symlink(outside, dest / "m" / "n")
    with pytest.raises(ExportError, match="m/n is a symbolic link"):
        repo.export(cid, str(dest))
    assert os.listdir(outside) == []
    os.unlink(dest / "m" / "n")
    (dest / "m" / "n").write_bytes(b"a file")
    with pytest.raises(ExportError, match=r"m/n is not a directory"):
        repo.export(cid, str(dest))
    assert _listing(dest) == ["m", "m/n"]


def test_symlink_at_a_file_name_is_replaced_not_written_through(repo, tmp_path):
    cid = _commit(repo, tmp_path, {"w.bin": (b"new", 0o644)})
    target = tmp_path / "precious"
    target.write_bytes(b"keep")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(target, dest / "w.bin")
    repo.export(cid, str(dest))
    assert target.read_bytes() == b"keep"
    assert not os.path.islink(dest / "w.bin") and (dest / "w.bin").read_bytes() == b"new"


def test_corrupt_object_mid_tree_names_the_path_and_leaves_nothing(repo, tmp_path):
    files = {"a/1.bin": (os.urandom(5000), 0o644), "b/2.bin": (os.urandom(5000), 0o644),
             "c/3.bin": (os.urandom(5000), 0o644)}
    cid = _commit(repo, tmp_path, files)
    _corrupt(repo, repo.tree_of(cid).entries["b/2.bin"].file)
    from coralfs import Repository
    fresh = Repository.open(repo.path)
    # a new destination (with a missing parent) is removed again
    dest = tmp_path / "new" / "dest"
    with pytest.raises(ExportError) as ei:
        fresh.export(cid, str(dest))
    assert str(ei.value).startswith("cannot export b/2.bin: corrupt object ")
    assert ei.value.exit_code == 3
    assert ".tmp-" not in str(ei.value)
    assert not (tmp_path / "new").exists()
    # an existing destination keeps exactly what it held
    dest = tmp_path / "existing"
    (dest / "a").mkdir(parents=True)
    (dest / "a" / "1.bin").write_bytes(b"old")
    (dest / "keep").write_bytes(b"mine")
    with pytest.raises(ExportError, match=f"b/2.bin.*nothing was written to {dest}"):
        fresh.export(cid, str(dest))
    assert _listing(dest) == ["a", "a/1.bin", "keep"]
    assert (dest / "a" / "1.bin").read_bytes() == b"old"
    # the CLI: one line naming the path, exit 3, no traceback
    p = run_cli("export", cid, str(dest), repo=repo.path, check=False)
    assert p.returncode == 3
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coralfs: error: cannot export b/2.bin: corrupt object")
    assert _listing(dest) == ["a", "a/1.bin", "keep"]


def test_enospc_names_the_file_and_leaves_nothing(repo, tmp_path):
    cid = _commit(repo, tmp_path, {"small.bin": (b"x" * 1000, 0o644),
                                   "dir/big.bin": (os.urandom(3 << 20), 0o644),
                                   "z.bin": (b"z", 0o644)})
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        dest = mnt / "out"
        with pytest.raises(ExportError) as ei:
            repo.export(cid, str(dest))
        msg = str(ei.value)
        assert msg.startswith(f"cannot write {dest}/dir/big.bin: No space left on device")
        assert ".tmp-" not in msg
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_dest_that_is_a_file_is_refused(repo, tmp_path):
    cid = _commit(repo, tmp_path, {"w.bin": (b"1", 0o644)})
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ExportError, match="is not a directory"):
        repo.export(cid, str(tmp_path / "f"))
    (tmp_path / "d" / "w.bin").mkdir(parents=True)
    with pytest.raises(ExportError, match="w.bin is a directory"):
        repo.export(cid, str(tmp_path / "d"))
