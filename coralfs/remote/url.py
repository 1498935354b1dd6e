"""Remote URLs and the one factory that opens a BlobStore for them."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from .blobs import BlobStore, RemoteError

SCHEMES = {
    "file": "coralfs.remote.file:FileBlobs",
    "s3": "coralfs.remote.s3:S3Blobs",
    "gs": "coralfs.remote.gcs:GCSBlobs",
    "az": "coralfs.remote.azure:AzureBlobs",
}


@dataclass(frozen=True)
class RemoteURL:
    scheme: str
    bucket: str   # bucket or container ("" for file://)
    prefix: str   # key prefix without leading or trailing '/' (file://: the absolute path)
    text: str

    def __str__(self) -> str:
        return self.text


def parse_url(text: str) -> RemoteURL:
    """``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix`` or
    ``file:///abs/path``; anything else is a one-line error."""
    u = urlsplit(text)
    if u.scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise RemoteError(f"unknown remote URL {text!r}: use one of {known}")
    if u.scheme == "file":
        if u.netloc not in ("", "localhost") or not u.path.startswith("/"):
            raise RemoteError(f"invalid remote URL {text!r}: write file:///absolute/path")
        return RemoteURL("file", "", u.path.rstrip("/") or "/", text)
    if not u.netloc:
        raise RemoteError(f"invalid remote URL {text!r}: no bucket; write {u.scheme}://BUCKET/PREFIX")
    if u.query or u.fragment:
        raise RemoteError(f"invalid remote URL {text!r}: no '?' or '#' parts")
    prefix = u.path.strip("/")
    if any(p in (".", "..") for p in prefix.split("/") if p) or "//" in prefix:
        raise RemoteError(f"invalid remote URL {text!r}: no '.', '..' or empty parts in the prefix")
    return RemoteURL(u.scheme, u.netloc, prefix, text)


def open_blobs(url: str | RemoteURL, *, endpoint: str | None = None, options: dict | None = None) -> BlobStore:
    """The BlobStore for a remote URL. ``endpoint``: a service URL (emulators, S3-compatible
    stores); ``options``: backend settings from the remote's config (profile, region ...).
    Credentials come from each cloud's usual environment and files, never from here."""
    u = url if isinstance(url, RemoteURL) else parse_url(url)
    module, _, cls = SCHEMES[u.scheme].partition(":")
    try:
        backend = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise RemoteError(f"{u.scheme}:// remotes need the cloud extra ({e.name} is missing): "
                          "pip install 'coralfs[cloud]'") from None
    return backend(u, endpoint=endpoint, options=options or {})
