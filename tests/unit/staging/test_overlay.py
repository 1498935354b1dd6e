"""Range copy-on-write in the staging area (coralfs/staging/overlay.py): the overlay map
against a byte model, what a crash leaves in a map (a torn last record, a record lost, a
truncation whose record was lost), corruption named, and commits and stashes of a file
under an overlay ingesting exactly the bytes a full copy would hold."""

from __future__ import annotations

import errno
import os
import random

import pytest

from coralfs.staging import StagingArea, base_pin
from coralfs.staging.overlay import Overlay, committed_under, map_path


class Model:
    """A file under an overlay, kept beside the same edits applied to plain bytes."""

    def __init__(self, tmp_path, committed: bytes) -> None:
        self.committed = committed
        self.spool = str(tmp_path / "spool")
        with open(self.spool, "wb") as f:
            f.truncate(len(committed))
        self.fd = os.open(self.spool, os.O_RDWR)
        self.ov = Overlay.create(self.spool, b"\1" * 32, len(committed))
        self.want = bytearray(committed)

    def write(self, off: int, data: bytes) -> None:
        os.pwrite(self.fd, data, off)
        self.ov.wrote(off, len(data))
        if off > len(self.want):
            self.want += bytes(off - len(self.want))
        self.want[off:off + len(data)] = data

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.ov.truncated(size)
        self.want = self.want[:size] + bytes(max(0, size - len(self.want)))

    def read(self, ov: Overlay | None = None) -> bytes:
        ov = ov or self.ov
        size = os.fstat(self.fd).st_size
        return ov.read(self.fd, size, 0, size + 10, lambda a, n: self.committed[a:a + n])


@pytest.mark.parametrize("seed", range(6))
def test_random_writes_and_truncates_read_back_as_the_same_edits_of_plain_bytes(tmp_path, seed):
    rng = random.Random(seed)
    m = Model(tmp_path, rng.randbytes(rng.randrange(1, 200_000)))
    for _ in range(60):
        size = len(m.want)
        if rng.random() < 0.2:
            m.truncate(rng.randrange(0, size * 2 + 2))
        else:
            off = rng.randrange(0, size + 5000)
            m.write(off, rng.randbytes(rng.randrange(1, 20_000)))
        if rng.random() < 0.3:
            a = rng.randrange(0, len(m.want) + 1)
            n = rng.randrange(0, 30_000)
            size = os.fstat(m.fd).st_size
            got = m.ov.read(m.fd, size, a, n, lambda o, k: m.committed[o:o + k])
            assert got == bytes(m.want[a:a + n])
    assert m.read() == bytes(m.want)
    # What the map on disk holds gives the same file (a new daemon's view).
    m.ov.sync()
    again = Overlay.load(m.spool)
    assert (again.starts, again.ends, again.limit) == (m.ov.starts, m.ov.ends, m.ov.limit)
    assert m.read(again) == bytes(m.want)
    # ...and so does the map compacted to one record per extent.
    m.ov.compact()
    assert m.read(Overlay.load(m.spool)) == bytes(m.want)


def test_shrinking_then_growing_gives_zeros_never_the_committed_bytes_again(tmp_path):
    m = Model(tmp_path, b"C" * 1000)
    m.write(10, b"w" * 10)
    m.truncate(15)
    m.truncate(1000)
    assert m.read() == b"C" * 10 + b"w" * 5 + bytes(985)
    assert m.read(Overlay.load(m.spool)) == b"C" * 10 + b"w" * 5 + bytes(985)


def test_a_truncation_whose_record_a_crash_lost_is_found_from_the_spools_size(tmp_path):
    m = Model(tmp_path, b"C" * 1000)
    m.write(10, b"w" * 10)
    os.ftruncate(m.fd, 15)  # the daemon dies here: the spool is cut, the record never appended
    ov = Overlay.load(m.spool)  # as the next daemon does when it opens the area
    assert ov.limit == 15 and m.read(ov) == b"C" * 10 + b"w" * 5
    os.ftruncate(m.fd, 100)
    ov.truncated(100)
    assert m.read(ov) == b"C" * 10 + b"w" * 5 + bytes(85)


def test_a_write_whose_record_was_lost_reads_its_committed_bytes_never_holes(tmp_path):
    m = Model(tmp_path, b"C" * 1000)
    m.write(0, b"a" * 10)
    os.pwrite(m.fd, b"b" * 10, 500)  # applied to the spool; the daemon dies before the record
    assert m.read(Overlay.load(m.spool)) == b"a" * 10 + b"C" * 990


def test_a_torn_last_record_is_dropped_and_appends_follow_the_good_ones(tmp_path):
    m = Model(tmp_path, b"C" * 1000)
    m.write(0, b"a" * 10)
    m.write(100, b"b" * 10)
    m.ov.close()
    with open(map_path(m.spool), "r+b") as f:
        f.truncate(os.path.getsize(map_path(m.spool)) - 7)  # the second record half written
    ov = Overlay.load(m.spool)
    assert (ov.starts, ov.ends) == ([0], [10])
    os.pwrite(m.fd, b"d" * 5, 900)
    ov.wrote(900, 5)
    ov.sync()
    assert m.read(Overlay.load(m.spool)) == b"a" * 10 + b"C" * 890 + b"d" * 5 + b"C" * 95


def test_a_damaged_record_with_more_after_it_is_named_not_read_around(tmp_path):
    m = Model(tmp_path, b"C" * 1000)
    for k in range(3):
        m.write(k * 100, b"w" * 10)
    m.ov.close()
    path = map_path(m.spool)
    data = bytearray(open(path, "rb").read())
    data[60] ^= 0xFF  # inside the first record
    open(path, "wb").write(bytes(data))
    with pytest.raises(OSError) as e:
        Overlay.load(m.spool)
    assert e.value.errno == errno.EIO and "damaged" in str(e.value)
    data = bytearray(open(path, "rb").read())
    data[5] ^= 0xFF  # the header
    open(path, "wb").write(bytes(data))
    with pytest.raises(OSError) as e:
        Overlay.load(m.spool)
    assert e.value.errno == errno.EIO and "header" in str(e.value)


def _write(st: StagingArea, path: str, off: int, data: bytes) -> None:
    """A write into a committed file, as the mount makes it: overlay first, pwrite, record."""
    e = st.write_into_spool(path, False)
    fd = os.open(st.spool_path(e.spool), os.O_RDWR)
    try:
        os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    ov = st.overlay(e.spool)
    ov.wrote(off, len(data))
    ov.sync()


def test_a_write_into_a_committed_file_spools_only_its_range_and_commits_the_whole_file(repo, committed):
    want = bytearray((committed / "model.safetensors").read_bytes())
    st = StagingArea.open(repo, "main")
    _write(st, "model.safetensors", 1000, b"\x7f" * 4096)
    want[1000:1000 + 4096] = b"\x7f" * 4096
    spool = st.get("model.safetensors").spool
    assert os.stat(st.spool_path(spool)).st_size == len(want)
    assert os.stat(st.spool_path(spool)).st_blocks * 512 <= 4096 + 2 * os.statvfs(st.spool_dir).f_bsize
    cid, stats = st.commit("one range")
    assert cid is not None and stats.logical == len(want)
    fid = repo.tree_of(cid).entries["model.safetensors"].file
    assert repo.open_file(fid).read(0, len(want)) == bytes(want)
    assert os.listdir(st.spool_dir) == []  # the spool and its map went with the commit
    st.close()


def test_an_overlay_survives_reopening_and_a_stash_round_trip(repo, committed):
    want = bytearray((committed / "model.safetensors").read_bytes())
    st = StagingArea.open(repo, "main")
    _write(st, "model.safetensors", 1000, b"ABCD")  # in the tensor's bytes (the header stays valid)
    want[1000:1004] = b"ABCD"
    st.close()
    st = StagingArea.open(repo, "main")  # a new daemon: the row, the spool and the map are found
    spool = st.get("model.safetensors").spool
    ov = st.overlay(spool)
    assert ov is not None and (ov.starts, ov.ends) == ([1000], [1004])
    st.stash("aside")
    assert st.get("model.safetensors").spool is None and os.listdir(st.spool_dir) == []
    st.stash_pop()
    spool = st.get("model.safetensors").spool
    fd = os.open(st.spool_path(spool), os.O_RDONLY)
    try:
        got = st.overlay(spool).read(fd, len(want), 0, len(want), repo.open_file(ov.fid).read)
    finally:
        os.close(fd)
    assert got == bytes(want)
    cid, _stats = st.commit("popped")
    fid = repo.tree_of(cid).entries["model.safetensors"].file
    assert repo.open_file(fid).read(0, len(want)) == bytes(want)
    st.close()


def test_opening_removes_what_a_crashed_commit_left_and_maps_of_no_spool(repo, committed):
    st = StagingArea.open(repo, "main")
    _write(st, "model.safetensors", 0, b"x")
    spool = st.get("model.safetensors").spool
    for name in (f"{spool}.0a0b0c0d.commit", "feedfacefeedface.map"):
        open(st.spool_path(name), "wb").close()
    st.close()
    st = StagingArea.open(repo, "main")
    assert sorted(os.listdir(st.spool_dir)) == sorted([spool, spool + ".map"])
    st.close()


def test_gc_keeps_the_committed_file_an_overlay_reads_once_the_base_moved_past_it(repo, committed):
    want = bytearray((committed / "model.safetensors").read_bytes())
    st = StagingArea.open(repo, "main")
    _write(st, "model.safetensors", 1000, b"x")
    want[1000] = ord("x")
    spool = st.get("model.safetensors").spool
    old = st.overlay(spool).fid
    # Committed while still open for writing: the file stays in its spool, under the overlay,
    # and the new base holds the written file, not the one the overlay reads.
    st.commit("busy", busy={spool})
    assert st.get("model.safetensors").spool == spool
    assert old not in {te.file for te in st.base_entries().values()}
    assert old in repo.pins.get(base_pin("main"))  # gc keeps it even once history moves on
    st.close()
    st = StagingArea.open(repo, "main")
    fd = os.open(st.spool_path(spool), os.O_RDONLY)
    try:
        got = st.overlay(spool).read(fd, len(want), 0, len(want), repo.open_file(old).read)
    finally:
        os.close(fd)
    assert got == bytes(want)
    st.close()


def test_gc_keeps_the_committed_file_a_map_with_a_damaged_record_names(repo, committed):
    """The file answers EIO until someone repairs it, but what its header names stays, so the
    committed bytes are still there to repair it from."""
    st = StagingArea.open(repo, "main")
    for k in range(3):
        _write(st, "model.safetensors", 1000 + 100 * k, b"x")
    spool = st.get("model.safetensors").spool
    old = st.overlay(spool).fid
    st.commit("busy", busy={spool})
    st.close()
    path = map_path(st.spool_path(spool))
    data = bytearray(open(path, "rb").read())
    data[60] ^= 0xFF  # inside the first record; more records follow
    open(path, "wb").write(bytes(data))
    st = StagingArea.open(repo, "main")
    with pytest.raises(OSError):
        st.overlay(spool)
    assert old in committed_under(st, {spool})
    st.close()
