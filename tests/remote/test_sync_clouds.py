"""Remote refs, push, fetch and clone against the real emulators (moto for S3,
gcp-storage-emulator for GCS, Azurite for Azure Blob; fixtures in conftest.py), and a
clone from a second machine: a network namespace reaching the emulator over a veth pair."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from coralfs import Repository
from coralfs.objects.ids import to_hex
from coralfs.remote.blobs import RemoteUnavailable
from coralfs.remote.packs import PACKS, decode_index
from coralfs.remote.refs import RemoteRefs
from coralfs.remote.sync import DamagedRemoteObject, RemoteObjects, clone, fetch, push
from coralfs.remote.url import open_blobs
from coralfs.remote.verify import fsck_remote
from tests.conftest import run_cli
from tests.remote.emulators import STARTERS
from tests.remote.sync_helpers import CountingProxy, Wrapped, checkpoint, exports, make_repo, snapshot
from tests.remote.test_sync_kill import ProxyWatch, kill_loops
from tests.remote.test_sync_race import race
from tests.unit.refs_conformance import RefsConformance

MAIN = "refs/heads/main"


class TestRemoteRefsOnEmulators(RefsConformance):
    @pytest.fixture(autouse=True)
    def _cloud(self, cloud_remote):
        self.cloud = cloud_remote

    def make(self, tmp_path):
        return RemoteRefs(self.cloud.open())


def test_push_fetch_clone_on_each_emulator(cloud_remote, tmp_path):
    repo, _ = make_repo(tmp_path, steps=3)
    blobs = cloud_remote.open()
    res = push(repo, blobs, "origin", [MAIN])
    assert res.bytes == sum(repo.store.size(o) for o in repo.store)   # frames as stored
    again = push(repo, blobs, "origin", [MAIN])
    assert (again.objects, again.bytes, again.packs) == (0, 0, 0)
    cl, _ = clone(cloud_remote.url, str(tmp_path / "clone"), endpoint=cloud_remote.endpoint)
    revs = ["main~2", "main~1", "main"]
    assert exports(cl, tmp_path / "a", revs) == exports(repo, tmp_path / "b", revs)
    # a fine-tune sends its new stored bytes only; the clone fetches just those
    have = RemoteObjects(blobs)
    repo.commit_paths([checkpoint(tmp_path / "ft", 7)], "fine-tune")
    new_stored = sum(repo.store.size(o) for o in repo.store if o not in have)
    assert push(repo, blobs, "origin", [MAIN]).bytes == new_stored
    assert fetch(cl, blobs, "origin").bytes == new_stored
    assert cl.refs.read("refs/remotes/origin/main") == repo.branch_head("main")
    assert fsck_remote(blobs).ok and cl.fsck().ok


@pytest.mark.slow
def test_two_pushers_on_each_emulator_lose_no_commit(cloud_remote, tmp_path):
    race(tmp_path, cloud_remote.url, cloud_remote.open, cloud_remote.endpoint)


def test_an_interrupted_push_resumes_on_each_emulator(cloud_remote, tmp_path, monkeypatch):
    monkeypatch.setenv("CORALFS_PACK_SIZE", str(96 << 10))
    repo, _ = make_repo(tmp_path, steps=3)
    n = {"idx": 0}

    def fail(key: str, _n: int) -> bool:
        n["idx"] += key.endswith(".idx")
        return key.endswith(".idx") and n["idx"] == 3   # cut off after the 3rd pack, before its index

    with pytest.raises(RemoteUnavailable):
        push(repo, Wrapped(cloud_remote.open(), fail), "origin", [MAIN])
    first = [k for k in cloud_remote.open().list(PACKS) if k.endswith(".idx")]
    blobs = Wrapped(cloud_remote.open())
    res = push(repo, blobs, "origin", [MAIN])
    assert res.cleaned == 1 and len(first) == 2
    sent_before = sum(len(decode_index(blobs.get(k))) for k in first)
    assert res.objects == len(list(repo.store)) - sent_before
    rep = fsck_remote(blobs)
    assert rep.ok and rep.unindexed == []
    cl, _ = clone(cloud_remote.url, str(tmp_path / "c"), endpoint=cloud_remote.endpoint)
    assert exports(cl, tmp_path / "a", ["main"]) == exports(repo, tmp_path / "b", ["main"])


def test_a_damaged_object_in_the_bucket_is_named(cloud_remote, tmp_path):
    repo, _ = make_repo(tmp_path, steps=1)
    blobs = cloud_remote.open()
    push(repo, blobs, "origin", [MAIN])
    idx = next(k for k in blobs.list(PACKS) if k.endswith(".idx"))
    pack = idx[:-4] + ".pack"
    oid, off, n = max(decode_index(blobs.get(idx)), key=lambda r: r[2])
    data = bytearray(blobs.get(pack))
    data[off + n // 2] ^= 0x55
    blobs.put(pack, bytes(data))
    with pytest.raises(DamagedRemoteObject) as e:
        clone(cloud_remote.url, str(tmp_path / "c"), endpoint=cloud_remote.endpoint)
    assert to_hex(oid) in str(e.value) and pack in str(e.value)
    assert Repository.open(str(tmp_path / "c")).branches() == {}
    assert any(to_hex(oid) in p for p in fsck_remote(blobs).problems)


@pytest.mark.parametrize("kind", ["s3", "gs", "az"])
def test_an_emulator_that_is_down_fails_in_one_line_naming_the_remote(kind, tmp_path):
    svc = STARTERS[kind](str(tmp_path))   # its own instance, stopped below
    url = svc.url(svc.new_bucket(), "repo")
    svc.stop()
    repo, _ = make_repo(tmp_path, steps=1)
    env = dict(svc.env)
    run_cli("remote", "add", "origin", url, repo=repo.path, env=env)
    before = snapshot(repo.path)
    for cmd in (["push"], ["fetch"], ["pull"], ["fsck", "--remote", "origin"]):
        p = run_cli(*cmd, repo=repo.path, check=False, env=env)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 5 and len(lines) == 1 and "remote origin" in lines[0], p.stderr
    p = run_cli("clone", url, str(tmp_path / "c"), check=False, env=env)
    assert p.returncode == 5 and len(p.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "c")
    assert snapshot(repo.path) == before


# -- a second machine: a network namespace with a veth pair to this one -------------------

@pytest.fixture
def netns():
    tag = uuid.uuid4().hex[:6]
    name, host_if, ns_if = f"cfs-{tag}", f"vh{tag}", f"vn{tag}"
    net = 16 + int(tag[:2], 16) % 200
    host_ip, ns_ip = f"10.231.{net}.1", f"10.231.{net}.2"

    def ip(*args: str, ns: bool = False) -> None:
        cmd = ["ip", "netns", "exec", name, "ip", *args] if ns else ["ip", *args]
        subprocess.run(cmd, check=True, capture_output=True)

    ip("netns", "add", name)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("addr", "add", f"{ns_ip}/30", "dev", ns_if, ns=True)
        ip("link", "set", ns_if, "up", ns=True)
        ip("link", "set", "lo", "up", ns=True)
        yield name, host_ip
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


@pytest.mark.parametrize("kind", ["s3", "gs", "az"])
def test_push_here_clone_on_a_second_machine(kind, netns, tmp_path, monkeypatch):
    name, host_ip = netns
    svc = STARTERS[kind](str(tmp_path), host=host_ip)   # reachable from the namespace only over the veth
    try:
        for k, v in svc.env.items():
            monkeypatch.setenv(k, v)
        url = svc.url(svc.new_bucket(), "team/model")
        repo, _ = make_repo(tmp_path, steps=3)
        push(repo, open_blobs(url), "origin", [MAIN])
        dest = str(tmp_path / "there")
        env = dict(os.environ, **svc.env)
        env.pop("CORALFS_REPO", None)
        p = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-m", "coralfs", "clone", url, dest],
                           capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stderr
        cl = Repository.open(dest)
        revs = ["main~2", "main~1", "main"]
        assert exports(cl, tmp_path / "a", revs) == exports(repo, tmp_path / "b", revs)
        assert cl.fsck().ok
    finally:
        svc.stop()


def test_a_partial_clone_reads_the_rest_from_the_emulator_on_demand(cloud_remote, tmp_path):
    repo, _ = make_repo(tmp_path, steps=2)
    push(repo, cloud_remote.open(), "origin", [MAIN])
    part, res = clone(cloud_remote.url, str(tmp_path / "p"), endpoint=cloud_remote.endpoint, pattern="head.*")
    assert res.bytes < sum(repo.store.size(o) for o in repo.store)
    again = Repository.open(part.path)
    assert exports(again, tmp_path / "a", ["main", "main~1"]) == exports(repo, tmp_path / "b", ["main", "main~1"])
    assert again.store.fetched > 0 and again.fsck().ok


def test_the_commands_against_an_emulator(cloud_remote, tmp_path):
    repo, _ = make_repo(tmp_path, steps=2)
    ep = ["--endpoint", cloud_remote.endpoint] if cloud_remote.kind == "s3" else []
    run_cli("remote", "add", "origin", cloud_remote.url, *ep, repo=repo.path)
    r = run_cli("remote", "doctor", "origin", repo=repo.path, check=False)
    assert "layout: empty" in r.stdout and "reachable" in r.stdout
    assert "main: (new)" in run_cli("push", repo=repo.path).stdout
    assert "up to date" in run_cli("remote", "show", "origin", repo=repo.path).stdout
    run_cli("clone", cloud_remote.url, str(tmp_path / "c"), *ep)
    run_cli("export", "main~1", str(tmp_path / "out"), repo=str(tmp_path / "c"))
    assert exports(Repository.open(str(tmp_path / "c")), tmp_path / "x", ["main~1"]) == \
        exports(repo, tmp_path / "y", ["main~1"])
    assert "no problems" in run_cli("fsck", "--remote", "origin", repo=repo.path).stdout


@pytest.mark.slow
def test_kill_push_fetch_and_clone_against_moto(s3_remote, tmp_path):
    """The kill loops of test_sync_kill.py; the commands reach moto through a counting
    proxy, which tells when a pack's body has gone out (the second push is killed then)."""
    proxy = CountingProxy(s3_remote.endpoint)
    try:
        kill_loops(tmp_path, s3_remote.url, s3_remote.sibling("scratch"), ProxyWatch(proxy), endpoint=proxy.endpoint)
    finally:
        proxy.stop()


def test_a_missing_bucket_fails_in_one_line_naming_the_remote_and_the_fix(cloud_remote, tmp_path):
    repo, _ = make_repo(tmp_path, steps=1)
    url = f"{cloud_remote.kind}://no-such-bucket-{uuid.uuid4().hex[:8]}/repo"
    run_cli("remote", "add", "origin", url, repo=repo.path)
    before = snapshot(repo.path)
    for cmd in (["push"], ["fetch"], ["fsck", "--remote", "origin"]):
        p = run_cli(*cmd, repo=repo.path, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode != 0 and len(lines) == 1, p.stderr
        assert "remote origin" in lines[0] and "does not exist" in lines[0] and "create it" in lines[0], lines[0]
    assert snapshot(repo.path) == before


def test_backend_options_come_from_the_remote_config(s3_remote, tmp_path):
    from coralfs.remote.graph import open_remote
    repo, _ = make_repo(tmp_path, steps=1)
    run_cli("remote", "add", "origin", s3_remote.url, repo=repo.path)
    run_cli("config", "set", "remote.origin.read_timeout", "5", repo=repo.path)
    run_cli("config", "set", "remote.origin.retries", "0", repo=repo.path)
    p = run_cli("config", "set", "remote.origin.retries", "1000", repo=repo.path, check=False)
    assert p.returncode == 2 and "0 to 100" in p.stderr
    _name, blobs = open_remote(Repository.open(repo.path), "origin")
    assert (blobs.limits.read_timeout, blobs.limits.retries) == (5, 0)
    assert "main: (new)" in run_cli("push", repo=repo.path).stdout
