"""Fixtures the ops-tier files share: a committed branch and a mount without a kernel.

Every ops test also fails if a handler logged an unexpected error (an ERROR record with a
traceback from a coralfs.fs logger): adapter.to_errno answers EIO for a bug, and only the
log says it was one, so a test that passes while a handler crashes would hide it."""

from __future__ import annotations

import logging

import pytest

from tests.ops.test_staging import fs  # noqa: F401 - a fixture for every file here (committed: tests/conftest.py)


def unexpected_errors(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records
            if r.name.startswith("coralfs.fs") and r.levelno >= logging.ERROR and r.exc_info]


@pytest.fixture(autouse=True)
def no_unexpected_errors(caplog):
    yield
    bad = unexpected_errors(caplog.get_records("setup") + caplog.get_records("call"))
    if bad:
        pytest.fail("a handler logged an unexpected error:\n" + "\n".join(
            f"{r.name}: {r.getMessage()}" for r in bad), pytrace=False)
