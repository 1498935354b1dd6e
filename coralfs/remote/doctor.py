"""``coralfs remote doctor NAME``: one line per check, each with the fix when it fails.

The checks run through the BlobStore interface only (so they hold for every backend):
the remote answers a listing, a blob can be written, read back and removed, conditional
writes refuse a stale version (what remote refs rely on), and the layout marker is one
this coralfs reads. Backends may add checks of their own (credentials, clock skew).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..objects.errors import CoralError
from .blobs import BlobStore, PreconditionFailed
from .layout import FORMAT, MARKER


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def doctor(blobs: BlobStore) -> list[Check]:
    out: list[Check] = []
    try:
        next(iter(blobs.list(MARKER)), None)
        out.append(Check("access", True, f"{blobs.url} answers"))
    except CoralError as e:
        return [Check("access", False, str(e), "check the URL, the endpoint and the credentials in the environment")]
    probe = f"doctor/probe-{os.urandom(6).hex()}"
    try:
        blobs.put(probe, b"probe")
        ok = blobs.get(probe) == b"probe"
        out.append(Check("write", ok, "a blob was written and read back" if ok else "a blob read back differs",
                         "" if ok else "the store does not keep what it is given: do not use it as a remote"))
    except CoralError as e:
        out.append(Check("write", False, str(e), "grant write access to the bucket/prefix (or the directory)"))
        return out
    try:
        try:
            blobs.put_if(probe, b"x", None)
            cas = False, "a create-if-absent overwrote an existing blob"
        except PreconditionFailed:
            info = blobs.head(probe)
            try:
                blobs.put_if(probe, b"y", "not-" + (info.etag if info else ""))
                cas = False, "a write at a stale version was accepted"
            except PreconditionFailed:
                blobs.put_if(probe, b"z", info.etag if info else None)
                cas = True, "stale versions are refused, the current one is accepted"
        out.append(Check("conditional writes", cas[0], cas[1],
                         "" if cas[0] else "refs would not be safe with two pushers: use a store with conditional writes"))
    except CoralError as e:
        out.append(Check("conditional writes", False, str(e), "use a store with conditional writes (If-Match)"))
    finally:
        try:
            blobs.delete(probe)
        except CoralError:
            pass
    try:
        raw = blobs.get(MARKER) if blobs.head(MARKER) is not None else None
        if raw is None:
            out.append(Check("layout", True, "empty: the first push writes it"))
        else:
            fmt = json.loads(raw).get("format")
            out.append(Check("layout", fmt == FORMAT, f"remote format {fmt}",
                             "" if fmt == FORMAT else f"this coralfs reads format {FORMAT}: use a matching coralfs"))
    except (CoralError, ValueError, AttributeError) as e:
        out.append(Check("layout", False, f"{MARKER} does not parse ({e})", "point the remote at another prefix"))
    return out
