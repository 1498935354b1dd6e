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


class TestDiskStoreInABatch(StoreConformance):
    """A DiskStore inside batch() (fetch and clone) keeps the whole contract."""

    def make(self, tmp_path):
        import contextlib
        root = tmp_path / "objects"
        root.mkdir()
        s = DiskStore(str(root))
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(s.batch())
        return s

    def teardown_method(self, method):
        stack = getattr(self, "_stack", None)
        if stack is not None:
            stack.close()


def _frame(data: bytes):
    from coralfs.objects import codecs
    from coralfs.objects.ids import hash_bytes
    oid = hash_bytes(data)
    return oid, codecs.encode(data, oid, literal=True)


def _named(root) -> set[str]:
    return {d + f for d in os.listdir(root) if len(d) == 2 for f in os.listdir(os.path.join(root, d))
            if not f.startswith(".")}


def test_a_batch_names_objects_only_once_they_are_flushed(tmp_path):
    root = tmp_path / "objects"
    root.mkdir()
    s = DiskStore(str(root))
    frames = [_frame(f"object {i}".encode() * 100) for i in range(12)]
    with s.batch():
        for oid, fr in frames:
            assert s.put(oid, fr)
            assert not s.put(oid, fr)                   # write-once, pending or not
        assert _named(root) == set()                    # nothing has its name yet ...
        for oid, fr in frames:                          # ... and everything reads back
            assert s.has(oid) and s.get(oid) == fr and s.size(oid) == len(fr)
        hidden = [f for d, _, fs in os.walk(root) for f in fs if f.startswith(".tmp")]
        assert len(hidden) == len(frames)
    assert _named(root) == {o.hex() for o, _ in frames}
    assert [f for d, _, fs in os.walk(root) for f in fs if f.startswith(".tmp")] == []
    for oid, fr in frames:
        h = oid.hex()
        assert open(root / h[:2] / h[2:], "rb").read() == fr
        assert not os.stat(root / h[:2] / h[2:]).st_mode & 0o222


def test_a_batch_flushes_every_flush_bytes_and_in_sync(tmp_path):
    root = tmp_path / "objects"
    root.mkdir()
    s = DiskStore(str(root))
    frames = [_frame(bytes([i]) * 5000) for i in range(6)]
    with s.batch(flush_bytes=2 * len(frames[0][1])):
        for oid, fr in frames[:4]:
            s.put(oid, fr)
        assert _named(root) == {o.hex() for o, _ in frames[:4]}   # two flushes of two
        s.put(*frames[4])
        assert frames[4][0].hex() not in _named(root)
        s.sync()                                                  # a ref may move now: flushed
        assert frames[4][0].hex() in _named(root)
        s.put(*frames[5])
    assert _named(root) == {o.hex() for o, _ in frames}


def test_a_batch_killed_before_its_flush_leaves_no_objects(tmp_path):
    import subprocess
    import sys
    root = tmp_path / "objects"
    root.mkdir()
    code = (
        "import os, sys\n"
        "from coralfs.objects.stores import DiskStore\n"
        "from tests.unit.test_store import _frame\n"
        "s = DiskStore(sys.argv[1])\n"
        "with s.batch():\n"
        "    for i in range(5):\n"
        "        s.put(*_frame(b'killed %d' % i))\n"
        "    os._exit(9)\n")
    p = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True)
    assert p.returncode == 9, p.stderr
    s = DiskStore(str(root))
    assert list(s) == [] and _named(root) == set()     # hidden temp files only, never objects


def test_a_write_error_found_by_the_batch_flush_names_no_object(tmp_path, monkeypatch):
    """syncfs reporting EIO is an error, not a reason to fall back to sync() (which reports
    nothing) and rename the objects as if their bytes were on disk."""
    import ctypes
    import errno

    from coralfs.objects import durable

    def failing_syncfs(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    root = tmp_path / "objects"
    root.mkdir()
    s = DiskStore(str(root))
    frames = [_frame(f"object {i}".encode() * 100) for i in range(3)]
    monkeypatch.setattr(durable, "_SYNCFS", failing_syncfs)
    with pytest.raises(OSError) as e:
        with s.batch():
            for oid, fr in frames:
                s.put(oid, fr)
    assert e.value.errno == errno.EIO
    assert _named(root) == set()


@pytest.mark.parametrize("batched", [False, True])
def test_a_fan_out_directory_removed_after_a_write_is_made_again(tmp_path, batched):
    """The store remembers the fan-out directories it wrote to (and the mode their files
    take); one removed since (empty, by a sweep) is made again on the next write."""
    import contextlib
    root = tmp_path / "objects"
    root.mkdir(mode=0o750)
    s = DiskStore(str(root))
    a, fa = _frame(b"first" * 100)
    s.put(a, fa)
    s.sync()
    d = root / a.hex()[:2]
    os.unlink(d / a.hex()[2:])
    os.rmdir(d)
    with s.batch() if batched else contextlib.nullcontext():
        assert s.put(a, fa)
    s.sync()
    assert open(d / a.hex()[2:], "rb").read() == fa
    assert os.stat(d / a.hex()[2:]).st_mode & 0o777 == 0o440   # the directory's bits, read-only


def test_write_temp_applies_readonly_to_an_inherited_mode_and_refuses_it_with_a_mode(tmp_path):
    import stat

    from coralfs.objects.durable import write_temp
    tmp = write_temp(str(tmp_path), b"x", inherited=0o664, readonly=True, sync=False)
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o444
    tmp = write_temp(str(tmp_path), b"x", inherited=0o664, sync=False)
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o664
    with pytest.raises(ValueError):
        write_temp(str(tmp_path), b"x", inherited=0o664, mode=0o600, sync=False)
    assert len(os.listdir(tmp_path)) == 2   # nothing left of the refused one
