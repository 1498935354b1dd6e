"""One conformance class (store_conformance.py), run against every ObjectStore
implementation, and the interface's own guarantee: nothing is optional."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from coralfs.objects.ids import ObjectId
from coralfs.objects.stores import DiskStore, MemoryStore, ObjectStore
from tests.unit.store_conformance import StoreConformance

METHODS = {"has", "put", "get", "get_head", "replace", "sync_object", "size", "age", "delete",
           "__iter__", "iter_prefix", "sync"}


class TestMemoryStore(StoreConformance):
    def make(self, tmp_path):
        return MemoryStore()


class TestDiskStore(StoreConformance):
    def make(self, tmp_path):
        root = tmp_path / "objects"
        root.mkdir()
        return DiskStore(str(root))

    def test_layout_and_no_temp_files_left(self, tmp_path):
        s = self.make(tmp_path)
        oid, fr = self.frame(b"layout")
        s.put(oid, fr)
        h = oid.hex()
        assert os.path.isfile(tmp_path / "objects" / h[:2] / h[2:])
        leftovers = [f for d, _, fs in os.walk(tmp_path) for f in fs if f.startswith(".tmp")]
        assert leftovers == []
        # objects are read-only on disk
        assert not os.stat(tmp_path / "objects" / h[:2] / h[2:]).st_mode & 0o222

    def test_temp_files_and_stray_names_are_not_objects(self, tmp_path):
        s = self.make(tmp_path)
        oid, fr = self.frame(b"real")
        s.put(oid, fr)
        h = oid.hex()
        fan = tmp_path / "objects" / h[:2]
        (fan / ("." + h[3:])).write_bytes(b"a write in progress")
        (fan / ("z" * 62)).write_bytes(b"not hex")
        (tmp_path / "objects" / "README").write_bytes(b"not a fan-out directory")
        assert list(s) == [oid]
        assert list(s.iter_prefix(h[:2])) == [oid]
        assert list(s.iter_prefix(h[:1])) == [oid]


def _complete() -> dict:
    """A body for every method of the interface (what a minimal store must provide)."""
    def it(self) -> Iterator[ObjectId]:
        return iter(())
    body = {m: (lambda self, *a: None) for m in METHODS}
    body["__iter__"] = it
    return body


def test_every_method_of_the_interface_is_abstract():
    assert ObjectStore.__abstractmethods__ == METHODS
    with pytest.raises(TypeError):
        ObjectStore()  # type: ignore[abstract]
    type("Complete", (ObjectStore,), _complete())()  # all of them: it instantiates


@pytest.mark.parametrize("missing", sorted(METHODS))
def test_a_store_missing_any_method_cannot_be_instantiated(missing):
    body = _complete()
    del body[missing]
    partial = type(f"No_{missing}", (ObjectStore,), body)
    with pytest.raises(TypeError, match=missing):
        partial()
