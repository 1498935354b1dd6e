"""gs://bucket/prefix remotes (Google Cloud Storage, or gcp-storage-emulator), through
google-cloud-storage (JSON API).

Why not obstore here: obstore speaks GCS's XML API, which gcp-storage-emulator does not
implement (501), so it could not be tested against a real emulator (docs/decisions.md).

Credentials: STORAGE_EMULATOR_HOST (or --endpoint) means an emulator: anonymous, no
credentials. Otherwise Google's application default credentials:
GOOGLE_APPLICATION_CREDENTIALS (a key file), gcloud's ADC file, or the metadata server.
Project: options["project"], GOOGLE_CLOUD_PROJECT, or the credentials'.

Version tokens are object generations; put_if sends ifGenerationMatch (0: absent). A
store that ignores preconditions (gcp-storage-emulator does) is detected with a probe at
the first put_if; put_if then serialises through a host-local lock
(``conditional_writes == "local-lock"``, reported by ``remote doctor``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError, TransportError
from google.cloud import storage

from ._common import LOCAL_LOCK, NATIVE, Limits, LocalCasLock, join_key, no_bucket, scrub, unreachable, with_retries
from .blobs import BlobInfo, BlobNotFound, BlobStore, PreconditionFailed, RemoteError
from .file import check_key
from .url import RemoteURL

T = TypeVar("T")
_TRANSIENT = (requests.ConnectionError, requests.Timeout, TransportError, gexc.ServiceUnavailable,
              gexc.InternalServerError, gexc.TooManyRequests, gexc.BadGateway, gexc.GatewayTimeout)
_PROBE = ".coralfs-probe/cas-"


class GCSBlobs(BlobStore):
    kind = "bucket"
    credentials: str | None = None

    def __init__(self, url: RemoteURL, *, endpoint: str | None = None, options: dict | None = None) -> None:
        options = options or {}
        self.url = str(url)
        self.bucket = url.bucket
        self.prefix = url.prefix
        self.limits = Limits.from_options(self.url, options)
        self._conditional: str | None = None
        emulator = endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
        project = options.get("project") or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if emulator:
            if not emulator.startswith(("http://", "https://")):
                emulator = "http://" + emulator
            self.endpoint = emulator.rstrip("/")
            creds = AnonymousCredentials()
            project = project or "coralfs"
            self.credentials = "none needed for an emulator (STORAGE_EMULATOR_HOST or --endpoint)"
            client_options = {"api_endpoint": self.endpoint}
        else:
            self.endpoint = "https://storage.googleapis.com"
            try:
                creds, found_project = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
            except DefaultCredentialsError as e:
                why = str(e).splitlines()[0][:200]
                raise RemoteError(f"{self.url}: no usable Google credentials ({why}): set GOOGLE_APPLICATION_CREDENTIALS "
                                  "to a key file or run 'gcloud auth application-default login'") from None
            project = project or found_project
            self.credentials = ("GOOGLE_APPLICATION_CREDENTIALS" if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
                                else "Google application default credentials")
            client_options = None
        self.client = storage.Client(project=project, credentials=creds, client_options=client_options)
        self._bucket = self.client.bucket(self.bucket)
        self._lock = LocalCasLock(f"gs|{self.endpoint}|{self.bucket}|{self.prefix}")

    # -- plumbing --------------------------------------------------------------------------
    @property
    def _timeout(self) -> tuple[float, float]:
        return (self.limits.connect_timeout, self.limits.read_timeout)

    def _name(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _call(self, key: str, fn: Callable[[], T], *, missing: str = "key") -> T:
        """Run one request with the retry budget; map errors to one-line RemoteErrors.
        ``missing``: what a 404 means ("key": the blob, "bucket": the bucket)."""
        def give_up(e: BaseException) -> Exception:
            return unreachable(self.url, self.endpoint, key, f"{type(e).__name__} after {self.limits.retries} retries")
        try:
            return with_retries(fn, limits=self.limits, transient=_TRANSIENT, on_give_up=give_up)
        except gexc.NotFound as e:
            if missing == "bucket" or "bucket" in str(e).lower() and "object" not in str(e).lower():
                raise no_bucket(self.url, self.bucket) from None
            raise BlobNotFound(self.url, key) from None
        except gexc.PreconditionFailed:
            raise PreconditionFailed(self.url, key) from None
        except (gexc.Forbidden, gexc.Unauthorized) as e:
            raise RemoteError(f"{self.url}: the store refused the credentials ({self.credentials}) for {key}: "
                              f"check GOOGLE_APPLICATION_CREDENTIALS and the bucket's IAM ({e.code})") from None
        except gexc.GoogleAPICallError as e:
            raise RemoteError(f"{self.url}: {key}: {scrub(str(e).splitlines()[0])[:300]}") from None

    # -- BlobStore -------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        blob = self._bucket.blob(self._name(key))
        return self._call(key, lambda: blob.download_as_bytes(timeout=self._timeout, retry=None, checksum=None))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise RemoteError(f"{self.url}: invalid range {start}+{length} of {key}")
        name = self._name(key)
        if length == 0:
            if self.head(key) is None:
                raise BlobNotFound(self.url, key)
            return b""
        blob = self._bucket.blob(name)

        def ranged() -> bytes | None:
            try:
                return blob.download_as_bytes(start=start, end=start + length - 1, timeout=self._timeout, retry=None,
                                              checksum=None)
            except gexc.RequestRangeNotSatisfiable:
                return None   # at or past the end: the contract says fewer bytes
        data = self._call(key, ranged)
        if data is not None:
            return data
        if self.head(key) is None:
            raise BlobNotFound(self.url, key)
        return b""

    def head(self, key: str) -> BlobInfo | None:
        name = self._name(key)
        try:
            blob = self._call(key, lambda: self._bucket.get_blob(name, timeout=self._timeout, retry=None))
        except BlobNotFound:
            return None
        if blob is None:
            return None
        return BlobInfo(int(blob.size or 0), str(blob.generation))

    def modified_time(self, key: str) -> float | None:
        """The store's last-modified time of a blob (POSIX seconds), for the clock check."""
        name = self._name(key)
        blob = self._call(key, lambda: self._bucket.get_blob(name, timeout=self._timeout, retry=None))
        return blob.updated.timestamp() if blob is not None and blob.updated else None

    def _upload(self, key: str, data: bytes, generation: int | None) -> str:
        blob = self._bucket.blob(self._name(key), chunk_size=8 << 20 if len(data) > (8 << 20) else None)
        kw = {} if generation is None else {"if_generation_match": generation}
        self._call(key, lambda: blob.upload_from_string(data, content_type="application/octet-stream",
                                                        timeout=self._timeout, retry=None, checksum=None, **kw),
                   missing="bucket")
        return str(blob.generation)

    def put(self, key: str, data: bytes) -> str:
        check_key(key)
        return self._upload(key, data, None)

    @property
    def conditional_writes(self) -> str:
        """"native" if the store enforces ifGenerationMatch, else "local-lock" (probed once)."""
        if self._conditional is None:
            probe = _PROBE + uuid.uuid4().hex
            self._upload(probe, b"1", 0)
            try:
                self._upload(probe, b"2", 0)
                self._conditional = LOCAL_LOCK
            except PreconditionFailed:
                self._conditional = NATIVE
            finally:
                self.delete(probe)
        return self._conditional

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        check_key(key)
        try:
            generation = 0 if etag is None else int(etag)
        except ValueError:
            raise PreconditionFailed(self.url, key) from None
        if self.conditional_writes == NATIVE:
            return self._upload(key, data, generation)
        with self._lock.hold(key):
            info = self.head(key)
            if (info.etag if info else None) != etag:
                raise PreconditionFailed(self.url, key)
            return self._upload(key, data, generation)

    def delete(self, key: str) -> None:
        blob = self._bucket.blob(self._name(key))
        try:
            self._call(key, lambda: blob.delete(timeout=self._timeout, retry=None))
        except BlobNotFound:
            pass

    def list(self, prefix: str = "") -> Iterator[str]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        pages = self._call(prefix or "/", lambda: self.client.list_blobs(
            self._bucket, prefix=full, page_size=1000, timeout=self._timeout, retry=None).pages, missing="bucket")
        it = iter(pages)
        while True:
            page = self._call(prefix or "/", lambda: next(it, None), missing="bucket")
            if page is None:
                return
            for blob in page:
                key = blob.name[cut:]
                if not key.startswith(_PROBE):
                    yield key

    def close(self) -> None:
        self.client.close()


__all__ = ["GCSBlobs"]
