"""The BlobStore contract (blob_conformance.py) on file remotes."""

from __future__ import annotations

import pytest

from tests.remote.blob_conformance import BlobConformance


@pytest.fixture
def remote(file_remote):
    return file_remote


class TestFileBlobs(BlobConformance):
    pass
