"""Ref names; the refs conformance class (refs_conformance.py: CAS, delete, reflog, name
validation) on disk and memory refs; the interface's abstract methods."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coralfs.objects.ids import ObjectId
from coralfs.objects.refs import DiskRefs, InvalidRefName, MemoryRefs, RefsContainer, check_ref_name
from tests.unit.refs_conformance import RefsConformance

A = ObjectId(b"\x01" * 32)
BACKEND = {"read_raw", "raw_refs", "set_if_equals", "write_head", "append_log_line", "read_log", "log_names"}


@pytest.mark.parametrize("name", ["main", "feature/x", "v1.2.0", "exp-3_lr=2e-5", "a/b/c"])
def test_good_names(name):
    assert check_ref_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a..b", "../etc", "/abs", "a/", "a.", "a.lock", "a/.hidden",
                                  "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "@", "a@{1}", "x\x01",
                                  "HEAD", "a//b"])
def test_bad_names(name):
    with pytest.raises(InvalidRefName):
        check_ref_name(name)


class TestDiskRefs(RefsConformance):
    def make(self, tmp_path):
        return DiskRefs(str(tmp_path))

    def test_ref_names_cannot_escape(self, tmp_path):
        refs = DiskRefs(str(tmp_path / "r"))
        with pytest.raises(InvalidRefName):
            refs.set_if_equals("refs/heads/../../evil", None, A, "x")
        with pytest.raises(InvalidRefName):
            refs.set_if_equals("refs/other/x", None, A, "x")
        assert not (tmp_path / "evil").exists()

    def test_lock_files_are_not_refs_and_a_deleted_ref_leaves_none(self, tmp_path):
        refs = self.make(tmp_path)
        refs.set_if_equals("refs/heads/a", None, A, "x")
        assert (tmp_path / "refs" / "heads" / "a.lock").exists()
        assert refs.scan("refs/heads/") == ({"a": A}, [])
        refs.delete("refs/heads/a", A, "x")
        assert list((tmp_path / "refs" / "heads").iterdir()) == []


class TestMemoryRefs(RefsConformance):
    def make(self, tmp_path):
        return MemoryRefs()


def _complete() -> dict:
    def it(self, *a) -> Iterator:
        return iter(())
    body = {m: (lambda self, *a, **k: None) for m in BACKEND}
    body["raw_refs"] = body["log_names"] = it
    return body


def test_what_a_backend_implements_is_abstract():
    assert RefsContainer.__abstractmethods__ == BACKEND
    type("Complete", (RefsContainer,), _complete())()


@pytest.mark.parametrize("missing", sorted(BACKEND))
def test_a_refs_backend_missing_any_method_cannot_be_instantiated(missing):
    body = _complete()
    del body[missing]
    with pytest.raises(TypeError, match=missing):
        type(f"No_{missing}", (RefsContainer,), body)()
