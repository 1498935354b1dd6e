"""What a push puts on the wire, counted at the socket: ``coralfs push`` (a real
subprocess) talks to moto through a counting TCP proxy (sync_helpers.CountingProxy) given
as the remote's --endpoint, so every byte the client sends is seen and split by request.

Accounting (per push, from the requests the proxy saw):

- object bytes: the bodies of PUT requests to ``packs/*.pack`` keys and of multipart
  part uploads (``?partNumber=``): the frames themselves;
- index bytes: the bodies of PUTs to ``packs/*.idx``;
- other bodies: refs, reflogs, the layout marker and config, multipart create/complete;
- header bytes: every request line and header block (signatures included), listed apart;
- received: every byte moto sent back (headers and bodies), listed apart.
"""

from __future__ import annotations

import pytest

from coralfs import Repository
from coralfs.remote.graph import RemoteObjects
from tests.conftest import run_cli
from tests.remote.sync_helpers import CountingProxy, Request, checkpoint, make_repo


def _account(reqs: list[Request]) -> dict[str, int]:
    out = {"object": 0, "index": 0, "other": 0, "headers": 0, "requests": len(reqs), "pack_puts": 0}
    for r in reqs:
        out["headers"] += r.head_bytes
        if r.method == "PUT" and ("partNumber=" in r.query or r.path.endswith(".pack")):
            out["object"] += r.body_bytes
            out["pack_puts"] += 1
        elif r.method == "PUT" and r.path.endswith(".idx"):
            out["index"] += r.body_bytes
        else:
            out["other"] += r.body_bytes
    return out


@pytest.fixture
def proxy(s3_remote):
    p = CountingProxy(s3_remote.endpoint)
    try:
        yield p
    finally:
        p.stop()


def test_a_fine_tune_pushed_to_s3_sends_its_new_stored_bytes_and_a_second_push_none(s3_remote, proxy, tmp_path):
    """Object bytes on the wire for a fine-tune pushed after its base: its new stored
    bytes (at most +1%); everything the client sent besides them is listed separately and
    is small; a second push sends 0 object bytes (no pack PUT at all)."""
    repo, _ = make_repo(tmp_path, steps=2)
    path = repo.path
    run_cli("remote", "add", "origin", s3_remote.url, "--endpoint", proxy.endpoint, repo=path)
    base_stored = sum(repo.store.size(o) for o in repo.store)
    run_cli("push", repo=path)
    base = _account(proxy.snapshot())
    assert base["object"] == base_stored   # the proxy sees the frames: the counting counts

    have = RemoteObjects(s3_remote.open())
    repo.commit_paths([checkpoint(tmp_path / "ft", 9)], "fine-tune")
    repo.close()
    repo = Repository.open(path)
    new_stored = sum(repo.store.size(o) for o in repo.store if o not in have)
    mark = len(proxy.snapshot())
    run_cli("push", repo=path)
    ft = _account(proxy.snapshot()[mark:])
    print(f"\nfine-tune: new stored {new_stored} B; on the wire {ft}; received so far {proxy.received} B")
    assert 0 < ft["object"] <= new_stored * 1.01
    assert ft["object"] == new_stored   # frames as stored, each once
    # the index is 48 bytes an object plus 17; refs and reflogs are text
    assert ft["index"] + ft["other"] <= new_stored * 0.01

    mark = len(proxy.snapshot())
    out = run_cli("push", repo=path).stdout
    again = _account(proxy.snapshot()[mark:])
    print(f"second push: {again}")
    assert again["object"] == 0 and again["pack_puts"] == 0 and again["index"] == 0
    assert again["requests"] > 0   # it did ask the remote (through the proxy)
    assert "pushed 0 objects" in out
