"""Ref names, compare-and-swap, reflog."""

from __future__ import annotations

import pytest

from coralfs.objects.ids import ObjectId
from coralfs.objects.refs import InvalidRefName, RefContainer, RefMoved, check_ref_name

A = ObjectId(b"\x01" * 32)
B = ObjectId(b"\x02" * 32)
C = ObjectId(b"\x03" * 32)


@pytest.mark.parametrize("name", ["main", "feature/x", "v1.2.0", "exp-3_lr=2e-5", "a/b/c"])
def test_good_names(name):
    assert check_ref_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a..b", "../etc", "/abs", "a/", "a.", "a.lock", "a/.hidden",
                                  "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "@", "a@{1}", "x\x01",
                                  "HEAD", "a//b"])
def test_bad_names(name):
    with pytest.raises(InvalidRefName):
        check_ref_name(name)


def test_cas_moves_and_refuses(tmp_path):
    refs = RefContainer(str(tmp_path))
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


def test_delete_and_list(tmp_path):
    refs = RefContainer(str(tmp_path))
    refs.set_if_equals("refs/heads/a", None, A, "x")
    refs.set_if_equals("refs/heads/f/b", None, B, "x")
    assert refs.list("refs/heads/") == {"a": A, "f/b": B}
    refs.set_if_equals("refs/heads/a", A, None, "delete")
    assert refs.list("refs/heads/") == {"f/b": B}


def test_symbolic_head(tmp_path):
    refs = RefContainer(str(tmp_path))
    refs.set_symbolic("HEAD", "refs/heads/main", "init")
    assert refs.head_target() == "refs/heads/main"
    assert refs.read("HEAD") is None
    refs.set_if_equals("refs/heads/main", None, A, "c")
    assert refs.read("HEAD") == A
    refs.set_detached(B, "detach")
    assert refs.head_target() is None and refs.read("HEAD") == B


def test_ref_names_cannot_escape(tmp_path):
    refs = RefContainer(str(tmp_path / "r"))
    with pytest.raises(InvalidRefName):
        refs.set_if_equals("refs/heads/../../evil", None, A, "x")
    with pytest.raises(InvalidRefName):
        refs.set_if_equals("refs/other/x", None, A, "x")
    assert not (tmp_path / "evil").exists()
