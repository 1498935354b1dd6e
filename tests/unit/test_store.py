"""One conformance class, run against every ObjectStore implementation."""

from __future__ import annotations

import os

import pytest

from coralfs.objects import codecs
from coralfs.objects.errors import ObjectNotFound
from coralfs.objects.ids import hash_bytes
from coralfs.objects.stores import DiskStore, MemoryStore


class StoreConformance:
    def make(self, tmp_path):
        raise NotImplementedError

    def frame(self, data: bytes):
        oid = hash_bytes(data)
        return oid, codecs.encode(data, oid, literal=True)

    def test_put_get_has(self, tmp_path):
        s = self.make(tmp_path)
        oid, fr = self.frame(b"hello")
        assert not s.has(oid)
        assert s.put(oid, fr) is True
        assert s.has(oid)
        assert s.get(oid) == fr
        assert s.size(oid) == len(fr)

    def test_write_once(self, tmp_path):
        s = self.make(tmp_path)
        oid, fr = self.frame(b"x" * 100)
        assert s.put(oid, fr)
        assert s.put(oid, b"other") is False
        assert s.get(oid) == fr

    def test_missing(self, tmp_path):
        s = self.make(tmp_path)
        oid, _ = self.frame(b"nope")
        with pytest.raises(ObjectNotFound) as e:
            s.get(oid)
        assert oid.hex() in str(e.value)

    def test_iter_and_delete(self, tmp_path):
        s = self.make(tmp_path)
        ids = set()
        for i in range(20):
            oid, fr = self.frame(str(i).encode())
            s.put(oid, fr)
            ids.add(oid)
        assert set(s) == ids
        victim = next(iter(ids))
        s.delete(victim)
        assert not s.has(victim)
        assert set(s) == ids - {victim}
        s.sync()

    def test_age(self, tmp_path):
        s = self.make(tmp_path)
        oid, fr = self.frame(b"age")
        s.put(oid, fr)
        assert 0 <= s.age(oid) < 60


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
