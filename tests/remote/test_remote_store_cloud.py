"""The ObjectStore contract (tests/unit/store_conformance.py) for RemoteObjectStore on each
emulator (moto, gcp-storage-emulator, Azurite), and packed reads through each backend."""

from __future__ import annotations

import pytest

from coralfs.remote.store import RemoteObjectStore
from tests.unit.store_conformance import StoreConformance


class CloudStoreConformance(StoreConformance):
    @pytest.fixture(autouse=True)
    def _cloud(self, remote):
        self.remote = remote

    def make(self, tmp_path):
        return RemoteObjectStore(self.remote.open(), str(tmp_path / "cache"), 1 << 30, read_budget=60.0)


class TestRemoteStoreS3(CloudStoreConformance):
    @pytest.fixture
    def remote(self, s3_remote):
        return s3_remote


class TestRemoteStoreGCS(CloudStoreConformance):
    @pytest.fixture
    def remote(self, gcs_remote):
        return gcs_remote


class TestRemoteStoreAzure(CloudStoreConformance):
    @pytest.fixture
    def remote(self, az_remote):
        return az_remote
