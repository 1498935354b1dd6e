"""The BlobStore contract as tests. Each backend's module defines a ``remote`` fixture
(a tests.remote.conftest.Remote) and a ``class TestX(BlobConformance)``; not collected by
itself (the name does not start with Test)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from coralfs.remote.blobs import BlobNotFound, BlobStore, PreconditionFailed, RemoteError

ODD_KEYS = ["with space", "ünïcödé/ключ/鍵", "plus+equals=amp&", "at@colon:semi;comma,", "percent%20literal",
            "tilde~bang!dollar$quote'paren()star*", "hash#question?", "brackets[]{}^`|"]


class BlobConformance:
    @pytest.fixture
    def blobs(self, remote) -> BlobStore:
        return remote.open()

    def test_round_trip_and_overwrite(self, blobs):
        blobs.put("refs/heads/main", b"one")
        assert blobs.get("refs/heads/main") == b"one"
        blobs.put("refs/heads/main", b"two, longer")
        assert blobs.get("refs/heads/main") == b"two, longer"
        blobs.put("empty", b"")
        assert blobs.get("empty") == b""
        assert blobs.head("empty").size == 0

    def test_absent_keys(self, blobs):
        with pytest.raises(BlobNotFound) as e:
            blobs.get("no/such/key")
        assert e.value.key == "no/such/key"
        with pytest.raises(BlobNotFound):
            blobs.get_range("no/such/key", 0, 10)
        assert blobs.head("no/such/key") is None
        blobs.delete("no/such/key")   # a no-op, no error

    def test_get_range(self, blobs):
        data = bytes(range(256)) * 40
        blobs.put("r", data)
        assert blobs.get_range("r", 0, 10) == data[:10]
        assert blobs.get_range("r", 1000, 1234) == data[1000:2234]
        assert blobs.get_range("r", len(data) - 5, 5) == data[-5:]
        assert blobs.get_range("r", len(data) - 5, 100) == data[-5:]   # fewer, at the end only
        assert blobs.get_range("r", len(data), 10) == b""
        assert blobs.get_range("r", len(data) + 100, 10) == b""
        assert blobs.get_range("r", 7, 0) == b""

    def test_get_range_view_reads_what_get_range_reads(self, blobs):
        data = bytes(range(256)) * 40
        blobs.put("r", data)
        for start, n in [(0, 10), (1000, 1234), (len(data) - 5, 100), (len(data), 10), (7, 0)]:
            assert bytes(blobs.get_range_view("r", start, n)) == blobs.get_range("r", start, n)
        with pytest.raises(BlobNotFound):
            blobs.get_range_view("absent", 0, 10)

    def test_head_and_version_tokens(self, blobs):
        t1 = blobs.put("k", b"first")
        h1 = blobs.head("k")
        assert h1.size == 5 and h1.etag == t1 and t1
        t2 = blobs.put("k", b"second!")
        h2 = blobs.head("k")
        assert h2.size == 7 and h2.etag == t2
        assert t2 != t1

    def test_put_if_create_only(self, blobs):
        t = blobs.put_if("refs/heads/main", b"c1", None)
        assert blobs.head("refs/heads/main").etag == t
        with pytest.raises(PreconditionFailed) as e:
            blobs.put_if("refs/heads/main", b"c2", None)
        assert e.value.key == "refs/heads/main"
        assert blobs.get("refs/heads/main") == b"c1"

    def test_put_if_compare_and_swap(self, blobs):
        t1 = blobs.put("ref", b"c1")
        t2 = blobs.put_if("ref", b"c2", t1)
        assert blobs.get("ref") == b"c2" and blobs.head("ref").etag == t2
        with pytest.raises(PreconditionFailed):
            blobs.put_if("ref", b"c3", t1)   # stale token
        assert blobs.get("ref") == b"c2"
        with pytest.raises(PreconditionFailed):
            blobs.put_if("absent-ref", b"x", t2)   # a token for a blob that is not there
        assert blobs.head("absent-ref") is None
        t3 = blobs.put_if("ref", b"c3", t2)
        assert blobs.get("ref") == b"c3" and t3 != t2

    def test_concurrent_put_if_exactly_one_wins(self, remote):
        a, b = remote.open(), remote.open()

        def push(store: BlobStore, name: str, key: str, base: str, barrier: threading.Barrier,
                 results: dict[str, str]) -> None:
            barrier.wait()
            try:
                store.put_if(key, name.encode() * 3, base)
                results[name] = "won"
            except PreconditionFailed:
                results[name] = "lost"

        for rnd in range(8):
            key = f"refs/heads/race-{rnd}"
            base = a.put(key, b"base")
            barrier = threading.Barrier(2)
            results: dict[str, str] = {}
            threads = [threading.Thread(target=push, args=(s, n, key, base, barrier, results))
                       for s, n in ((a, "a"), (b, "b"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(results.values()) == ["lost", "won"], results
            winner = next(n for n, r in results.items() if r == "won")
            assert a.get(key) == winner.encode() * 3

    def test_list_with_prefix(self, blobs):
        for k in ("packs/pack-aa.pack", "packs/pack-aa.idx", "packs/pack-b.pack", "packsx", "refs/heads/main",
                  "refs/heads/dev/x"):
            blobs.put(k, b"1")
        assert sorted(blobs.list("packs/")) == ["packs/pack-aa.idx", "packs/pack-aa.pack", "packs/pack-b.pack"]
        assert sorted(blobs.list("packs/pack-a")) == ["packs/pack-aa.idx", "packs/pack-aa.pack"]
        assert sorted(blobs.list("packs")) == ["packs/pack-aa.idx", "packs/pack-aa.pack", "packs/pack-b.pack", "packsx"]
        assert sorted(blobs.list("refs/heads/")) == ["refs/heads/dev/x", "refs/heads/main"]
        assert len(list(blobs.list())) == 6
        assert list(blobs.list("nothing/")) == []

    def test_list_paginates_past_1000(self, blobs):
        keys = [f"many/{i:05d}" for i in range(1100)]
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda k: blobs.put(k, b"x"), keys))
        blobs.put("other", b"y")
        assert sorted(blobs.list("many/")) == keys
        assert len(list(blobs.list())) == 1101

    def test_delete_is_idempotent(self, blobs):
        blobs.put("d/x", b"1")
        blobs.delete("d/x")
        assert blobs.head("d/x") is None
        blobs.delete("d/x")
        assert list(blobs.list("d/")) == []

    def test_large_blob(self, blobs):
        data = os.urandom(40 << 20)
        blobs.put("packs/big.pack", data)
        assert blobs.head("packs/big.pack").size == len(data)
        assert blobs.get("packs/big.pack") == data
        assert blobs.get_range("packs/big.pack", (17 << 20) + 3, 1 << 20) == data[(17 << 20) + 3:(18 << 20) + 3]

    def test_blob_past_the_multipart_size(self, blobs):
        """70 MiB: cloud backends send it in parts (over 64 MiB); readers see one blob."""
        data = os.urandom(70 << 20)
        blobs.put("packs/huge.pack", data)
        assert blobs.head("packs/huge.pack").size == len(data)
        assert blobs.get_range("packs/huge.pack", (64 << 20) - 10, 20) == data[(64 << 20) - 10:(64 << 20) + 10]
        assert blobs.get("packs/huge.pack") == data

    def test_keys_with_odd_characters(self, blobs):
        for i, k in enumerate(ODD_KEYS):
            blobs.put(f"odd/{k}", str(i).encode())
        for i, k in enumerate(ODD_KEYS):
            assert blobs.get(f"odd/{k}") == str(i).encode(), k
            assert blobs.head(f"odd/{k}").size == len(str(i))
        assert sorted(blobs.list("odd/")) == sorted(f"odd/{k}" for k in ODD_KEYS)

    def test_invalid_keys_are_refused(self, blobs):
        for bad in ("", "/abs", "a//b", "../escape", "a/./b", "a/"):
            with pytest.raises(RemoteError):
                blobs.put(bad, b"x")
            with pytest.raises(RemoteError):
                blobs.get(bad)

    def test_prefixes_are_separate(self, remote, blobs):
        other = remote.open(url=remote.sibling("other-repo"))
        blobs.put("refs/heads/main", b"mine")
        other.put("refs/heads/main", b"theirs")
        assert blobs.get("refs/heads/main") == b"mine"
        assert other.get("refs/heads/main") == b"theirs"
        assert list(other.list()) == ["refs/heads/main"]
