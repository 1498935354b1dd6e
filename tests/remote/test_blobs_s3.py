"""The BlobStore contract (blob_conformance.py) on s3 remotes."""

from __future__ import annotations

import pytest

from tests.remote.blob_conformance import BlobConformance


@pytest.fixture
def remote(s3_remote):
    return s3_remote


class TestS3Blobs(BlobConformance):
    pass
