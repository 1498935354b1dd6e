"""The BlobStore contract (blob_conformance.py) on azure remotes."""

from __future__ import annotations

import pytest

from tests.remote.blob_conformance import BlobConformance


@pytest.fixture
def remote(az_remote):
    return az_remote


class TestAzureBlobs(BlobConformance):
    pass
