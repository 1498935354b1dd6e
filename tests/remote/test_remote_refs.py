"""Remote refs: the RefsContainer contract (tests/unit/refs_conformance.py) over a
BlobStore's conditional writes, and what is specific to refs in a remote."""

from __future__ import annotations

import os

import pytest

from coralfs.objects.ids import ObjectId
from coralfs.objects.refs import HEAD, BadRef, RefMoved
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.url import open_blobs
from tests.unit.refs_conformance import RefsConformance

A = ObjectId(b"\x01" * 32)
B = ObjectId(b"\x02" * 32)


def file_blobs(tmp_path):
    d = tmp_path / "remote"
    d.mkdir(exist_ok=True)
    return open_blobs(f"file://{d}")


class TestRemoteRefsOnFile(RefsConformance):
    def make(self, tmp_path):
        return RemoteRefs(file_blobs(tmp_path))


def test_refs_have_the_text_of_local_refs(tmp_path):
    blobs = file_blobs(tmp_path)
    refs = RemoteRefs(blobs)
    refs.set_if_equals("refs/heads/main", None, A, "push")
    refs.set_symbolic(HEAD, "refs/heads/main", "init")
    assert blobs.get("refs/heads/main") == (A.hex() + "\n").encode()
    assert blobs.get("HEAD") == b"ref: refs/heads/main\n"
    assert refs.read(HEAD) == A


def test_delete_leaves_a_tombstone_that_reads_as_absent(tmp_path):
    blobs = file_blobs(tmp_path)
    refs = RemoteRefs(blobs)
    refs.set_if_equals("refs/heads/x", None, A, "push")
    refs.delete("refs/heads/x", A, "deleted")
    assert blobs.get("refs/heads/x") == b""
    assert refs.read("refs/heads/x") is None and refs.list("refs/heads/") == {}
    refs.set_if_equals("refs/heads/x", None, B, "again")   # a tombstone is absent to a create
    assert refs.read("refs/heads/x") == B


def test_a_writer_between_read_and_swap_makes_the_swap_fail(tmp_path):
    """The conditional write, not the comparison, decides: a ref rewritten to the very
    value the swap expects (A -> B -> A) still changes its version, and the swap re-reads."""
    blobs = file_blobs(tmp_path)
    refs = RemoteRefs(blobs)
    refs.set_if_equals("refs/heads/main", None, A, "push")
    info = blobs.head("refs/heads/main")
    os.utime(os.path.join(blobs.root, "refs/heads/main"), ns=(1, 1))  # a new version on disk
    assert blobs.head("refs/heads/main").etag != info.etag
    from coralfs.remote.blobs import PreconditionFailed
    with pytest.raises(PreconditionFailed):
        blobs.put_if("refs/heads/main", b"x", info.etag)
    refs.set_if_equals("refs/heads/main", A, B, "next")   # re-reads the new version and wins
    assert refs.read("refs/heads/main") == B
    with pytest.raises(RefMoved):
        refs.set_if_equals("refs/heads/main", A, B, "stale")


def test_damaged_remote_ref_is_named(tmp_path):
    blobs = file_blobs(tmp_path)
    blobs.put("refs/heads/bad", b"\xff\xfe")
    blobs.put("refs/heads/short", b"abc\n")
    refs = RemoteRefs(blobs)
    good, bad = refs.scan("refs/heads/")
    assert good == {} and sorted(e.name for e in bad) == ["refs/heads/bad", "refs/heads/short"]
    with pytest.raises(BadRef):
        refs.read("refs/heads/short")


class _LostAnswer:
    """A store whose first conditional write is applied but answers as if it failed (the
    answer lost, the retried request refused by its precondition)."""

    def __init__(self, blobs):
        self._blobs, self.lost = blobs, 0

    def __getattr__(self, name):
        return getattr(self._blobs, name)

    def put_if(self, key, data, etag):
        from coralfs.remote.blobs import PreconditionFailed
        self._blobs.put_if(key, data, etag)
        if not self.lost:
            self.lost += 1
            raise PreconditionFailed("test", key)


def test_a_write_applied_whose_answer_was_lost_is_success(tmp_path):
    blobs = file_blobs(tmp_path)
    RemoteRefs(blobs).set_if_equals("refs/heads/main", None, A, "push")
    lossy = _LostAnswer(blobs)
    RemoteRefs(lossy).set_if_equals("refs/heads/main", A, B, "push")  # no RefMoved
    assert lossy.lost == 1
    assert RemoteRefs(blobs).read("refs/heads/main") == B
