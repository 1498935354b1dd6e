"""``coralfs remote doctor NAME``: one line per check, each with the fix when it fails.

:func:`doctor` takes an opened BlobStore and answers a list of :class:`Check`, through
the BlobStore interface only (so they hold for every backend): the remote answers a
listing, a blob can be written, read back and removed, and conditional writes refuse a
stale version (what remote refs rely on). Backends' own checks (credentials, clock skew)
belong here too; the layout check is coralfs.remote.layout.check_layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .blobs import BlobStore, PreconditionFailed, RemoteError

PROBE = ".coralfs-probe/doctor-"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str   # what was found, and on failure what to do

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.message}"


def doctor(blobs: BlobStore) -> list[Check]:
    out: list[Check] = []
    try:
        next(iter(blobs.list("refs/")), None)
        out.append(Check("reachable", True, f"{blobs.url} answers"))
    except RemoteError as e:
        return [Check("reachable", False, f"{e}; check the URL, the endpoint and the credentials in the environment")]
    probe = f"{PROBE}{os.urandom(8).hex()}"
    try:
        blobs.put(probe, b"probe")
        ok = blobs.get(probe) == b"probe"
        out.append(Check("write", ok, "write, read back and delete of a probe key work" if ok else
                         "a probe read back different bytes: the store is not consistent, do not use it"))
    except RemoteError as e:
        out.append(Check("write", False, f"{e}; grant write access to the bucket/prefix (or the directory)"))
        return out
    try:
        try:
            blobs.put_if(probe, b"x", None)
            out.append(Check("conditional writes", False, "a create-if-absent overwrote an existing blob: "
                             "refs would not be safe with two pushers; use a store with conditional writes"))
        except PreconditionFailed:
            info = blobs.head(probe)
            try:
                blobs.put_if(probe, b"y", "stale-" + (info.etag if info else ""))
                out.append(Check("conditional writes", False, "a write at a stale version was accepted: "
                                 "use a store with conditional writes (If-Match)"))
            except PreconditionFailed:
                blobs.put_if(probe, b"z", info.etag if info else None)
                out.append(Check("conditional writes", True, "stale versions are refused, the current one accepted"))
    except RemoteError as e:
        out.append(Check("conditional writes", False, f"{e}; use a store with conditional writes (If-Match)"))
    finally:
        try:
            blobs.delete(probe)
        except RemoteError:
            pass
    return out
