"""Fixtures the ops-tier files share: a committed branch and a mount without a kernel."""

from tests.ops.test_staging import committed, fs  # noqa: F401 - fixtures for every file here
