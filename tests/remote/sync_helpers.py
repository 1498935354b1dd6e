"""What the sync tests share: a BlobStore wrapper that counts what it is sent and can
drop the connection at a chosen write (a real store, faults injected at its boundary),
fine-tune series of safetensors checkpoints, and repository snapshots."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from safetensors.numpy import save_file

from coralfs import Repository
from coralfs.remote.blobs import BlobStore, RemoteUnavailable
from coralfs.remote.file import FileBlobs
from coralfs.remote.url import parse_url


class Wrapped(BlobStore):
    """A real BlobStore that counts bytes put and read, and raises RemoteUnavailable (as
    a network error would) on the write for which ``fail(key, n)`` is true (n: the count
    of writes so far)."""

    def __init__(self, inner: BlobStore, fail=None) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail = fail
        self.puts: list[str] = []
        self.pack_bytes = 0
        self.sent_bytes = 0   # every byte written: packs, indexes, refs, reflogs, layout
        self.read_bytes = 0

    def _write(self, key: str, data: bytes) -> None:
        if self.fail is not None and self.fail(key, len(self.puts)):
            raise RemoteUnavailable(f"{self.url}: connection reset while writing {key} (injected)")
        self.puts.append(key)
        self.sent_bytes += len(data)
        if key.endswith(".pack"):
            self.pack_bytes += len(data)

    def put(self, key: str, data: bytes) -> str:
        self._write(key, data)
        return self.inner.put(key, data)

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        self._write(key, data)
        return self.inner.put_if(key, data, etag)

    def get(self, key: str) -> bytes:
        data = self.inner.get(key)
        self.read_bytes += len(data)
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = self.inner.get_range(key, start, length)
        self.read_bytes += len(data)
        return data

    def head(self, key: str):
        return self.inner.head(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str = ""):
        return self.inner.list(prefix)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)   # a backend's own attributes (root, ...)


class CountingBlobs(Wrapped):
    """Wrapped over a file:// remote at ``root`` (created if need be)."""

    def __init__(self, root: str, fail=None) -> None:
        os.makedirs(root, exist_ok=True)
        super().__init__(FileBlobs(parse_url(f"file://{root}")), fail)


def checkpoint(d, step: int, n: int = 256) -> str:
    """A fine-tune series: step 0 is random; each step nudges one tensor slightly and
    leaves the others, as training a head on a frozen body does."""
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    body = rng.standard_normal((n, n)).astype(np.float32)
    emb = rng.standard_normal((n, 64)).astype(np.float32)
    head = rng.standard_normal((n, n)).astype(np.float32)
    head += np.float32(1e-3) * step * np.random.default_rng(step).standard_normal((n, n)).astype(np.float32)
    save_file({"body.weight": body, "emb.weight": emb, "head.weight": head}, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"step": step}, f)
    return str(d)


def make_repo(tmp_path, steps: int = 3, name: str = "repo") -> tuple[Repository, list[str]]:
    repo = Repository.init(str(tmp_path / name))
    cks = [checkpoint(tmp_path / f"{name}-ck{i}", i) for i in range(steps)]
    for i, c in enumerate(cks):
        repo.commit_paths([c], f"step {i}")
    return repo, cks


def sha_file(p) -> str:
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def exports(repo: Repository, out, revs: list[str]) -> list[dict[str, str]]:
    """path -> SHA-256 of every file of each revision, as exported."""
    res = []
    for i, rev in enumerate(revs):
        d = os.path.join(str(out), f"export-{i}")
        repo.export(rev, d)
        res.append({os.path.relpath(os.path.join(r, f), d): sha_file(os.path.join(r, f))
                    for r, _, fs in os.walk(d) for f in fs})
    return res


def snapshot(path: str) -> dict[str, bytes]:
    """Every file of a repository (but its session lock) -> its content."""
    out = {}
    for r, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(r, f)
            if f != "sessions.lock":
                with open(p, "rb") as fh:
                    out[os.path.relpath(p, path)] = fh.read()
    return out
