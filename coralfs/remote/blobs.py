"""The BlobStore interface: keyed byte blobs in one bucket under one prefix.

Every remote feature (packs, remote refs, the remote object store of mounts) is written
against this interface only; each backend (file, s3, gs, az) implements it once and runs
tests/remote/blob_conformance.py against its emulator. Keys are '/'-separated text
relative to the remote's prefix (``refs/heads/main``, ``packs/pack-<hex>.pack``).

Conditional writes are what make remote refs safe: ``put_if`` maps to If-None-Match: * /
If-Match on S3, generation preconditions on GCS and ETag conditions on Azure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from ..objects.errors import CoralError


class RemoteError(CoralError):
    """A remote operation that failed; the message names the remote and the fix."""

    exit_code = 5


class BlobNotFound(RemoteError):
    def __init__(self, where: str, key: str) -> None:
        self.key = key
        super().__init__(f"{where}: {key} is not in the remote")


class PreconditionFailed(RemoteError):
    """A conditional write lost: the blob is not at the expected version."""

    exit_code = 4

    def __init__(self, where: str, key: str) -> None:
        self.key = key
        super().__init__(f"{where}: {key} changed while it was being written; fetch and retry")


class RemoteUnavailable(RemoteError):
    """The store did not answer within the timeout and retry budget."""


@dataclass(frozen=True)
class BlobInfo:
    size: int
    etag: str   # opaque version token for put_if (ETag, generation, or a content hash)


class BlobStore(ABC):
    """Blobs under one prefix. Every method but ``get_range_view`` and ``abandon`` (which
    have defaults) is abstract: a backend that forgot one cannot be instantiated. Absent
    keys raise BlobNotFound from ``get`` and ``get_range``; ``head`` answers None;
    ``delete`` of an absent key is a no-op."""

    url: str   # the remote URL it was opened from, for messages

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole blob."""

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer only at the end of the blob)."""

    def get_range_view(self, key: str, start: int, length: int) -> bytes | memoryview:
        """:meth:`get_range` as any bytes-like object (a backend may hand out its own
        buffer instead of a copy: a fetch slices a 32 MiB range into frames)."""
        return self.get_range(key, start, length)

    @abstractmethod
    def head(self, key: str) -> BlobInfo | None:
        """Size and version token, or None if absent."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> str:
        """Write (or overwrite) a blob atomically; readers see the old or the new one.
        Returns its new version token."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """Compare-and-swap: write only if the blob is at version ``etag`` (None: only if
        it is absent). Raises PreconditionFailed otherwise. Returns the new token."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob."""

    def abandon(self, folder: str) -> int:
        """Remove what interrupted (killed) writers of blobs in ``folder`` (a key prefix
        ending in "/") left there; returns how many leftovers went. An object store never
        shows a partial object under a key (an unfinished S3 multipart upload is left to
        the bucket's lifecycle rule): nothing to do; a directory remote keeps its temp
        files until this."""
        return 0

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with ``prefix``, in any order."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
