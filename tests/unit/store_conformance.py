"""The ObjectStore contract as tests: every store (memory, disk, later remote object
stores) subclasses StoreConformance with its own ``make`` and runs all of it.

Not collected by itself (the name does not start with Test); tests/unit/test_store.py
runs it against MemoryStore and DiskStore.
"""

from __future__ import annotations

import threading

import pytest

from coralfs.objects import codecs
from coralfs.objects.errors import ObjectNotFound
from coralfs.objects.ids import ObjectId, hash_bytes
from coralfs.objects.stores import ObjectStore


class StoreConformance:
    def make(self, tmp_path) -> ObjectStore:
        raise NotImplementedError

    def frame(self, data: bytes):
        oid = hash_bytes(data)
        return oid, codecs.encode(data, oid, literal=True)

    def filled(self, tmp_path, n: int = 40) -> tuple[ObjectStore, dict[ObjectId, bytes]]:
        s = self.make(tmp_path)
        frames = {}
        for i in range(n):
            oid, fr = self.frame(str(i).encode())
            s.put(oid, fr)
            frames[oid] = fr
        return s, frames

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

    def test_every_read_of_a_missing_object_names_it(self, tmp_path):
        s = self.make(tmp_path)
        oid, fr = self.frame(b"absent")
        for read in (s.get, lambda o: s.get_head(o, 8), s.size, s.age, lambda o: s.replace(o, fr)):
            with pytest.raises(ObjectNotFound, match=oid.hex()):
                read(oid)
        assert not s.has(oid)  # replace did not create it
        s.delete(oid)  # deleting what is absent is fine (a sweep that races another)

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

    def test_get_head(self, tmp_path):
        s = self.make(tmp_path)
        oid, fr = self.frame(b"head" * 50)
        s.put(oid, fr)
        assert s.get_head(oid, codecs.HEADER_SIZE) == fr[:codecs.HEADER_SIZE]
        assert codecs.parse_header(s.get_head(oid, codecs.HEADER_SIZE), oid).decoded_len == 200
        assert s.get_head(oid, len(fr) + 100) == fr  # a short frame comes back whole

    def test_iter_prefix(self, tmp_path):
        s, ids = self.filled(tmp_path)
        hexes = {o.hex(): o for o in ids}
        for h in sorted(hexes)[:10]:
            for n in (1, 2, 3, 4, 7, 64):
                want = {o for x, o in hexes.items() if x.startswith(h[:n])}
                assert set(s.iter_prefix(h[:n])) == want, (h, n)
        absent = next(p for p in (f"{i:04x}" for i in range(1 << 16)) if not any(x.startswith(p) for x in hexes))
        assert list(s.iter_prefix(absent)) == []
        for bad in ("", "AB", "../x", "0" * 65):
            with pytest.raises(ValueError):
                list(s.iter_prefix(bad))

    def test_iteration_sees_each_object_once(self, tmp_path):
        s, ids = self.filled(tmp_path)
        listed = list(s)
        assert len(listed) == len(ids) and set(listed) == set(ids)

    def test_replace_swaps_the_frame_and_keeps_the_object(self, tmp_path):
        # Reverse deltas: the parent's chunk is re-encoded (same content, same id).
        s = self.make(tmp_path)
        data = b"parent chunk " * 400
        oid = hash_bytes(data)
        literal = codecs.encode(data, oid, literal=True)
        packed = codecs.encode(data, oid, level=3)
        assert packed != literal
        s.put(oid, literal)
        s.replace(oid, packed)
        assert s.get(oid) == packed and s.size(oid) == len(packed)
        assert codecs.decode(s.get(oid), oid) == data
        assert s.get_head(oid, codecs.HEADER_SIZE) == packed[:codecs.HEADER_SIZE]
        assert list(s) == [oid] and s.has(oid)
        assert s.put(oid, literal) is False and s.get(oid) == packed  # still write-once
        s.sync_object(oid)
        s.sync()
        assert s.get(oid) == packed

    def test_readers_see_the_old_frame_or_the_new_during_replace(self, tmp_path):
        s = self.make(tmp_path)
        data = bytes(range(256)) * 64
        oid = hash_bytes(data)
        frames = [codecs.encode(data, oid, literal=True), codecs.encode(data, oid, level=1)]
        s.put(oid, frames[0])
        seen: set[bytes] = set()
        done = threading.Event()

        def read() -> None:
            while not done.is_set():
                seen.add(s.get(oid))

        t = threading.Thread(target=read)
        t.start()
        try:
            for i in range(200):
                s.replace(oid, frames[(i + 1) % 2])
        finally:
            done.set()
            t.join()
        assert seen <= set(frames), "a reader saw a frame that is neither the old nor the new"
        assert codecs.decode(s.get(oid), oid) == data

    def test_sync_object_then_sync(self, tmp_path):
        s, ids = self.filled(tmp_path, 5)
        for oid in ids:
            s.sync_object(oid)
        s.sync()
        assert {o: s.get(o) for o in s} == ids
