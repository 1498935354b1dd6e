"""Fixtures the ops-tier files share: a mount without a kernel (the committed branch it
shows is the ``committed`` fixture of tests/conftest.py)."""

from tests.ops.test_staging import fs  # noqa: F401 - a fixture for every file here
