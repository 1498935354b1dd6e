"""What the cloud backends share: request timeouts and the retry budget read from a
remote's options, the obstore-based BlobStore (S3 and Azure), its error mapping, and the
host-local lock used where a store ignores conditional writes.

Imported only by coralfs.remote.{s3,gcs,azure}; ``import coralfs`` never reaches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from .blobs import BlobInfo, BlobNotFound, BlobStore, PreconditionFailed, RemoteError, RemoteUnavailable
from .file import check_key

log = logging.getLogger(__name__)
T = TypeVar("T")

# Above this a plain put goes multipart (16 MiB parts, 4 at a time). Not lower: on Azurite
# a 32 MiB pack went ~350 MB/s as one Put Blob and 25-70 MB/s as blocks (docs/decisions.md);
# stalls are caught by the read timeout, so a single request needs no size cap for that.
MULTIPART_OVER = 64 << 20
PART = 16 << 20

NATIVE = "native"
LOCAL_LOCK = "local-lock"


@dataclass(frozen=True)
class Limits:
    """Per-request timeouts and the retry budget, from a remote's options (seconds):
    ``connect_timeout``; ``read_timeout`` (no byte for that long: the store stalled;
    ``timeout`` is the same); ``request_timeout`` (the cap on one whole request, so a
    trickle cannot hold a caller either); ``retries`` and ``retry_timeout`` (no new
    attempt after that long)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    request_timeout: float = 600.0
    retries: int = 3
    retry_timeout: float = 60.0

    @classmethod
    def from_options(cls, url: str, options: dict) -> Limits:
        kw = {}
        names = {"connect_timeout": float, "read_timeout": float, "timeout": float, "request_timeout": float,
                 "retries": int, "retry_timeout": float}
        for name, conv in names.items():
            if name in options:
                try:
                    value = conv(options[name])
                except (TypeError, ValueError):
                    raise RemoteError(f"{url}: option {name}={options[name]!r} is not a number") from None
                if value < 0 or (name != "retries" and value == 0):
                    raise RemoteError(f"{url}: option {name}={options[name]!r} must be positive")
                kw["read_timeout" if name == "timeout" else name] = value
        return cls(**kw)


_SECRET_PARAM = re.compile(r"((?:sig|signature|token|key|credential|x-amz-[a-z-]+|x-goog-[a-z-]+)=)[^&\s\"']+", re.I)


def scrub(text: str) -> str:
    """A store's error text without what could be a secret: signed-URL query parameters
    (an Azure SAS, a presigned S3/GCS URL) carry credentials, and messages are printed."""
    return _SECRET_PARAM.sub(r"\1***", text)


def join_key(prefix: str, key: str) -> str:
    check_key(key)
    return f"{prefix}/{key}" if prefix else key


def unreachable(where: str, endpoint: str, key: str, why: str = "") -> RemoteUnavailable:
    tail = f" ({why})" if why else ""
    return RemoteUnavailable(f"{where}: cannot reach {endpoint} for {key}{tail}: is the service running?")


def no_bucket(where: str, bucket: str, kind: str = "bucket") -> RemoteError:
    return RemoteError(f"{where}: {kind} {bucket} does not exist: create it or fix the URL")


def with_retries(fn: Callable[[], T], *, limits: Limits, transient: tuple[type[BaseException], ...],
                 on_give_up: Callable[[BaseException], Exception]) -> T:
    """Call ``fn``; retry what ``transient`` names with jittered exponential backoff, at most
    ``limits.retries`` times and within ``limits.retry_timeout``; then raise ``on_give_up``."""
    deadline = time.monotonic() + limits.retry_timeout
    attempt = 0
    while True:
        try:
            return fn()
        except transient as e:
            attempt += 1
            pause = min(0.1 * 2 ** attempt, 5.0) * (0.5 + random.random() / 2)
            if attempt > limits.retries or time.monotonic() + pause > deadline:
                raise on_give_up(e) from e
            log.info("retrying after %s (attempt %d)", type(e).__name__, attempt)
            time.sleep(pause)


class LocalCasLock:
    """Serialises compare-and-swap writes to one store among the processes of THIS machine
    (an flock'ed file per endpoint+bucket+prefix). Used only where the store ignores
    conditional writes (gcp-storage-emulator ignores ifGenerationMatch); two machines are
    not protected. The Redis lock issue replaces this with a shared lock behind the same
    ``hold`` method."""

    def __init__(self, scope: str) -> None:
        digest = hashlib.sha256(scope.encode()).hexdigest()[:24]
        base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        # Per user: a lock file another user created with mode 0600 could not be opened.
        self.path = os.path.join(base, f"coralfs-cas-{os.getuid()}-{digest}.lock")

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise RemoteError(f"cannot open the lock file {self.path} for {key}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


# obstore runs its requests on one tokio runtime per process, started at the first request;
# a child forked after that inherits the runtime without its threads, and every request
# there waits forever, even on a new store. Refuse instead of wedging.
_RUNTIME_PID: int | None = None


def _check_fork(url: str) -> None:
    global _RUNTIME_PID
    pid = os.getpid()
    if _RUNTIME_PID is None:
        _RUNTIME_PID = pid
    elif _RUNTIME_PID != pid:
        raise RemoteError(f"{url}: this process was forked from one that had used an s3:// or az:// remote, "
                          "and obstore cannot work after that: open remotes only in a process that was started, "
                          "not forked (multiprocessing: use the 'spawn' or 'forkserver' start method)")


class ObstoreBlobs(BlobStore):
    """A BlobStore over one obstore store (S3Store or AzureStore). Subclasses set
    ``endpoint`` and ``credentials`` and build ``self.store``."""

    kind = "bucket"   # "container" for Azure, in messages
    conditional_writes = NATIVE   # obstore sends If-None-Match / If-Match; doctor verifies
    credentials: str | None = None   # where the credentials came from (for doctor), never the secret
    credentials_hint = "check the credentials in the environment"
    endpoint: str

    def __init__(self, url, limits: Limits) -> None:
        self.url = str(url)
        self.bucket = url.bucket
        self.prefix = url.prefix
        self.limits = limits
        self.store = None

    # -- obstore configuration shared by S3 and Azure ------------------------------
    def client_options(self) -> dict:
        lim = self.limits
        return {"allow_http": self.endpoint.startswith("http://"),
                "connect_timeout": timedelta(seconds=lim.connect_timeout),
                "read_timeout": timedelta(seconds=lim.read_timeout),
                "timeout": timedelta(seconds=max(lim.request_timeout, lim.read_timeout))}

    def retry_config(self) -> dict:
        t = self.limits.read_timeout
        return {"max_retries": self.limits.retries, "retry_timeout": timedelta(seconds=self.limits.retry_timeout),
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=min(5.0, t)),
                            "base": 2}}

    # -- error mapping -------------------------------------------------------------------
    def _fail(self, e: BaseException, key: str, *, missing_ok: bool = False) -> Exception:
        """One RemoteError for an obstore exception (``missing_ok``: a 404 names the key)."""
        from obstore import exceptions as ox
        text = str(e)
        if any(code in text for code in ("NoSuchBucket", "ContainerNotFound", "The specified bucket does not exist")):
            return no_bucket(self.url, self.bucket, self.kind)
        if isinstance(e, FileNotFoundError | ox.NotFoundError):
            return BlobNotFound(self.url, key) if missing_ok else no_bucket(self.url, self.bucket, self.kind)
        if isinstance(e, ox.AlreadyExistsError | ox.PreconditionError):
            return PreconditionFailed(self.url, key)
        if isinstance(e, ox.PermissionDeniedError | ox.UnauthenticatedError) or " 403 " in text or " 401 " in text:
            return RemoteError(f"{self.url}: the store refused the credentials ({self.credentials or 'none found'}) "
                               f"for {key}: {self.credentials_hint}")
        status = re.search(r"non-2xx status code: (5\d\d|429)", text)
        if status:
            return RemoteUnavailable(f"{self.url}: {self.endpoint} answered {status.group(1)} for {key} after "
                                     f"{self.limits.retries} retries: the service is failing; try again later")
        if "error sending request" in text or "timed out" in text.lower() or "after" in text and "retries" in text:
            return unreachable(self.url, self.endpoint, key, f"no answer after {self.limits.retries} retries")
        first = text.splitlines()[0] if text else type(e).__name__
        return RemoteError(f"{self.url}: {key}: {scrub(first)[:300]}")

    def _call(self, key: str, fn: Callable[[], T], *, missing_ok: bool = True) -> T:
        from obstore.exceptions import BaseError
        _check_fork(self.url)
        try:
            return fn()
        except (BaseError, FileNotFoundError, OSError, ValueError) as e:
            raise self._fail(e, key, missing_ok=missing_ok) from None

    # -- BlobStore -----------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        import obstore as obs
        check_key(key)
        return self._call(key, lambda: obs.get(self.store, key).bytes().to_bytes())

    def get_range(self, key: str, start: int, length: int) -> bytes:
        out = self._range(key, start, length)
        return out if isinstance(out, bytes) else out.to_bytes()

    def get_range_view(self, key: str, start: int, length: int) -> bytes | memoryview:
        """The range as obstore's own buffer, not copied into bytes (0.4 s of CPU for a
        400 MB clone)."""
        out = self._range(key, start, length)
        return out if isinstance(out, bytes) else memoryview(out)

    def _range(self, key: str, start: int, length: int):
        """One range GET (obstore's buffer), or bytes: empty, or clamped at the end."""
        import obstore as obs
        check_key(key)
        if start < 0 or length < 0:
            raise RemoteError(f"{self.url}: invalid range {start}+{length} of {key}")
        from obstore.exceptions import BaseError
        if length > 0:
            _check_fork(self.url)
            try:
                return obs.get_range(self.store, key, start=start, length=length)
            except (BaseError, OSError, ValueError) as e:
                # A range at or past the end: a 416, or a short body obstore refuses as
                # "range ... but object was only N bytes long"; anything else is an error.
                text = str(e)
                if " 416 " not in text and "Range" not in text and "range" not in text:
                    raise self._fail(e, key, missing_ok=True) from None
        # The contract is "fewer bytes only at the end": clamp to the size.
        info = self.head(key)
        if info is None:
            raise BlobNotFound(self.url, key)
        end = min(start + length, info.size)
        if start >= end:
            return b""
        return self._call(key, lambda: obs.get_range(self.store, key, start=start, end=end).to_bytes())

    def head(self, key: str) -> BlobInfo | None:
        import obstore as obs
        check_key(key)
        try:
            meta = self._call(key, lambda: obs.head(self.store, key))
        except BlobNotFound:
            return None
        return BlobInfo(int(meta["size"]), str(meta.get("e_tag") or meta.get("version") or ""))

    def modified_time(self, key: str) -> float | None:
        """The store's last-modified time of a blob (POSIX seconds), for the clock check."""
        import obstore as obs
        check_key(key)
        try:
            meta = self._call(key, lambda: obs.head(self.store, key))
        except BlobNotFound:
            return None
        return meta["last_modified"].timestamp()

    def put(self, key: str, data: bytes) -> str:
        import obstore as obs
        check_key(key)
        big = len(data) > MULTIPART_OVER
        res = self._call(key, lambda: obs.put(self.store, key, data, use_multipart=big, chunk_size=PART,
                                              max_concurrency=4), missing_ok=False)
        return self._token(key, res)

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        import obstore as obs
        check_key(key)
        mode = "create" if etag is None else {"e_tag": etag}
        try:
            res = self._call(key, lambda: obs.put(self.store, key, data, mode=mode, use_multipart=False), missing_ok=True)
        except BlobNotFound:
            # If-Match on an absent key: 404, i.e. the blob is not at ``etag``.
            raise PreconditionFailed(self.url, key) from None
        return self._token(key, res)

    def _token(self, key: str, res: dict) -> str:
        token = res.get("e_tag") or res.get("version")
        if token:
            return str(token)
        info = self.head(key)
        if info is None:
            raise RemoteError(f"{self.url}: {key} vanished right after it was written")
        return info.etag

    def delete(self, key: str) -> None:
        import obstore as obs
        check_key(key)
        try:
            self._call(key, lambda: obs.delete(self.store, key))
        except BlobNotFound:
            pass

    def list(self, prefix: str = "") -> Iterator[str]:
        import obstore as obs
        # obstore lists by path segments; list the parent "directory" and filter, so a
        # prefix that ends mid-name ("packs/pack-ab") works as the contract says.
        parent = prefix.rsplit("/", 1)[0] if "/" in prefix else None
        batches = self._call(prefix or "/", lambda: obs.list(self.store, parent, chunk_size=1000), missing_ok=False)
        it = iter(batches)
        while True:
            batch = self._call(prefix or "/", lambda: next(it, None), missing_ok=False)
            if batch is None:
                return
            for meta in batch:
                path = meta["path"]
                if path.startswith(prefix):
                    yield path

    def close(self) -> None:
        self.store = None
