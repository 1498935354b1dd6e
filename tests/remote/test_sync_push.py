"""push against a file:// remote: what crosses (only what the remote lacks, frames as
stored), refs by compare-and-swap (non-fast-forward refused with exit code 4), and an
interrupted push that resumes re-sending at most one pack."""

from __future__ import annotations

import os

import pytest

from coralfs import Repository
from coralfs.objects.refs import TAGS
from coralfs.remote import layout
from coralfs.remote.blobs import RemoteUnavailable
from coralfs.remote.file import ABANDONED_AFTER
from coralfs.remote.packs import PACKS, decode_index
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.sync import RemoteObjects, RemoteRefMoved, clone, push
from tests.remote.sync_helpers import CountingBlobs, checkpoint, exports, make_repo

MAIN = "refs/heads/main"


def test_push_then_clone_gives_every_commit_byte_identical(tmp_path):
    repo, cks = make_repo(tmp_path, steps=3)
    blobs = CountingBlobs(str(tmp_path / "remote"))
    res = push(repo, blobs, "origin", [MAIN])
    assert res.updates[0].status == "new" and res.packs == 1
    assert blobs.get(layout.MARKER) == b'{"format": 1}\n'
    assert blobs.get("HEAD") == b"ref: refs/heads/main\n"
    assert blobs.get(MAIN) == (repo.branch_head("main").hex() + "\n").encode()
    assert b"[core]\nformat = 1" in blobs.get(layout.CONFIG)
    # frames as they are stored: the bucket holds exactly the local stored bytes
    local = sum(repo.store.size(o) for o in repo.store)
    assert blobs.pack_bytes == local
    assert repo.refs.read("refs/remotes/origin/main") == repo.branch_head("main")
    cl, fres = clone(f"file://{tmp_path / 'remote'}", str(tmp_path / "clone"))
    revs = ["main~2", "main~1", "main"]
    assert exports(cl, tmp_path / "a", revs) == exports(repo, tmp_path / "b", revs)
    assert cl.head_branch() == "main" and cl.fsck().ok
    assert cl.config.get("remote.origin.url") == f"file://{tmp_path / 'remote'}"


def test_second_push_sends_no_object_bytes(tmp_path):
    repo, _ = make_repo(tmp_path, steps=2)
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", [MAIN])
    before = blobs.pack_bytes
    res = push(repo, blobs, "origin", [MAIN])
    assert blobs.pack_bytes == before and res.objects == 0 and res.packs == 0
    assert res.updates[0].status == "up-to-date"


def test_a_fine_tune_pushed_after_its_base_sends_only_its_new_stored_bytes(tmp_path):
    repo, _ = make_repo(tmp_path, steps=2)
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", [MAIN])
    have = RemoteObjects(blobs)
    repo.commit_paths([checkpoint(tmp_path / "ft", 5)], "fine-tune")
    new = [o for o in repo.store if o not in have]
    new_stored = sum(repo.store.size(o) for o in new)
    sent_before, all_before = blobs.pack_bytes, blobs.sent_bytes
    res = push(repo, blobs, "origin", [MAIN])
    sent = blobs.pack_bytes - sent_before
    assert res.objects == len(new)
    assert sent == new_stored
    # everything the client wrote (index, ref, reflog too) stays within 1% over
    assert blobs.sent_bytes - all_before <= new_stored * 1.01
    # and that is a delta, far below the checkpoint itself
    assert sent < os.path.getsize(tmp_path / "ft" / "model.safetensors") / 2


def test_non_fast_forward_is_refused_with_exit_code_4_unless_forced(tmp_path):
    a, _ = make_repo(tmp_path, steps=1, name="a")
    url = f"file://{tmp_path / 'remote'}"
    os.makedirs(tmp_path / "remote")
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(a, blobs, "origin", [MAIN])
    b, _ = clone(url, str(tmp_path / "b"))
    a.commit_paths([checkpoint(tmp_path / "a1", 1)], "a's step")
    push(a, blobs, "origin", [MAIN])
    b.commit_paths([checkpoint(tmp_path / "b1", 2)], "b's step")
    on_remote = RemoteRefs(blobs).read(MAIN)
    with pytest.raises(RemoteRefMoved) as e:
        push(b, blobs, "origin", [MAIN])
    assert e.value.exit_code == 4 and "pull first" in str(e.value) and "moved on the remote" in str(e.value)
    assert RemoteRefs(blobs).read(MAIN) == on_remote
    res = push(b, blobs, "origin", [MAIN], force=True)
    assert res.updates[0].status == "forced" and RemoteRefs(blobs).read(MAIN) == b.branch_head("main")


def test_tags_travel_and_annotated_ones_point_at_tag_objects(tmp_path):
    repo, _ = make_repo(tmp_path, steps=2)
    tid = repo.create_tag("v1", "main~1", message="first")
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", [MAIN, TAGS + "v1"])
    assert RemoteRefs(blobs).read(TAGS + "v1") == tid
    cl, _ = clone(f"file://{tmp_path / 'remote'}", str(tmp_path / "clone"))
    assert cl.tags() == {"v1": tid} and cl.resolve("v1") == repo.resolve("main~1")


def _packs_on_remote(blobs) -> dict[str, set]:
    out = {}
    for key in blobs.list(PACKS):
        if key.endswith(".idx"):
            out[key] = {o for o, _off, _n in decode_index(blobs.get(key))}
    return out


@pytest.mark.parametrize("fail_at", ["pack", "idx"])
def test_an_interrupted_push_resumes_resending_at_most_one_pack(tmp_path, monkeypatch, fail_at):
    monkeypatch.setenv("CORALFS_PACK_SIZE", str(96 << 10))  # many small packs
    repo, _ = make_repo(tmp_path, steps=4)
    root = str(tmp_path / "remote")
    state = {"n": 0}

    def fail(key: str, _n: int) -> bool:
        if key.endswith("." + fail_at):
            state["n"] += 1
            return state["n"] == 4   # the connection drops on the 4th pack (or its index)
        return False

    broken = CountingBlobs(root, fail=fail)
    with pytest.raises(RemoteUnavailable):
        push(repo, broken, "origin", [MAIN])
    assert RemoteRefs(broken).read(MAIN) is None    # no ref before all its objects
    first = _packs_on_remote(broken)
    assert len(first) == 3
    journal = os.path.join(repo.path, "remote-journal", "origin.json")
    assert os.path.exists(journal)
    blobs = CountingBlobs(root)
    res = push(repo, blobs, "origin", [MAIN])
    assert res.cleaned == (1 if fail_at == "idx" else 0)   # its own pack left without an index
    after = _packs_on_remote(blobs)
    resent = [k for k in after if k not in first and after[k] & set().union(*first.values())]
    assert resent == []   # nothing already indexed goes again: at most the one in flight
    sent_first = sum(len(s) for s in first.values())
    assert res.objects == len(list(repo.store)) - sent_first
    assert not os.path.exists(journal)
    assert [k for k in blobs.list(PACKS) if k.endswith(".pack") and k[:-5] + ".idx" not in set(blobs.list(PACKS))] == []
    assert RemoteRefs(blobs).read(MAIN) == repo.branch_head("main")
    cl, _ = clone(f"file://{root}", str(tmp_path / "clone"))
    assert cl.fsck().ok
    assert exports(cl, tmp_path / "x", ["main"]) == exports(repo, tmp_path / "y", ["main"])


def test_a_push_never_has_two_pack_bodies_without_their_index(tmp_path, monkeypatch):
    """What a kill -9 at any moment leaves: the bodies begun and not yet indexed, counted
    at the store. At most one, so the next push re-sends at most one pack."""
    import threading
    import time

    monkeypatch.setenv("CORALFS_PACK_SIZE", str(96 << 10))  # many small packs
    repo, _ = make_repo(tmp_path, steps=4)
    blobs = CountingBlobs(str(tmp_path / "remote"))
    open_bodies: set[str] = set()
    most = [0]
    lock = threading.Lock()
    put = blobs.put

    def counted_put(key, data, *a, **kw):
        if key.startswith(PACKS) and key.endswith(".pack"):
            with lock:
                open_bodies.add(key[: -len(".pack")])
                most[0] = max(most[0], len(open_bodies))
            time.sleep(0.02)   # a slow upload: gives a second body the chance to start
        out = put(key, data, *a, **kw)
        if key.startswith(PACKS) and key.endswith(".idx"):
            with lock:
                open_bodies.discard(key[: -len(".idx")])
        return out

    monkeypatch.setattr(blobs, "put", counted_put)
    res = push(repo, blobs, "origin", [MAIN])
    assert res.packs >= 4
    assert most[0] == 1
    assert open_bodies == set()


def test_the_remote_config_carries_the_storage_settings(tmp_path):
    repo = Repository.init(str(tmp_path / "r"))
    repo.config.set("storage.chunk_size", "64k")
    repo.commit_paths([checkpoint(tmp_path / "c", 0)], "one")
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", [MAIN])
    cl, _ = clone(f"file://{tmp_path / 'remote'}", str(tmp_path / "clone"))
    assert cl.config.get("storage.chunk_size") == 64 << 10


def test_a_pack_holds_chunks_first_and_the_structure_together_after_them(tmp_path):
    from coralfs.remote.graph import LEVEL, children
    repo, _ = make_repo(tmp_path, steps=3)
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", [MAIN])
    idx = next(k for k in blobs.list(PACKS) if k.endswith(".idx"))
    by_offset = sorted(decode_index(blobs.get(idx)), key=lambda r: r[1])
    levels = [LEVEL[children(repo, oid)[0]] for oid, _off, _n in by_offset]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == LEVEL["commit"]
    # and every reference points backwards: what an object needs is stored before it
    pos = {oid: i for i, (oid, _o, _n) in enumerate(by_offset)}
    assert all(pos[c] < pos[oid] for oid in pos for c in children(repo, oid)[1])


def test_the_first_push_of_another_branch_makes_it_the_remote_head(tmp_path):
    repo, _ = make_repo(tmp_path, steps=1)
    repo.create_branch("feature")
    blobs = CountingBlobs(str(tmp_path / "remote"))
    push(repo, blobs, "origin", ["refs/heads/feature"])
    assert blobs.get("HEAD") == b"ref: refs/heads/feature\n"
    cl, _ = clone(f"file://{tmp_path / 'remote'}", str(tmp_path / "clone"))
    assert cl.head_branch() == "feature" and cl.branches() == {"feature": repo.branch_head("main")}


def test_the_temp_file_of_a_killed_upload_to_a_directory_remote_goes_with_the_next_push(tmp_path, monkeypatch):
    """A push killed while a pack body was being written leaves that body's hidden temp
    file in the remote directory (listings never show it); the next push removes it with
    the interrupted pack once nobody wrote to it for FileBlobs' ABANDONED_AFTER, and keeps
    a temp file whose writer still runs, or that was written to recently (a writer on
    another host of a shared file system has a pid this host cannot see)."""
    import subprocess
    import sys
    import time
    monkeypatch.setenv("CORALFS_PACK_SIZE", str(96 << 10))
    repo, _ = make_repo(tmp_path, steps=3)
    root = str(tmp_path / "remote")
    with pytest.raises(RemoteUnavailable):   # the journal keeps the pack on its way
        push(repo, CountingBlobs(root, fail=lambda key, _n: key.endswith(".pack")), "origin", [MAIN])
    packs = os.path.join(root, PACKS.rstrip("/"))
    os.makedirs(packs, exist_ok=True)
    write = ("import sys, time; from coralfs.objects.durable import write_temp; "
             "print(write_temp(sys.argv[1], b'x' * 4096), flush=True); time.sleep(float(sys.argv[2]))")

    def writer() -> tuple[subprocess.Popen, str]:
        p = subprocess.Popen([sys.executable, "-c", write, packs, "600"], stdout=subprocess.PIPE, text=True)
        return p, p.stdout.readline().strip()

    (dead, old_tmp), (dead2, recent_tmp) = writer(), writer()
    for p in (dead, dead2):
        p.kill()
        p.wait()
    t = time.time() - ABANDONED_AFTER - 60
    os.utime(old_tmp, (t, t))
    alive, alive_tmp = writer()
    try:
        os.utime(alive_tmp, (t, t))
        push(repo, CountingBlobs(root), "origin", [MAIN])
        assert not os.path.exists(old_tmp)
        assert os.path.exists(recent_tmp) and os.path.exists(alive_tmp)
    finally:
        alive.kill()
        alive.wait()
