"""remote doctor against each emulator, a stopped endpoint, a missing bucket, a skewed
clock, and a file:// remote."""

from __future__ import annotations

import time

from coralfs.remote.doctor import doctor
from coralfs.remote.url import open_blobs
from tests.remote.emulators import free_port

ALL = ["credentials", "reachable", "bucket", "list", "write", "clock", "conditional writes"]


def by_name(checks):
    assert len({c.name for c in checks}) == len(checks), checks
    return {c.name: c for c in checks}


def test_doctor_on_each_emulator(cloud_remote):
    b = cloud_remote.open()
    checks = by_name(doctor(b))
    assert list(checks) == ALL
    for name in ALL[:-1]:
        assert checks[name].ok, checks[name].line()
    cas = checks["conditional writes"]
    if cloud_remote.kind == "gs":
        # gcp-storage-emulator ignores ifGenerationMatch: coralfs falls back to a host-local lock and says so.
        assert b.conditional_writes == "local-lock"
        assert not cas.ok and "ignores preconditions" in cas.message, cas.line()
    else:
        assert cas.ok, cas.line()
    assert list(b.list()) == []   # the probes are gone


def test_doctor_names_the_credentials_source(s3_remote, az_remote, gcs_remote):
    assert by_name(doctor(s3_remote.open()))["credentials"].message == "from AWS_ACCESS_KEY_ID in the environment"
    assert by_name(doctor(az_remote.open()))["credentials"].message == "from AZURE_STORAGE_CONNECTION_STRING"
    assert by_name(doctor(gcs_remote.open()))["credentials"].message == \
        "none needed for an emulator (STORAGE_EMULATOR_HOST or --endpoint)"


def test_doctor_without_credentials(s3_remote, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    c = doctor(s3_remote.open())[0]
    assert (c.name, c.ok) == ("credentials", False)
    assert c.message.startswith("none found in the environment or the cloud's files: check AWS_ACCESS_KEY_ID")


def test_doctor_with_the_service_down(cloud_remote):
    endpoint = f"http://127.0.0.1:{free_port()}" + ("/devstoreaccount1" if cloud_remote.kind == "az" else "")
    b = open_blobs(cloud_remote.url, endpoint=endpoint, options={"connect_timeout": 1, "read_timeout": 2, "retries": 1})
    try:
        checks = doctor(b)
    finally:
        b.close()
    assert [c.name for c in checks] == ["credentials", "reachable"]
    assert not checks[-1].ok
    assert f"cannot reach {endpoint}" in checks[-1].message and "is the service running?" in checks[-1].message
    assert checks[-1].line().startswith("FAIL reachable: ")


def test_doctor_with_a_missing_bucket(cloud_remote):
    url = f"{cloud_remote.kind}://no-such-bucket-{free_port()}/repo"
    checks = doctor(cloud_remote.open(url=url))
    assert not checks[-1].ok and checks[-1].name == "bucket"
    assert "does not exist: create it or fix the URL" in checks[-1].message


def test_doctor_fails_a_skewed_clock(s3_remote):
    checks = by_name(doctor(s3_remote.open(), now=lambda: time.time() + 600))
    assert not checks["clock"].ok
    assert "ahead" not in checks["clock"].message and "behind this machine's" in checks["clock"].message
    assert "timedatectl set-ntp true" in checks["clock"].message
    assert by_name(doctor(s3_remote.open(), now=lambda: time.time() + 120))["clock"].ok


def test_doctor_on_a_file_remote(file_remote):
    checks = by_name(doctor(file_remote.open()))
    assert all(c.ok for c in checks.values()), [c.line() for c in checks.values()]
    assert checks["credentials"].message == "none needed for a file:// remote"


def test_doctor_catches_a_store_that_ignores_preconditions(gcs_remote):
    """With the lock bypassed (as if the store were trusted), gcp-storage-emulator's real
    behaviour shows: the second create-only write goes through, and doctor says so."""
    b = gcs_remote.open()
    b._conditional = "native"
    c = by_name(doctor(b))["conditional writes"]
    assert not c.ok
    assert c.message.startswith("a second create-only write succeeded: remote refs are not safe on this store")
