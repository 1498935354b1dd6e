"""The RefsContainer contract as tests: every refs backend (disk, memory, later Redis)
subclasses RefsConformance with its own ``make`` and runs all of it.

Not collected by itself; tests/unit/test_refs.py runs it against DiskRefs and MemoryRefs.
"""

from __future__ import annotations

import threading

import pytest

from coralfs.objects.ids import ObjectId
from coralfs.objects.refs import HEAD, InvalidRefName, RefMoved, RefsContainer

A = ObjectId(b"\x01" * 32)
B = ObjectId(b"\x02" * 32)
C = ObjectId(b"\x03" * 32)
MAIN = "refs/heads/main"


class RefsConformance:
    def make(self, tmp_path) -> RefsContainer:
        raise NotImplementedError

    def test_cas_moves_and_refuses(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/main", None, A, "init")
        assert refs.read("refs/heads/main") == A
        refs.set_if_equals("refs/heads/main", A, B, "next")
        with pytest.raises(RefMoved) as e:
            refs.set_if_equals("refs/heads/main", A, C, "stale")
        assert "moved" in str(e.value)
        assert refs.read("refs/heads/main") == B
        log = refs.reflog("refs/heads/main")
        assert [(x.old, x.new) for x in log] == [(None, A), (A, B)]
        assert log[1].message == "next"

    def test_cas_on_an_absent_ref_and_force(self, tmp_path):
        refs = self.make(tmp_path)
        with pytest.raises(RefMoved):
            refs.set_if_equals(MAIN, A, B, "expects a value that is not there")
        assert refs.read(MAIN) is None and refs.reflog(MAIN) == []
        refs.set_if_equals(MAIN, None, A, "create")
        with pytest.raises(RefMoved):
            refs.set_if_equals(MAIN, None, B, "create again")
        refs.set_if_equals(MAIN, C, B, "forced", force=True)
        assert refs.read(MAIN) == B
        assert [(x.old, x.new) for x in refs.reflog(MAIN)] == [(None, A), (A, B)]

    def test_one_of_racing_swaps_wins(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals(MAIN, None, A, "init")
        won, lost = [], []
        start = threading.Barrier(8)

        def race(i: int) -> None:
            start.wait()
            try:
                refs.set_if_equals(MAIN, A, ObjectId(bytes([0x10 + i]) * 32), f"racer {i}")
                won.append(i)
            except RefMoved:
                lost.append(i)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(lost) == 7
        assert refs.read(MAIN) == ObjectId(bytes([0x10 + won[0]]) * 32)
        assert [x.message for x in refs.reflog(MAIN)] == ["init", f"racer {won[0]}"]

    def test_delete_and_list(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/a", None, A, "x")
        refs.set_if_equals("refs/heads/f/b", None, B, "x")
        assert refs.list("refs/heads/") == {"a": A, "f/b": B}
        refs.set_if_equals("refs/heads/a", A, None, "delete")
        assert refs.list("refs/heads/") == {"f/b": B}

    def test_delete_is_a_swap_and_is_logged(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/tags/v1", None, A, "tag")
        with pytest.raises(RefMoved):
            refs.delete("refs/tags/v1", B, "stale delete")
        assert refs.read("refs/tags/v1") == A
        refs.delete("refs/tags/v1", A, "tag: deleted")
        assert refs.read("refs/tags/v1") is None
        assert refs.scan("refs/tags/") == ({}, [])
        last = refs.reflog("refs/tags/v1")[-1]
        assert (last.old, last.new, last.message) == (A, None, "tag: deleted")

    def test_heads_and_tags_are_listed_apart(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals(MAIN, None, A, "c")
        refs.set_if_equals("refs/tags/v1", None, B, "t")
        refs.set_symbolic(HEAD, MAIN, "init")
        assert refs.scan("refs/heads/") == ({"main": A}, [])
        assert refs.scan("refs/tags/") == ({"v1": B}, [])

    def test_symbolic_head(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_symbolic("HEAD", "refs/heads/main", "init")
        assert refs.head_target() == "refs/heads/main"
        assert refs.read("HEAD") is None
        refs.set_if_equals("refs/heads/main", None, A, "c")
        assert refs.read("HEAD") == A
        refs.set_detached(B, "detach")
        assert refs.head_target() is None and refs.read("HEAD") == B

    def test_no_head_yet(self, tmp_path):
        refs = self.make(tmp_path)
        assert refs.head_target() is None and refs.read(HEAD) is None

    def test_reflog_entries_and_head_mirror(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_symbolic(HEAD, MAIN, "init")
        refs.set_if_equals(MAIN, None, A, "commit (initial): one\nwith\ttabs", who="ann@host")
        refs.set_if_equals("refs/heads/side", None, B, "branch: created")
        refs.set_detached(C, "checkout: moving to c")
        e = refs.reflog(MAIN)[0]
        assert (e.old, e.new, e.who, e.message) == (None, A, "ann@host", "commit (initial): one with tabs")
        assert e.time > 0
        # HEAD's log mirrors the branch it is on, and records its own moves
        assert [(x.old, x.new) for x in refs.reflog(HEAD)] == [(None, None), (None, A), (A, C)]
        assert refs.reflog("refs/heads/nothing") == []
        logs = {name: (entries, bad) for name, entries, bad in refs.all_logs()}
        assert set(logs) == {HEAD, MAIN, "refs/heads/side"}
        assert all(bad is None for _, bad in logs.values())
        assert [x.new for x in logs["refs/heads/side"][0]] == [B]

    @pytest.mark.parametrize("name", ["refs/heads/../../evil", "refs/other/x", "refs/heads/a..b",
                                      "refs/heads/", "heads/main", "refs/tags/x.lock", "refs/heads/a b"])
    def test_names_are_validated(self, tmp_path, name):
        refs = self.make(tmp_path)
        with pytest.raises(InvalidRefName):
            refs.set_if_equals(name, None, A, "x")
        with pytest.raises(InvalidRefName):
            refs.read(name)
        with pytest.raises(InvalidRefName):
            refs.set_symbolic(HEAD, name, "x")
        assert refs.scan("refs/heads/") == ({}, []) and refs.scan("refs/tags/") == ({}, [])
