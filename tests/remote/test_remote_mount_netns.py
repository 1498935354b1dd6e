"""A second machine: a network namespace joined to this one by a veth pair, where a
second coralfs mounts a commit from moto listening on the host side of the pair, so the
chunks a read needs really cross a network interface."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from tests.conftest import PYTHON, tree_sha
from tests.mount.conftest import force_unmount
from tests.remote.emulators import start_moto
from tests.remote.remote_build import build_remote
from tests.remote.test_remote_mount import remote_stats
from tests.remote.test_remote_mount_cloud import small_repo  # noqa: F401 - the shared fixture

pytestmark = [pytest.mark.mount, pytest.mark.timeout(600)]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def second_machine(tmp_path):
    """(netns name, host-side address, its own address) of a namespace joined by a veth pair; removed after."""
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"crm-{tag}", f"crmh{tag}", f"crmn{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    ip("netns", "add", ns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_mount_in_another_network_namespace_reads_over_the_veth(second_machine, small_repo, tmp_path):  # noqa: F811
    ns, host_ip, ns_ip = second_machine
    svc = start_moto(str(tmp_path), host=host_ip)
    mp = tmp_path / "m"
    mp.mkdir()
    pid = None
    try:
        env = {**os.environ, **svc.env}
        os.environ.update(svc.env)
        try:
            from coralfs.remote.url import open_blobs
            url = svc.url(svc.new_bucket(), "repo")
            build_remote(small_repo["repo"], open_blobs(url, endpoint=svc.endpoint), pack_size=4 << 20)
        finally:
            for k in svc.env:
                os.environ.pop(k, None)
        # Only the daemon's network namespace differs: the mount is visible here.
        p = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", PYTHON, "-m", "coralfs", "mount", url, f"{mp}@main",
                            "--endpoint", svc.endpoint, "--cache-dir", str(tmp_path / "cache")],
                           capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        pid = int(p.stdout.split("(pid ")[1].split(",")[0])
        with open(f"/proc/{pid}/net/fib_trie") as f:
            assert ns_ip in f.read()          # the daemon lives behind the veth
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert tree_sha(mp) == small_repo["second"]
        assert remote_stats(str(mp))["bytes_fetched"] > 8 << 20
    finally:
        force_unmount(str(mp), pid)
        svc.stop()
