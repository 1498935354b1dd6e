"""The refs of a remote mount's repository are coralfs.remote.refs.RemoteRefs with writes
refused (one RefsContainer over a BlobStore, not a second read-only copy of it)."""

from __future__ import annotations

import pytest

from coralfs.objects.errors import CoralError
from coralfs.objects.refs import HEADS
from coralfs.objects.repository import Repository
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.store import open_remote_repository
from tests.remote.test_remote_store import pushed  # noqa: F401  (the fixture)


def test_remote_repository_refs_read_and_refuse_writes(pushed):  # noqa: F811
    r = open_remote_repository(f"file://{pushed['remote']}", cache_dir=str(pushed["tmp"] / "c"))
    try:
        assert isinstance(r.refs, RemoteRefs) and r.refs.read_only
        local = Repository.open(pushed["repo"])
        assert r.branches() == local.branches() and r.head_branch() == local.head_branch()
        before = r.refs.list(HEADS)
        for write in (lambda: r.refs.set_if_equals(HEADS + "main", before["main"], None, "x"),
                      lambda: r.refs.write_head("ref: refs/heads/other\n"),
                      lambda: r.refs.append_log_line(HEADS + "main", "x\n"),
                      lambda: r.create_branch("new", "main")):
            with pytest.raises(CoralError, match=r"refs of file://.* are read-only here; move them with `coralfs push`"):
                write()
        assert r.refs.list(HEADS) == before
        assert RemoteRefs(r.refs.blobs).list(HEADS) == before   # nothing reached the remote
    finally:
        r.store.close()


def test_remote_refs_run_every_request_through_call(pushed):  # noqa: F811
    r = open_remote_repository(f"file://{pushed['remote']}", cache_dir=str(pushed["tmp"] / "c"))
    seen: list[str] = []

    def call(what, fn, *args):
        seen.append(what)
        return fn(*args)

    refs = RemoteRefs(r.refs.blobs, call=call)
    try:
        assert refs.list(HEADS) == r.refs.list(HEADS)
        assert "refs/heads/" in seen and HEADS + "main" in seen
    finally:
        r.store.close()
