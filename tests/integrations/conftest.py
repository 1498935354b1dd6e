"""The moto S3 server of tests/remote (``moto``, ``s3_remote``: publish sagemaker uses it), and
a real MLflow tracking server (SQLite backend, local artifact root) on 127.0.0.1 at a free
port, started from the virtualenv once per test session and stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.remote.conftest import moto, s3_remote  # noqa: F401  (the moto server, for publish sagemaker)

MLFLOW = os.path.join(os.path.dirname(sys.executable), "mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url + "/health", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = open(d / "server.log", "wb")
    proc = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{d}/mlflow.db", "--default-artifact-root", str(d / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300   # its first start creates the database: slow on a busy machine
        while not _answers(url):
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited ({proc.returncode}):\n{(d / 'server.log').read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mlflow server did not answer at {url}:\n{(d / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        # its own process group: the server and the uvicorn workers it started
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
