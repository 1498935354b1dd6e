"""``coralfs remote doctor NAME``: check a remote's store, one line per check with its fix.

:func:`doctor` takes an opened BlobStore and answers a list of :class:`Check` in order:
credentials, reachable, bucket, list, write (put + get + delete of a probe key), clock
(the store's last-modified of the probe vs this machine; more than 5 minutes off fails),
conditional writes (on a probe key, a second create-only ``put_if`` and one against a
stale version must both fail, and the store itself must enforce it, not only coralfs's
host-local lock). A failed
reachable or bucket check ends the run (the rest could only repeat it). The CLI prints
:meth:`Check.line` for each and exits non-zero if any failed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .blobs import BlobStore, PreconditionFailed, RemoteError, RemoteUnavailable

MAX_SKEW = 300.0   # seconds; signed requests start failing at 15 min, refs' timestamps sooner
PROBE = ".coralfs-probe/doctor-"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str   # what was found, and on failure what to do

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.message}"


def doctor(blobs: BlobStore, *, now: Callable[[], float] = time.time) -> list[Check]:
    """Run every check against ``blobs`` (``now``: this machine's clock)."""
    checks: list[Check] = []
    scheme = blobs.url.split("://", 1)[0]
    creds = getattr(blobs, "credentials", None)
    if scheme == "file":
        checks.append(Check("credentials", True, "none needed for a file:// remote"))
    elif creds:
        checks.append(Check("credentials", True, creds if creds.startswith("none") else f"from {creds}"))
    else:
        hint = getattr(blobs, "credentials_hint", "set the cloud's credential variables")
        checks.append(Check("credentials", False, f"none found in the environment or the cloud's files: {hint}"))

    probe = f"{PROBE}{uuid.uuid4().hex}"
    try:
        blobs.head(probe)
        checks.append(Check("reachable", True, f"{getattr(blobs, 'endpoint', blobs.url)} answers"))
    except RemoteUnavailable as e:
        checks.append(Check("reachable", False, str(e)))
        return checks
    except RemoteError as e:
        # It answered, with a refusal: reachable; the next checks say what was refused.
        checks.append(Check("reachable", True, f"answers ({str(e)[:120]})"))

    try:
        next(iter(blobs.list("refs/")), None)
        checks.append(Check("bucket", True, f"{getattr(blobs, 'bucket', '') or blobs.url} exists"))
        checks.append(Check("list", True, "listing keys is allowed"))
    except RemoteError as e:
        if "does not exist" in str(e):
            checks.append(Check("bucket", False, str(e)))
            return checks
        checks.append(Check("bucket", True, "exists (it answered)"))
        checks.append(Check("list", False, f"{e}; grant list permission on the bucket"))

    written = False
    try:
        data = uuid.uuid4().bytes
        before = now()
        blobs.put(probe, data)
        after = now()
        written = True
        if blobs.get(probe) != data:
            checks.append(Check("write", False, f"{probe} read back different bytes: the store is not consistent"))
        else:
            checks.append(Check("write", True, "write, read back and delete of a probe key work"))
        modified = getattr(blobs, "modified_time", None)
        stamp = modified(probe) if modified else None
        if stamp is None:
            checks.append(Check("clock", True, "not checked (the store reports no modification time)"))
        else:
            skew = stamp - (before + after) / 2
            side = "ahead of" if skew > 0 else "behind"
            msg = f"the store's clock is {abs(skew):.0f} s {side} this machine's"
            if abs(skew) > MAX_SKEW:
                checks.append(Check("clock", False, f"{msg}: sync this machine's clock (timedatectl set-ntp true)"))
            else:
                checks.append(Check("clock", True, msg))
    except RemoteError as e:
        checks.append(Check("write", False, f"{e}; grant write and delete permission under the prefix"))
    finally:
        if written:
            try:
                blobs.delete(probe)
            except RemoteError as e:
                checks.append(Check("write", False, f"cannot delete {probe}: {e}; grant delete permission"))

    cas = f"{PROBE}cas-{uuid.uuid4().hex}"
    try:
        first = blobs.put_if(cas, b"1", None)
        blobs.put(cas, b"22")
        refused = []
        for what, etag in (("a second create-only write", None), ("a write against a stale version", first)):
            try:
                blobs.put_if(cas, b"333", etag)
            except PreconditionFailed:
                refused.append(what)
                continue
            checks.append(Check("conditional writes", False, f"{what} succeeded: remote refs are not safe on this "
                                "store; use a store with conditional writes (If-Match / If-None-Match)"))
            break
        if len(refused) == 2:
            mode = getattr(blobs, "conditional_writes", "native")
            if mode == "native":
                checks.append(Check("conditional writes", True, "the store refuses stale and create-only writes"))
            else:
                checks.append(Check("conditional writes", False,
                                    "the store ignores preconditions; coralfs serialises ref updates with a lock "
                                    "on this machine only: push to it from one machine (a shared lock is planned)"))
    except RemoteError as e:
        checks.append(Check("conditional writes", False, f"{e}; grant write permission under the prefix"))
    finally:
        try:
            blobs.delete(cas)
        except RemoteError:
            pass
    return checks


__all__ = ["Check", "doctor", "MAX_SKEW"]
