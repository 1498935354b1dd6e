"""The three object-store emulators, started as real processes on random loopback ports.

Used by tests/remote/conftest.py (session fixtures) and by the client benchmark script.
Each :class:`Service` knows its endpoint, the environment a client needs to reach it
(the clouds' usual variables: AWS_*, STORAGE_EMULATOR_HOST, AZURE_STORAGE_CONNECTION_STRING),
how to create a fresh bucket, and how to pause/resume (SIGSTOP/SIGCONT) for fault tests.
A missing emulator binary is an error naming ``scripts/setup``, never a skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
# scripts/setup installs Azurite here (npm --prefix); the same path in every checkout's venv.
AZURITE_PREFIX = os.path.join(os.path.dirname(BIN), "azurite")
AZURITE_BIN = os.path.join(AZURITE_PREFIX, "node_modules", ".bin", "azurite-blob")

# Azurite's fixed development account (public, documented by Microsoft; not a secret).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AWS_KEY = "testing"   # moto accepts any credentials


class MissingEmulator(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """One running emulator."""

    kind: str                    # "s3", "gs" or "az"
    endpoint: str                # http://127.0.0.1:PORT (Azurite: .../devstoreaccount1)
    env: dict[str, str]          # what a client process needs to reach it
    proc: subprocess.Popen
    log: str
    buckets: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pause(self) -> None:
        """Freeze the emulator (SIGSTOP): connections stay open, nothing answers. Returns
        once the kernel reports it stopped, so the next request surely meets a frozen store."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(self.proc.pid) not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.01)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def url(self, bucket: str, prefix: str = "") -> str:
        return f"{self.kind}://{bucket}/{prefix}".rstrip("/")

    def new_bucket(self, name: str | None = None) -> str:
        """Create an empty bucket (container) with a fresh name and return it."""
        name = name or f"t-{uuid.uuid4().hex[:20]}"
        _CREATE[self.kind](self, name)
        self.buckets.append(name)
        return name

    def stop(self) -> None:
        """Stop by PID: SIGCONT first (a test may have left it paused), then TERM, KILL."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _state(pid: int) -> str:
    """The process state letter from /proc (R, S, T ...), "" if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _http(method: str, url: str, body: bytes = b"", headers: dict | None = None, timeout: float = 10) -> int:
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _create_s3(svc: Service, name: str) -> None:
    # moto does not check signatures: a plain PUT creates the bucket.
    status = _http("PUT", f"{svc.endpoint}/{name}")
    assert status == 200, f"moto: creating bucket {name} answered {status}"


def _create_gs(svc: Service, name: str) -> None:
    status = _http("POST", f"{svc.endpoint}/storage/v1/b?project=coralfs-test",
                   json.dumps({"name": name}).encode(), {"Content-Type": "application/json"})
    assert status == 200, f"gcp-storage-emulator: creating bucket {name} answered {status}"


def az_shared_key_headers(method: str, path: str, query: dict[str, str], length: int = 0) -> dict[str, str]:
    """SharedKey authorization for one Azurite request (the Blob service's signing scheme),
    so the fixtures need no Azure SDK to create containers."""
    date = formatdate(usegmt=True)
    headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
    canon_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    canon_res = f"/{AZ_ACCOUNT}{path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    # The 11 standard headers; urllib always sends a Content-Type with a body, so sign one.
    fields = ["", "", str(length) if length else "", "", "application/octet-stream", "", "", "", "", "", ""]
    to_sign = "\n".join([method, *fields]) + \
        "\n" + canon_headers + canon_res
    sig = base64.b64encode(hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {AZ_ACCOUNT}:{sig}"
    return headers


def _create_az(svc: Service, name: str) -> None:
    # Path-style URL (emulator): the signed resource is /ACCOUNT + the URL path /ACCOUNT/NAME.
    path = f"/{AZ_ACCOUNT}/{name}"
    q = {"restype": "container"}
    status = _http("PUT", f"{svc.endpoint}/{name}?restype=container", b"",
                   {**az_shared_key_headers("PUT", path, q), "Content-Length": "0",
                                         "Content-Type": "application/octet-stream"})
    assert status == 201, f"Azurite: creating container {name} answered {status}"


_CREATE = {"s3": _create_s3, "gs": _create_gs, "az": _create_az}


class PortTaken(MissingEmulator):
    """Another process took the free port between its choice and the emulator's bind."""


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (so the answer to a
    probe comes from this emulator, not from whatever else got that port first)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _wait_until_up(proc: subprocess.Popen, probe: str, log: str, name: str, timeout: float = 60) -> None:
    port = int(probe.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = _tail(log)
            if "in use" in text or "EADDRINUSE" in text:
                raise PortTaken(f"{name}: port {port} was taken")
            raise MissingEmulator(f"{name} exited with {proc.returncode} at start:\n{text}")
        if _listens(proc.pid, port):
            try:
                _http("GET", probe, timeout=2)
                return
            except (OSError, urllib.error.URLError):
                pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise MissingEmulator(f"{name} did not answer on {probe} within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: str) -> str:
    try:
        with open(log, errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""


def _spawn(argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    if not os.path.exists(argv[0]):
        raise MissingEmulator(f"{argv[0]} is missing: run scripts/setup (it installs the emulators)")
    out = open(log, "ab")   # noqa: SIM115 - the child keeps it
    try:
        # Its own session: a ^C to pytest does not reach it first, and stop() owns it.
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=os.path.dirname(log), start_new_session=True,
                                env={**os.environ, **env} if env else None)
    finally:
        out.close()


# Every starter takes ``host``: 127.0.0.1 by default; a test with a network namespace
# starts its own instance on the host side of its veth pair (never on 0.0.0.0: the
# emulators check no credentials).

def start_moto(logdir: str, *, host: str = "127.0.0.1", check_credentials: bool = False) -> Service:
    """``check_credentials``: moto's IAM mode (INITIAL_NO_AUTH_ACTION_COUNT=0), where only
    keys moto issued are accepted, for the wrong-credentials tests."""
    port = free_port(host)
    log = os.path.join(logdir, "moto-auth.log" if check_credentials else "moto.log")
    proc = _spawn([os.path.join(BIN, "moto_server"), "-H", host, "-p", str(port)], log,
                  {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else None)
    ep = f"http://{host}:{port}"
    _wait_until_up(proc, ep + "/moto-api/", log, "moto_server")
    env = {"AWS_ACCESS_KEY_ID": AWS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_KEY, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": ep}
    return Service("s3", ep, env, proc, log)


def start_gcs(logdir: str, *, host: str = "127.0.0.1") -> Service:
    port = free_port(host)
    log = os.path.join(logdir, "gcs.log")
    proc = _spawn([os.path.join(BIN, "gcp-storage-emulator"), "start", "--host", host, "--port", str(port),
                   "--in-memory", "--quiet"], log)
    ep = f"http://{host}:{port}"
    _wait_until_up(proc, ep + "/storage/v1/b?project=coralfs-test", log, "gcp-storage-emulator")
    env = {"STORAGE_EMULATOR_HOST": ep}
    return Service("gs", ep, env, proc, log)


def start_azurite(logdir: str, *, host: str = "127.0.0.1") -> Service:
    port = free_port(host)
    log = os.path.join(logdir, "azurite.log")
    proc = _spawn([AZURITE_BIN, "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
                   "--blobHost", host, "--blobPort", str(port)], log)
    ep = f"http://{host}:{port}/{AZ_ACCOUNT}"
    _wait_until_up(proc, ep + "?comp=list", log, "azurite-blob")
    conn = (f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
            f"BlobEndpoint={ep};")
    env = {"AZURE_STORAGE_CONNECTION_STRING": conn}
    return Service("az", ep, env, proc, log)


def _retrying(start):
    """A starter that picks a new port when another process took the chosen one."""
    def run(logdir: str, **kw) -> Service:
        for _ in range(4):
            try:
                return start(logdir, **kw)
            except PortTaken:
                continue
        return start(logdir, **kw)
    run.__name__ = start.__name__
    run.__doc__ = start.__doc__
    return run


start_moto = _retrying(start_moto)
start_gcs = _retrying(start_gcs)
start_azurite = _retrying(start_azurite)
STARTERS = {"s3": start_moto, "gs": start_gcs, "az": start_azurite}
