"""Service fixtures for remote tests: moto (S3), gcp-storage-emulator (GCS) and Azurite
(Azure Blob) as real processes on random loopback ports, one each per test session.

- ``moto``, ``gcs_emulator``, ``azurite``: session-scoped :class:`emulators.Service`
  objects (``endpoint``, ``env``, ``pid``, ``pause()``/``resume()`` for fault tests,
  ``new_bucket()``); stopped by PID at the end (SIGCONT first).
- ``s3_remote``, ``gcs_remote``, ``az_remote``: a fresh, empty bucket/container for one
  test as a :class:`Remote` (``url``, ``endpoint``, ``env``, ``service``, ``open()``). The
  service's environment (credentials, endpoint variables) is set for the test, so
  ``open_blobs(remote.url)`` and a ``coralfs`` subprocess reach the emulator without
  ``--endpoint``; ~/.aws is hidden.
- ``cloud_remote``: parametrized over the three; ``file_remote``: a file:// remote.

A missing emulator fails the test with the command that installs it (scripts/setup).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from coralfs.remote.blobs import BlobStore
from coralfs.remote.url import open_blobs
from tests.remote.emulators import STARTERS, MissingEmulator, Service


@dataclass
class Remote:
    url: str
    endpoint: str | None
    env: dict[str, str]
    service: Service | None
    opened: list[BlobStore] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.url.split("://", 1)[0]

    def sibling(self, name: str) -> str:
        """The URL of another prefix in the same bucket (file://: a sibling directory)."""
        if self.kind == "file":
            path = os.path.join(os.path.dirname(self.url[len("file://"):]), name)
            os.makedirs(path, exist_ok=True)
            return f"file://{path}"
        return self.url.rsplit("/", 1)[0] + "/" + name

    def open(self, options: dict | None = None, *, url: str | None = None) -> BlobStore:
        b = open_blobs(url or self.url, endpoint=self.endpoint, options=options)
        self.opened.append(b)
        return b


def _start(kind: str, tmp_path_factory) -> Iterator[Service]:
    logdir = str(tmp_path_factory.mktemp(f"emulator-{kind}"))
    try:
        svc = STARTERS[kind](logdir)
    except MissingEmulator as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[Service]:
    yield from _start("s3", tmp_path_factory)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory) -> Iterator[Service]:
    yield from _start("gs", tmp_path_factory)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Iterator[Service]:
    yield from _start("az", tmp_path_factory)


# Variables that could point a client at a real cloud account instead of the emulator.
_HIDE = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "GOOGLE_APPLICATION_CREDENTIALS",
         "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_CLIENT_ID")


def _remote(svc: Service, monkeypatch, tmp_path) -> Iterator[Remote]:
    # A test may have left it paused; a fresh test starts with a running service.
    svc.resume()
    for name in _HIDE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    for k, v in svc.env.items():
        monkeypatch.setenv(k, v)
    r = Remote(svc.url(svc.new_bucket(), "repo"), svc.endpoint, dict(svc.env), svc)
    yield r
    svc.resume()
    for b in r.opened:
        b.close()


@pytest.fixture
def s3_remote(moto, monkeypatch, tmp_path) -> Iterator[Remote]:
    yield from _remote(moto, monkeypatch, tmp_path)


@pytest.fixture
def gcs_remote(gcs_emulator, monkeypatch, tmp_path) -> Iterator[Remote]:
    yield from _remote(gcs_emulator, monkeypatch, tmp_path)


@pytest.fixture
def az_remote(azurite, monkeypatch, tmp_path) -> Iterator[Remote]:
    yield from _remote(azurite, monkeypatch, tmp_path)


@pytest.fixture(params=["s3", "gs", "az"])
def cloud_remote(request) -> Remote:
    return request.getfixturevalue({"s3": "s3_remote", "gs": "gcs_remote", "az": "az_remote"}[request.param])


@pytest.fixture
def file_remote(tmp_path) -> Iterator[Remote]:
    d = tmp_path / "file-remote"
    d.mkdir()
    r = Remote(f"file://{d}", None, {}, None)
    yield r
    for b in r.opened:
        b.close()
