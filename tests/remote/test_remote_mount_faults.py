"""Remote mounts of a bucket written by `coralfs push`, when the bucket or the credentials
are wrong: a pack cut short answers EIO naming the object and its pack, never wrong
bytes, while the rest is served and umount works (file:// and moto); a wrong Azurite
account key is a one-line error of `coralfs mount` that names the remote and the fix,
with nothing left mounted."""

from __future__ import annotations

import errno
import json
import os
import re

import numpy as np
import pytest
from safetensors.numpy import save_file

from coralfs.remote.packs import PackIndexes
from tests.conftest import run_cli, sha, tree_sha
from tests.remote.emulators import AZ_KEY
from tests.remote.test_remote_mount import remote_mounted, tensor_chunks

pytestmark = [pytest.mark.mount, pytest.mark.timeout(900)]

TENSORS = 6   # 4 MiB of float32 each, 16 chunks of 256 KiB


@pytest.fixture(scope="module")
def fault_repo(tmp_path_factory):
    """One commit: a 24 MiB safetensors file of six tensors, a text file and an .npy."""
    base = tmp_path_factory.mktemp("fault-src")
    src = base / "src"
    src.mkdir()
    rng = np.random.default_rng(11)
    save_file({f"t.{i}.w": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(TENSORS)},
              str(src / "model.safetensors"))
    (src / "config.json").write_text('{"layers": 6}\n')
    np.save(src / "emb.npy", rng.standard_normal((512, 64)).astype(np.float32))
    repo = str(base / "repo")
    run_cli("init", repo)
    run_cli("config", "set", "storage.chunk_size", "256k", repo=repo)
    run_cli("commit", str(src), "-m", "one", repo=repo)
    return {"repo": repo, "src": str(src), "tree": tree_sha(src)}


def push_to(remote, repo: str, name: str) -> None:
    """`coralfs push` of main to ``remote`` in packs of about 2 MiB (so a model spans many),
    through a remote ``name`` of the module's repository, removed again after."""
    ep = ["--endpoint", remote.endpoint] if remote.endpoint else []
    run_cli("remote", "add", name, remote.url, *ep, repo=repo)
    try:
        run_cli("push", name, "main", repo=repo, env={"CORALFS_PACK_SIZE": str(2 << 20)})
    finally:
        run_cli("remote", "remove", name, repo=repo)


def tensor_ranges(model: str) -> list[tuple[str, int, int]]:
    """(name, file offset, length) of each tensor of a safetensors file, in file order."""
    with open(model, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    out = [(k, 8 + n + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0])
           for k, v in header.items() if k != "__metadata__"]
    return sorted(out, key=lambda x: x[1])


def read_at(path, off: int, length: int) -> bytes | int:
    """The bytes at ``off`` (the kernel's readahead off, 128 KiB reads), or the errno."""
    out = bytearray()
    try:
        with open(path, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            f.seek(off)
            while len(out) < length:
                b = f.read(min(128 << 10, length - len(out)))
                assert b
                out += b
    except OSError as e:
        return e.errno
    return bytes(out)


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_pack_cut_short_is_eio_naming_the_object_never_wrong_bytes(kind, fault_repo, tmp_path, request):
    remote = request.getfixturevalue(f"{kind}_remote")
    repo = fault_repo["repo"]
    push_to(remote, repo, f"cut-{kind}")
    blobs = remote.open()
    chunks = tensor_chunks(repo, "model.safetensors")
    owner = {c: name for name, cs in chunks.items() for c in cs}
    packs: dict[str, list] = {}
    for oid, loc in PackIndexes(blobs).where.items():
        packs.setdefault(loc.pack, []).append((loc.offset, loc.length, oid))
    # A pack of tensor chunks only (the commit, tree and file objects stay whole: the mount
    # starts), cut in the middle of one of its frames.
    pack = next(p for p, objs in sorted(packs.items()) if len(objs) >= 4 and all(o in owner for *_x, o in objs))
    objs = sorted(packs[pack])
    off, n, _o = objs[len(objs) // 2]
    cut = off + n // 2
    lost = {o for o_off, o_n, o in objs if o_off + o_n > cut}
    whole = blobs.get(pack)
    assert len(whole) == objs[-1][0] + objs[-1][1]
    blobs.put(pack, whole[:cut])
    model = os.path.join(fault_repo["src"], "model.safetensors")
    ranges = tensor_ranges(model)
    with open(model, "rb") as f:
        src = f.read()
    hit = {owner[o] for o in lost}
    mp = tmp_path / "m"
    with remote_mounted(remote.url, str(mp), "main", "--cache-dir", str(tmp_path / "c"),
                        *(["--endpoint", remote.endpoint] if remote.endpoint else [])) as m:
        with pytest.raises(OSError) as e:
            (mp / "model.safetensors").read_bytes()
        assert e.value.errno == errno.EIO
        served = 0
        for i, (name, t_off, t_len) in enumerate(ranges):
            got = read_at(mp / "model.safetensors", t_off, t_len)
            if name in hit:
                assert got == errno.EIO, name
                continue
            # A read's first and last pages may hold bytes of the neighbouring tensors.
            near = {ranges[j][0] for j in (i - 1, i + 1) if 0 <= j < len(ranges)}
            if got == errno.EIO and near & hit:
                continue
            assert got == src[t_off:t_off + t_len], name   # never other bytes
            served += 1
        assert hit and served >= 2, (hit, served)
        # The other files are served, byte-identical.
        for path in ("config.json", "emb.npy"):
            assert sha(mp / path) == fault_repo["tree"][path]
        with open(m["log"]) as f:
            log = f.read()
        named = re.findall(r"corrupt object ([0-9a-f]{64}): (\S+) in \S+ is cut short", log)
        assert named and all(bytes.fromhex(o) in lost and p == pack for o, p in named), (named, pack)
        # Nothing of the short pack was kept: with the pack whole again, the file is served.
        blobs.put(pack, whole)
        assert sha(mp / "model.safetensors") == fault_repo["tree"]["model.safetensors"]
        run_cli("umount", str(mp))
        assert not any(ln.split()[1] == str(mp) for ln in open("/proc/mounts"))


def test_a_mount_with_a_wrong_azure_key_is_one_line_naming_the_remote_and_the_fix(az_remote, fault_repo, tmp_path):
    repo = fault_repo["repo"]
    push_to(az_remote, repo, "az-creds")
    conn = az_remote.env["AZURE_STORAGE_CONNECTION_STRING"]
    wrong = "A" * 86 + "=="
    env = {"AZURE_STORAGE_CONNECTION_STRING": conn.replace(AZ_KEY, wrong)}
    assert wrong in env["AZURE_STORAGE_CONNECTION_STRING"]
    mp = tmp_path / "m"
    mp.mkdir()
    local = tmp_path / "local"
    run_cli("init", str(local))
    run_cli("remote", "add", "origin", az_remote.url, "--endpoint", az_remote.endpoint, repo=str(local))
    for args in ((az_remote.url, f"{mp}@main", "--endpoint", az_remote.endpoint),
                 ("--remote", "origin", str(local), f"{mp}@main")):
        p = run_cli("mount", *args, "--cache-dir", str(tmp_path / "c"), check=False, env=env)
        assert p.returncode != 0, (args, p.stdout)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, (args, p.stderr)
        msg = lines[0]
        assert az_remote.url in msg and "refused the credentials" in msg, msg
        assert ("--remote" not in args) or msg.startswith("coralfs: error: remote origin: "), msg
        assert "AZURE_STORAGE_CONNECTION_STRING" in msg, msg
        assert wrong not in p.stderr and AZ_KEY not in p.stderr, msg
        # Nothing mounted, no mount left behind for `coralfs mounts`.
        assert not any(ln.split()[1] == str(mp) for ln in open("/proc/mounts"))
        assert not os.listdir(mp)
        assert not any(x["mountpoint"] == str(mp) for x in json.loads(run_cli("mounts", "--json").stdout))
    # A local error is not the remote's: a missing mountpoint is named without it.
    p = run_cli("mount", "--remote", "origin", str(local), f"{tmp_path / 'nowhere'}@main", check=False)
    assert p.returncode != 0 and "remote origin" not in p.stderr and "nowhere" in p.stderr, p.stderr
    # The same mount with the right key works (the message was about the key, nothing else).
    with remote_mounted(az_remote.url, str(mp), "main", "--cache-dir", str(tmp_path / "c"),
                        "--endpoint", az_remote.endpoint):
        assert sha(mp / "config.json") == fault_repo["tree"]["config.json"]
