"""Refs in a remote: the RefsContainer interface over a BlobStore's conditional writes.

A move reads the ref's blob and its version token (``head`` then ``get``), compares, and
writes with ``put_if(key, new, token)``: the store refuses if anyone wrote in between
(If-Match on S3, a generation precondition on GCS, an ETag condition on Azure, a lock on a
directory), so of two racing pushes exactly one wins and the other gets RefMoved. Reading
the token before the text is what makes this safe: if the text read is newer than the
token, the conditional write fails and the loop reads again.

A deletion is a conditional write of an empty blob (a tombstone): BlobStore has no
conditional delete, and a tombstone keeps the ref's version history linear. The reflog of
a ref is ``logs/REF``, appended by the same compare-and-swap (a short text blob).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..objects.errors import CoralError
from ..objects.ids import ObjectId, to_hex
from ..objects.refs import BadRef, InvalidRefName, RefMoved, RefsContainer, check_full_name, ref_text
from .blobs import BlobNotFound, BlobStore, PreconditionFailed, RemoteError
from .layout import LOGS

_RETRIES = 200


def _direct(_what: str, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class RemoteRefs(RefsContainer):
    """``call(what, fn, *args)`` runs every request (a remote mount passes its store's
    bounded call, so a stalled store fails a ref read after the read budget instead of
    hanging). With ``read_only`` (the reason, one line), every write raises CoralError
    with it: a remote mount reads refs and never moves them."""

    def __init__(self, blobs: BlobStore, *, call: Callable[..., Any] = _direct, read_only: str | None = None) -> None:
        self.blobs = blobs
        self._call = call
        self.read_only = read_only

    def _refuse_writes(self) -> None:
        if self.read_only is not None:
            raise CoralError(self.read_only)

    def _content(self, key: str) -> bytes | None:
        """The blob's bytes (None: missing) for a plain read: one request, no token."""
        try:
            return self._call(key, self.blobs.get, key)
        except BlobNotFound:
            return None

    def _get(self, key: str) -> tuple[bytes | None, str | None]:
        """(content, version token) read consistently enough for a compare-and-swap: the
        token is read first, so a put_if with it fails if the content changed since."""
        for _ in range(_RETRIES):
            info = self._call(key, self.blobs.head, key)
            if info is None:
                return None, None
            try:
                return self._call(key, self.blobs.get, key), info.etag
            except BlobNotFound:
                continue  # deleted between head and get: look again
        raise RemoteError(f"{self.blobs.url}: {key} keeps changing; retry")

    def _text(self, data: bytes | None, what: str) -> str | None:
        return None if data is None else ref_text(data, what)

    def read_raw(self, name: str) -> str | None:
        key = check_full_name(name)
        raw = self._text(self._content(key), name)
        raw = None if raw is None else raw.strip()
        return raw or None  # an empty blob is a deleted ref

    def raw_refs(self, prefix: str) -> Iterator[tuple[str, str | BadRef]]:
        for key in sorted(self._call(prefix, lambda: list(self.blobs.list(prefix)))):
            try:
                check_full_name(key)
            except InvalidRefName:
                continue  # not a ref (a stray key under refs/)
            try:
                raw = self._text(self._content(key), key)
            except BadRef as e:
                yield key[len(prefix):], e
                continue
            if raw is not None and raw.strip():
                yield key[len(prefix):], raw.strip()

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId | None,
                      message: str, who: str | None = None, *, force: bool = False) -> None:
        self._refuse_writes()
        key = check_full_name(name)
        data = b"" if new is None else (to_hex(new) + "\n").encode()
        cur: ObjectId | None = None
        for attempt in range(_RETRIES):
            content, etag = self._get(key)
            raw = (self._text(content, name) or "").strip()
            cur = self._parse(name, raw) if raw else None
            if attempt and cur == new and new is not None:
                cur = old  # our write was applied but its answer was lost: success
                break
            if not force and cur != old:
                raise RefMoved(name, old, cur)
            if new is None and etag is None:
                break  # nothing to delete
            try:
                self.blobs.put_if(key, data, etag)
                break
            except PreconditionFailed:
                _backoff(attempt)  # someone wrote in between: compare again
        else:
            raise RefMoved(name, old, cur)
        self.append_log(name, cur, new, message, who)

    def write_head(self, text: str) -> None:
        self._refuse_writes()
        self.blobs.put("HEAD", text.encode())

    def append_log_line(self, name: str, line: str) -> None:
        self._refuse_writes()
        key = LOGS + name
        for attempt in range(_RETRIES):
            content, etag = self._get(key)
            try:
                self.blobs.put_if(key, (content or b"") + line.encode("utf-8"), etag)
                return
            except PreconditionFailed:
                _backoff(attempt)
        raise RemoteError(f"{self.blobs.url}: {key} keeps changing; the reflog line was not written")

    def read_log(self, name: str) -> str | None:
        return self._text(self._content(LOGS + name), LOGS + name)

    def log_names(self) -> Iterator[str]:
        yield from sorted(k[len(LOGS):] for k in self._call(LOGS, lambda: list(self.blobs.list(LOGS))))


def _backoff(attempt: int) -> None:
    """Racing writers spread out instead of retrying in lock step."""
    time.sleep(random.uniform(0, min(0.05, 0.002 * (attempt + 1))))
