"""What the sync tests share: a BlobStore wrapper that counts what it is sent and can
drop the connection at a chosen write (a real store, faults injected at its boundary),
fine-tune series of safetensors checkpoints, repository snapshots, and a counting TCP
proxy that sees what a coralfs subprocess sends an emulator, request by request."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass

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

    def abandon(self, folder: str) -> int:
        return self.inner.abandon(folder)

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


# -- what crosses the socket: a counting TCP proxy ---------------------------------------

@dataclass
class Request:
    """One HTTP/1.1 request as the proxy saw it go from the client to the server."""
    method: str
    target: str          # the request target: /BUCKET/KEY?QUERY (path-style S3)
    head_bytes: int      # request line and headers, with their CRLFs
    body_bytes: int = 0  # the body (a chunked body: its payload; the chunk framing goes to head_bytes)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""


class _RequestParser:
    """Splits the client's side of one connection into requests (keep-alive: several a
    connection; bodies by Content-Length or chunked), counting bytes of each part."""

    def __init__(self, out: list[Request], lock: threading.Lock) -> None:
        self.out, self.lock = out, lock
        self.buf = bytearray()
        self.cur: Request | None = None
        self.left = 0            # body bytes still to come (Content-Length), or of the chunk at hand
        self.chunked = False
        self.state = "head"      # head | body | chunk-size | chunk-data | chunk-crlf | trailer

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self.buf:
            if self.state == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end + 4])
                del self.buf[:end + 4]
                line, *fields = head.decode("latin-1").split("\r\n")
                method, target, _version = line.split(" ", 2)
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)}
                self.cur = Request(method, target, len(head))
                if "chunked" in hdrs.get("transfer-encoding", "").lower():
                    self.state = "chunk-size"
                else:
                    self.left = int(hdrs.get("content-length", "0"))
                    self.state = "body" if self.left else "head"
                    if not self.left:
                        self._done()
            elif self.state in ("body", "chunk-data"):
                take = min(self.left, len(self.buf))
                del self.buf[:take]
                self.cur.body_bytes += take
                self.left -= take
                if self.left:
                    return
                if self.state == "body":
                    self._done()
                    self.state = "head"
                else:
                    self.state = "chunk-crlf"
            elif self.state in ("chunk-size", "chunk-crlf", "trailer"):
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self.buf[:end])
                del self.buf[:end + 2]
                self.cur.head_bytes += end + 2
                if self.state == "chunk-crlf":
                    self.state = "chunk-size"
                elif self.state == "trailer":
                    if not line:
                        self._done()
                        self.state = "head"
                else:
                    self.left = int(line.split(b";")[0], 16)
                    self.state = "chunk-data" if self.left else "trailer"

    def _done(self) -> None:
        with self.lock:
            self.out.append(self.cur)
        self.cur = None


class CountingProxy:
    """A TCP proxy on 127.0.0.1 (a random port) in front of ``upstream`` (http://HOST:PORT):
    every byte is passed on unchanged, and the client's requests are split and counted
    (``requests``); ``received`` counts the bytes the server sent back. Threads only;
    :meth:`stop` closes the listener and every connection and joins the threads."""

    def __init__(self, upstream: str) -> None:
        hostport = upstream.split("://", 1)[1].split("/", 1)[0]
        host, port = hostport.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.requests: list[Request] = []
        self.received = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._spawn(self._accept)

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return   # the listener was closed: stop()
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._socks += [client, server]
            self._spawn(self._pipe, client, server, _RequestParser(self.requests, self._lock))
            self._spawn(self._pipe, server, client, None)

    def _pipe(self, src: socket.socket, dst: socket.socket, parser: _RequestParser | None) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if parser is not None:
                    parser.feed(data)
                else:
                    with self._lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in threads:
            t.join(10)
