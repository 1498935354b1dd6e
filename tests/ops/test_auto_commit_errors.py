"""The ops tier of failing auto-commits: a file that fails to ingest is named in status
(and .coral/status.json) with the time, attempts back off exponentially up to a cap, a
change to a counted file starts them over, each attempt logs one line, and the next
successful commit clears the error."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import trio
from safetensors.numpy import save

from coralfs.formats.base import FormatError
from coralfs.fs.writable import ops as staging_ops
from coralfs.fs.writable.vfs import AUTO_RETRY_CAP, AutoCommit
from tests.ops.test_staging import FS


def _safetensors(seed: int = 0) -> bytes:
    return save({"w": np.random.default_rng(seed).standard_normal((64, 64)).astype(np.float32)})


def _truncated() -> bytes:
    """A file a checkpoint writer killed halfway leaves: a valid header, half the data."""
    data = _safetensors()
    return data[: len(data) // 2]


def _status_json(f: FS) -> dict:
    return json.loads(f.cat(".coral/status.json"))


def test_a_failing_auto_commit_is_shown_backs_off_and_recovers(repo, committed):
    f = FS(repo, auto=AutoCommit(debounce=2.0))
    s = f.sfs
    head = repo.branch_head("main")
    f.put("good.bin", b"good bytes")
    f.put("ckpt.safetensors", _truncated())
    t = s.last_write + 2.5
    delays = []
    before = time.time()
    for _ in range(11):
        assert s.auto_due(t)
        with pytest.raises(FormatError) as e:
            s.auto_commit()
        d = s.auto_failed(e.value, t)
        assert not s.auto_due(t + d - 0.01)  # waits out its backoff, however often polled
        delays.append(d)
        t += d
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, AUTO_RETRY_CAP, AUTO_RETRY_CAP, AUTO_RETRY_CAP]
    assert repo.branch_head("main") == head
    for err in (s.status()["auto_commit"]["last_error"], _status_json(f)["auto_commit"]["last_error"]):
        assert err["path"] == "ckpt.safetensors" and err["error"].startswith("ckpt.safetensors: ")
        assert err["attempts"] == 11 and before <= err["time"] <= time.time() < err["next_attempt"]
    # Saving the file again (a fix, or the next checkpoint) starts the backoff over.
    f.put("ckpt.safetensors", _safetensors(1))
    assert s.auto_failures == 0 and s.status()["auto_commit"]["last_error"]["next_attempt"] is None
    assert not s.auto_due(s.last_write + 1.9) and s.auto_due(s.last_write + 2.1)
    out = s.auto_commit()
    assert out["commit"] and s.status()["auto_commit"]["last_error"] is None
    assert {"good.bin", "ckpt.safetensors"} <= set(repo.tree_of("main").entries)
    f.close_all()


def test_a_commit_of_a_failing_mount_clears_the_error_once_it_succeeds(repo, committed):
    f = FS(repo, auto=AutoCommit(debounce=0.0))
    s = f.sfs
    f.put("ckpt.safetensors", _truncated())
    with pytest.raises(FormatError) as e:
        s.auto_commit()
    s.auto_failed(e.value, time.monotonic())
    assert not f.control({"op": "commit", "message": "by hand"})["ok"]  # still broken
    assert s.status()["auto_commit"]["last_error"]["attempts"] == 1
    f.unlink("ckpt.safetensors")
    assert f.control({"op": "commit", "message": "by hand"})["ok"]
    assert s.status()["auto_commit"]["last_error"] is None and s.auto_failures == 0
    f.close_all()


def test_the_auto_commit_loop_logs_each_attempt_once_and_waits_between_them(repo, committed, monkeypatch, caplog):
    monkeypatch.setattr(staging_ops, "AUTO_POLL", 0.01)  # polled often: only attempts may log
    f = FS(repo, auto=AutoCommit(debounce=0.0))
    s = f.sfs
    f.put("ckpt.safetensors", _truncated())
    caplog.set_level(logging.INFO, logger="coralfs.fs.writable")

    async def watch() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as n:
                n.start_soon(f.ops.auto_commit_loop)
                while s.auto_failures < 2:
                    await trio.sleep(0.01)
                n.cancel_scope.cancel()

    trio.run(watch)
    failed = [r for r in caplog.records if "auto-commit failed" in r.getMessage()]
    assert len(failed) == s.auto_failures == 2
    assert "ckpt.safetensors" in failed[0].getMessage() and "attempt 1, next in 1 s" in failed[0].getMessage()
    assert failed[1].created - failed[0].created >= 1.0 - 0.05  # the first backoff (1 s) was waited out
    assert repo.branch_head("main") == s.stage.base
    f.close_all()
