"""Range copy-on-write in the ops tier (StagingOperations without a kernel): a write into a
committed file spools its range only, and what reads the file (a reader open across a
commit, another name of it, an O_TRUNC open, a truncation) sees the written ranges over
the committed bytes exactly."""

from __future__ import annotations

import errno
import os

import pyfuse3

from tests.ops.test_staging import RDONLY, RDWR, WRONLY, _Fields, run


def _allocated(fs) -> int:
    d = fs.stage.spool_dir
    return sum(os.stat(os.path.join(d, n)).st_blocks * 512 for n in os.listdir(d))


def test_a_write_into_a_committed_file_spools_its_range_and_reads_back_over_the_commit(fs, committed):
    want = bytearray((committed / "model.safetensors").read_bytes())
    fh = fs.open("model.safetensors", RDWR)
    fs.write(fh, 5000, b"\x11" * 3000)
    want[5000:8000] = b"\x11" * 3000
    assert fs.read(fh, 4000, 5000) == bytes(want[4000:9000])  # a read across both kinds of bytes
    fs.close(fh)
    block = os.statvfs(fs.stage.spool_dir).f_bsize
    assert _allocated(fs) <= 3000 + 3 * block < len(want) // 4  # the range, the map: not the file
    assert fs.cat("model.safetensors") == bytes(want)
    assert fs.control({"op": "commit", "message": "one range"})["ok"]
    assert os.listdir(fs.stage.spool_dir) == []
    assert fs.cat("model.safetensors") == bytes(want)


def test_a_reader_open_across_the_commit_that_drops_the_spool_still_reads_the_written_bytes(fs, committed):
    want = bytearray((committed / "model.safetensors").read_bytes())
    w = fs.open("model.safetensors", RDWR)
    fs.write(w, 9000, b"new!")
    want[9000:9004] = b"new!"
    fs.close(w)
    r = fs.open("model.safetensors", RDONLY)  # holds the spool (and its overlay) open
    assert fs.control({"op": "commit", "message": "written"})["ok"]
    assert fs.stage.get("model.safetensors").spool is None  # the spool's names and map are gone
    assert fs.read(r) == bytes(want)  # ...but the reader's overlay is not: no holes served
    fs.close(r)


def test_hard_links_share_one_overlay_and_a_rename_over_keeps_it(fs, committed):
    want = bytearray((committed / "model.safetensors").read_bytes())
    run(fs.ops.link, fs.ino("model.safetensors"), fs.ino(""), b"alias.safetensors", None)
    fh = fs.open("alias.safetensors", RDWR)
    fs.write(fh, 2000, b"via the alias")
    want[2000:2013] = b"via the alias"
    fs.close(fh)
    assert fs.cat("model.safetensors") == bytes(want)
    fs.rename("alias.safetensors", "sub/notes.txt")  # over another file
    assert fs.cat("sub/notes.txt") == bytes(want) == fs.cat("model.safetensors")
    out = fs.control({"op": "commit", "message": "linked"})
    assert out["ok"], out
    assert fs.cat("sub/notes.txt") == bytes(want)


def test_truncating_an_overlay_cuts_the_committed_bytes_and_an_extension_is_zeros(fs, committed):
    want = (committed / "model.safetensors").read_bytes()
    fh = fs.open("model.safetensors", RDWR)
    fs.write(fh, 100, b"w" * 50)
    attr = pyfuse3.EntryAttributes()
    attr.st_size = 120
    run(fs.ops.setattr, fs.ino("model.safetensors"), attr, _Fields(update_size=True), fh, None)
    attr.st_size = 4000
    run(fs.ops.setattr, fs.ino("model.safetensors"), attr, _Fields(update_size=True), fh, None)
    fs.close(fh)
    assert fs.cat("model.safetensors") == want[:100] + b"w" * 20 + bytes(3880)
    fh = fs.open("model.safetensors", WRONLY | os.O_TRUNC)  # an O_TRUNC open of the overlay
    fs.write(fh, 10, b"x")
    fs.close(fh)
    assert fs.cat("model.safetensors") == bytes(10) + b"x"


def test_a_damaged_overlay_map_answers_eio_at_open_and_the_mount_still_serves_the_rest(repo, committed):
    from tests.ops.test_staging import FS, errno_of
    f = FS(repo)
    fh = f.open("model.safetensors", RDWR)
    f.write(fh, 5000, b"written")
    f.close(fh)
    spool = f.stage.get("model.safetensors").spool
    f.close_all()
    path = os.path.join(f.stage.spool_dir, spool + ".map")
    data = bytearray(open(path, "rb").read())
    data[12] ^= 0xFF  # inside the committed File's id in the header
    open(path, "wb").write(bytes(data))
    f = FS(repo)  # the staging area opens; the damaged map is logged, not guessed around
    try:
        assert errno_of(f.open, "model.safetensors") == errno.EIO
        assert f.cat("sub/notes.txt") == b"hello"
    finally:
        f.close_all()
