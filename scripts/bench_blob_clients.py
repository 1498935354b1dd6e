#!/usr/bin/env python3
"""Which object-store client: obstore (one Rust client for S3, GCS and Azure) vs the
clouds' own SDKs (boto3, google-cloud-storage, azure-storage-blob), measured on the
emulators the tests use (moto, gcp-storage-emulator, Azurite) on loopback.

Per client and emulator: median latency of a 1 KiB PUT and GET, of a 64 KiB range GET from
a 4 MiB blob, the throughput of a 32 MiB pack PUT and GET, and whether the conditional writes
BlobStore.put_if needs are honoured through that client (create-only twice: the second
must fail; update with a stale version: must fail; with the current one: must succeed).
The "coralfs" rows are the chosen backends (coralfs/remote/{s3,gcs,azure}.py) through the
BlobStore interface: multipart puts over 8 MiB, and for GCS on the emulator the
host-local lock that makes put_if hold where the store ignores preconditions.

    .venv/bin/pip install boto3 google-cloud-storage azure-storage-blob   # the SDK columns
    .venv/bin/python scripts/bench_blob_clients.py [--n 100]

Figures go to docs/decisions.md ("Remote object-store client").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.remote.emulators import AWS_KEY, AZ_ACCOUNT, AZ_KEY, STARTERS, Service  # noqa: E402

SMALL = os.urandom(1024)
MID = os.urandom(4 << 20)
PACK = os.urandom(32 << 20)


class Client:
    """put(key, data) -> version; put_create(key, data); put_update(key, data, version); get; get_range."""

    put: Callable[[str, bytes], str]
    put_create: Callable[[str, bytes], None]
    put_update: Callable[[str, bytes, str], None]
    get: Callable[[str], bytes]
    get_range: Callable[[str, int, int], bytes]


def obstore_client(svc: Service, bucket: str) -> Client:
    import obstore as obs
    from obstore.store import AzureStore, GCSStore, S3Store

    opts = {"allow_http": True, "timeout": "30s", "connect_timeout": "10s"}
    if svc.kind == "s3":
        st = S3Store(bucket, endpoint=svc.endpoint, access_key_id=AWS_KEY, secret_access_key=AWS_KEY,
                     region="us-east-1", client_options=opts)
    elif svc.kind == "gs":
        # skip_signature is not honoured for GCS: a static token keeps it off the metadata server.
        st = GCSStore(bucket, base_url=svc.endpoint, client_options=opts,
                      credential_provider=lambda: {"token": "emulator", "expires_at": None})
    else:
        st = AzureStore(bucket, account_name=AZ_ACCOUNT, account_key=AZ_KEY, endpoint=svc.endpoint,
                        client_options=opts)
    c = Client()
    c.put = lambda k, d: obs.put(st, k, d).get("e_tag") or ""
    c.put_create = lambda k, d: obs.put(st, k, d, mode="create")
    c.put_update = lambda k, d, v: obs.put(st, k, d, mode={"e_tag": v})
    c.get = lambda k: obs.get(st, k).bytes().to_bytes()
    c.get_range = lambda k, s, n: obs.get_range(st, k, start=s, length=n).to_bytes()
    return c


def sdk_client(svc: Service, bucket: str) -> Client:
    c = Client()
    if svc.kind == "s3":
        import boto3
        from botocore.config import Config
        s3 = boto3.client("s3", endpoint_url=svc.endpoint, aws_access_key_id=AWS_KEY, aws_secret_access_key=AWS_KEY,
                          region_name="us-east-1", config=Config(connect_timeout=10, read_timeout=30))
        c.put = lambda k, d: s3.put_object(Bucket=bucket, Key=k, Body=d)["ETag"]
        c.put_create = lambda k, d: s3.put_object(Bucket=bucket, Key=k, Body=d, IfNoneMatch="*")
        c.put_update = lambda k, d, v: s3.put_object(Bucket=bucket, Key=k, Body=d, IfMatch=v)
        c.get = lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read()
        c.get_range = lambda k, s, n: s3.get_object(Bucket=bucket, Key=k, Range=f"bytes={s}-{s + n - 1}")["Body"].read()
    elif svc.kind == "gs":
        os.environ["STORAGE_EMULATOR_HOST"] = svc.endpoint
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        b = storage.Client(project="coralfs-test", credentials=AnonymousCredentials()).bucket(bucket)

        def put(k: str, d: bytes) -> str:
            blob = b.blob(k)
            blob.upload_from_string(d, timeout=30)
            return str(blob.generation)
        c.put = put
        c.put_create = lambda k, d: b.blob(k).upload_from_string(d, if_generation_match=0, timeout=30)
        c.put_update = lambda k, d, v: b.blob(k).upload_from_string(d, if_generation_match=int(v), timeout=30)
        c.get = lambda k: b.blob(k).download_as_bytes(timeout=30)
        c.get_range = lambda k, s, n: b.blob(k).download_as_bytes(start=s, end=s + n - 1, timeout=30)
    else:
        from azure.core import MatchConditions
        from azure.storage.blob import BlobServiceClient
        conn = svc.env["AZURE_STORAGE_CONNECTION_STRING"]
        cc = BlobServiceClient.from_connection_string(conn, connection_timeout=10, read_timeout=30).get_container_client(bucket)
        c.put = lambda k, d: cc.get_blob_client(k).upload_blob(d, overwrite=True, max_concurrency=4)["etag"]
        c.put_create = lambda k, d: cc.get_blob_client(k).upload_blob(d, overwrite=False)
        c.put_update = lambda k, d, v: cc.get_blob_client(k).upload_blob(d, overwrite=True, etag=v,
                                                                         match_condition=MatchConditions.IfNotModified)
        c.get = lambda k: cc.download_blob(k).readall()
        c.get_range = lambda k, s, n: cc.download_blob(k, offset=s, length=n).readall()
    return c


def coralfs_client(svc: Service, bucket: str) -> Client:
    """The chosen backends themselves, through the BlobStore interface."""
    from coralfs.remote.url import open_blobs
    os.environ.update(svc.env)
    b = open_blobs(svc.url(bucket, "bench"), endpoint=svc.endpoint)
    c = Client()
    c.put = b.put
    c.put_create = lambda k, d: b.put_if(k, d, None)
    c.put_update = b.put_if
    c.get = b.get
    c.get_range = b.get_range
    return c


def _fails(f: Callable[[], object]) -> bool:
    try:
        f()
    except Exception:   # noqa: BLE001 - any refusal counts; the kind is printed by the backends' tests
        return True
    return False


def _median_ms(f: Callable[[int], object], n: int) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        f(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure(c: Client, n: int) -> dict[str, str]:
    put_ms = _median_ms(lambda i: c.put(f"small/{i}", SMALL), n)

    def small(i: int) -> None:
        if c.get(f"small/{i}") != SMALL:
            sys.exit(f"small/{i} read back wrong")
    get_ms = _median_ms(small, n)
    c.put("mid", MID)

    def ranged(i: int) -> None:
        off = (i * 65537) % (len(MID) - 65536)
        if c.get_range("mid", off, 65536) != MID[off:off + 65536]:
            sys.exit("range read back wrong")
    range_ms = _median_ms(ranged, n)
    best = 1e9
    for i in range(3):
        t = time.perf_counter()
        c.put(f"pack/{i}", PACK)
        best = min(best, time.perf_counter() - t)
    best_get = 1e9
    for _ in range(3):
        t = time.perf_counter()
        assert c.get("pack/0") == PACK
        best_get = min(best_get, time.perf_counter() - t)
    # Conditional writes.
    create_first = not _fails(lambda: c.put_create("cas/a", b"1"))
    create_second_refused = _fails(lambda: c.put_create("cas/a", b"2"))
    v1 = c.put("cas/b", b"1")
    v2 = c.put("cas/b", b"2")
    stale_refused = _fails(lambda: c.put_update("cas/b", b"3", v1))
    current_ok = not _fails(lambda: c.put_update("cas/b", b"4", v2))
    final = c.get("cas/b")
    return {"put 1 KiB ms": f"{put_ms:.1f}", "get 1 KiB ms": f"{get_ms:.1f}", "range 64 KiB ms": f"{range_ms:.1f}",
            "32 MiB put MB/s": f"{len(PACK) / best / 1e6:.0f}", "32 MiB get MB/s": f"{len(PACK) / best_get / 1e6:.0f}",
            "create-only": "yes" if create_first and create_second_refused else "NO",
            "if-match": "yes" if stale_refused and current_ok and final == b"4" else f"NO (stale refused={stale_refused})"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as logdir:
        for kind, start in STARTERS.items():
            svc = start(logdir)
            try:
                for name, make in (("obstore", obstore_client), ("sdk", sdk_client), ("coralfs", coralfs_client)):
                    bucket = svc.new_bucket()
                    try:
                        r = measure(make(svc, bucket), args.n)
                    except Exception as e:   # noqa: BLE001 - a client that cannot talk to the emulator is a result
                        r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"}
                    rows.append((kind, name, r))
                    print(kind, name, r, flush=True)
            finally:
                svc.stop()
    cols = ["put 1 KiB ms", "get 1 KiB ms", "range 64 KiB ms", "32 MiB put MB/s", "32 MiB get MB/s", "create-only",
            "if-match"]
    print("\n| store | client | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for kind, name, r in rows:
        print(f"| {kind} | {name} | " + " | ".join(r.get(c, r.get("error", "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
