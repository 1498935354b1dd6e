"""The staging area of a branch on its own (no mount, no trio): opening (lock, recovery,
following the branch), a look while another process holds it, and crash recovery of a
commit."""

from __future__ import annotations

import os
import sqlite3

import pytest

from coralfs.staging import StagingArea, StagingError, stage_dir, staged_changes


def put(st: StagingArea, path: str, data: bytes) -> None:
    """Write a file into the staging area as a writable mount does: a row, then its spool."""
    e = st.create(path, 0o644)
    with open(st.spool_path(e.spool), "wb") as f:
        f.write(data)
        os.fsync(f.fileno())


class Crash(BaseException):
    """The process dies here."""


def _crash_commit(repo, monkeypatch, after_move: bool) -> None:
    """Stage a file, then commit with the process dying just before or just after the
    branch moves; the staging area is then reopened as a new process would."""
    st = StagingArea.open(repo, "main")
    put(st, "new.txt", b"data")
    original = repo.refs.set_if_equals

    def die(*a, **k):
        if after_move:
            original(*a, **k)
        raise Crash()

    monkeypatch.setattr(repo.refs, "set_if_equals", die)
    with pytest.raises(Crash):
        st.commit("interrupted")
    monkeypatch.setattr(repo.refs, "set_if_equals", original)
    st.close()


def test_a_commit_recorded_before_a_crash_is_finished_on_the_next_open(repo, committed, monkeypatch):
    _crash_commit(repo, monkeypatch, after_move=True)
    st = StagingArea.open(repo, "main")  # recovery
    assert st.base == repo.branch_head("main") and st.changes() == []
    assert "new.txt" in repo.tree_of(st.base).entries
    assert os.listdir(st.spool_dir) == []
    st.close()


def test_a_commit_that_never_moved_the_branch_keeps_the_changes(repo, committed, monkeypatch):
    head = repo.branch_head("main")
    _crash_commit(repo, monkeypatch, after_move=False)
    st = StagingArea.open(repo, "main")
    assert repo.branch_head("main") == head
    assert [c.path for c in st.changes()] == ["new.txt"]
    st.close()


def test_one_daemon_per_staging_area(repo, committed):
    st = StagingArea.open(repo, "main")
    with pytest.raises(StagingError, match="in use"):
        StagingArea.open(repo, "main")
    st.close()


def test_staged_changes_are_readable_while_a_daemon_holds_the_area(repo, committed):
    st = StagingArea.open(repo, "main")
    put(st, "new.txt", b"1")
    assert [c.path for c in staged_changes(repo, "main")] == ["new.txt"]
    st.close()


def test_the_constructor_touches_nothing(repo, committed):
    """Only open() and look() create, lock or recover; the constructor takes their result."""
    db = sqlite3.connect(":memory:")
    st = StagingArea(repo, "main", db)
    assert not os.path.exists(stage_dir(repo, "main"))
    assert st.base is None and st.entries == {}
    db.close()


def test_a_look_neither_locks_nor_recovers(repo, committed, monkeypatch):
    _crash_commit(repo, monkeypatch, after_move=True)
    seen = StagingArea.look(repo, "main")
    assert seen.base != repo.branch_head("main")  # the pending commit is not finished by a look
    assert [c.path for c in seen.changes()] == ["new.txt"]
    st = StagingArea.open(repo, "main")  # a look holds no lock
    assert st.base == repo.branch_head("main") and st.changes() == []
    st.close()
    seen.close()


def test_opening_follows_a_branch_that_moved_when_nothing_is_staged(repo, committed, tmp_path):
    StagingArea.open(repo, "main").close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "y").write_text("2")
    repo.commit_paths([str(tmp_path / "other")], "elsewhere")
    st = StagingArea.open(repo, "main")
    assert st.base == repo.branch_head("main")
    assert st.changes() == [] and st.children("") == ["y"]
    st.close()


def test_opening_rebases_staged_changes_onto_a_branch_that_moved(repo, committed, tmp_path):
    st = StagingArea.open(repo, "main")
    put(st, "x", b"1")
    st.close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "y").write_text("2")
    repo.commit_paths([str(tmp_path / "other")], "elsewhere")
    st = StagingArea.open(repo, "main")
    assert st.base == repo.branch_head("main")
    assert [(c.status, c.path) for c in st.changes()] == [("added", "x")]
    assert {"x", "y"} <= set(st.children("")) and "model.safetensors" not in st.children("")
    st.close()


def test_opening_leaves_a_conflict_for_commit_to_report(repo, committed, tmp_path):
    st = StagingArea.open(repo, "main")
    put(st, "sub/notes.txt", b"mine")
    st.close()
    (tmp_path / "other" / "sub").mkdir(parents=True)
    (tmp_path / "other" / "sub" / "notes.txt").write_text("theirs")
    repo.commit_paths([str(tmp_path / "other")], "elsewhere")
    head = repo.branch_head("main")
    st = StagingArea.open(repo, "main")  # no error here: the conflict is commit's to name
    assert st.base != head
    with pytest.raises(StagingError, match="both changed sub/notes.txt"):
        st.commit("mine")
    assert repo.branch_head("main") == head
    st.close()
