"""The emulator launcher itself: another loopback address (as a network-namespace test
uses the host side of its veth pair), pause/resume, and stop by PID."""

from __future__ import annotations

import os

import pytest

from coralfs.remote.blobs import RemoteUnavailable
from coralfs.remote.url import open_blobs
from tests.remote import emulators
from tests.remote.emulators import STARTERS, MissingEmulator


@pytest.mark.parametrize("kind", ["s3", "gs", "az"])
def test_start_on_another_address_pause_resume_stop(kind, tmp_path, monkeypatch):
    svc = STARTERS[kind](str(tmp_path), host="127.0.0.2")
    try:
        assert svc.endpoint.startswith("http://127.0.0.2:")
        for k, v in svc.env.items():
            monkeypatch.setenv(k, v)
        b = open_blobs(svc.url(svc.new_bucket(), "r"), endpoint=svc.endpoint,
                       options={"connect_timeout": 1, "read_timeout": 2, "retries": 0})
        b.put("k", b"v")
        svc.pause()
        with pytest.raises(RemoteUnavailable):
            b.get("k")
        svc.resume()
        assert b.get("k") == b"v"
        b.close()
        svc.pause()   # stop() must end a paused service too
    finally:
        svc.stop()
    assert svc.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(svc.pid, 0)


def test_a_missing_emulator_names_the_setup_script(tmp_path, monkeypatch):
    monkeypatch.setattr(emulators, "AZURITE_BIN", str(tmp_path / "no-azurite-blob"))
    with pytest.raises(MissingEmulator) as e:
        emulators.start_azurite(str(tmp_path))
    assert str(e.value) == f"{tmp_path / 'no-azurite-blob'} is missing: run scripts/setup (it installs the emulators)"
