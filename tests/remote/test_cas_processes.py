"""Two processes moving one ref by compare-and-swap, 20 rounds each: no update is lost,
on each store (GCS on its emulator through the host-local lock, which its doctor line
reports)."""

from __future__ import annotations

import os
import subprocess
import sys

WORKER = r"""
import sys
from coralfs.remote.url import open_blobs
from coralfs.remote.blobs import PreconditionFailed
url, endpoint, name, rounds = sys.argv[1], sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
b = open_blobs(url, endpoint=endpoint)
done = 0
while done < rounds:
    info = b.head("refs/heads/main")
    body = b.get("refs/heads/main")
    try:
        b.put_if("refs/heads/main", body + name.encode(), info.etag)
        done += 1
    except PreconditionFailed:
        pass
b.close()
"""


def test_two_processes_lose_no_update(cloud_remote):
    b = cloud_remote.open()
    b.put_if("refs/heads/main", b"", None)
    env = {**os.environ, **cloud_remote.env}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, cloud_remote.url, cloud_remote.endpoint or "", n, "20"],
                              env=env, stderr=subprocess.PIPE, text=True) for n in "ab"]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    final = b.get("refs/heads/main")
    assert len(final) == 40 and final.count(b"a") == 20 and final.count(b"b") == 20, final
