"""The BlobStore contract (blob_conformance.py) on gcs remotes."""

from __future__ import annotations

import pytest

from tests.remote.blob_conformance import BlobConformance


@pytest.fixture
def remote(gcs_remote):
    return gcs_remote


class TestGCSBlobs(BlobConformance):
    pass
