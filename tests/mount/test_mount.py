"""Read-only mounts through the kernel: bytes, frameworks, mmap, laziness, errors, crashes."""

from __future__ import annotations

import errno
import gc
import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from tests.conftest import run_cli

from .conftest import force_unmount, mounted, sha, stats, tree_sha

pytestmark = [pytest.mark.mount, pytest.mark.timeout(600)]


@pytest.mark.parametrize("ref,which", [("v1", 1), ("exp", 2), ("SHORT", 2), ("main~1", 1)])
def test_every_file_byte_identical(series, mnt, ref, which):
    if ref == "SHORT":
        ref = series["ids"][2][:10]
    with mounted(series["repo"], mnt, ref):
        assert tree_sha(mnt) == tree_sha(series["src"][which])
        st = os.stat(os.path.join(mnt, "model.safetensors"))
        assert st.st_size == os.path.getsize(os.path.join(series["src"][which], "model.safetensors"))
        assert st.st_blksize >= 1 << 20
        from coralfs import Repository
        c = Repository.open(series["repo"]).read_commit(bytes.fromhex(series["ids"][which]))
        assert int(st.st_mtime) == c.time
        ino1 = os.stat(os.path.join(mnt, "config.json")).st_ino
        assert os.stat(os.path.join(mnt, "config.json")).st_ino == ino1
        meta = json.load(open(os.path.join(mnt, ".coral", "commit.json")))
        assert meta["id"] == series["ids"][which] and meta["message"] == f"commit {which}"


def test_frameworks_load_by_path(series, mnt):
    from safetensors import safe_open
    from safetensors.torch import load_file
    src = series["src"][2]
    with mounted(series["repo"], mnt, "main"):
        a = load_file(os.path.join(mnt, "model.safetensors"))
        b = load_file(os.path.join(src, "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        with safe_open(os.path.join(mnt, "model.safetensors"), "pt") as f:
            sl = f.get_slice("embeddings.word_embeddings.weight")
            assert torch.equal(sl[100:200, :16], b["embeddings.word_embeddings.weight"][100:200, :16])
        ck = torch.load(os.path.join(mnt, "checkpoint.pt"), mmap=True, weights_only=True)
        ck0 = torch.load(os.path.join(src, "checkpoint.pt"), weights_only=True)
        assert all(torch.equal(ck["model"][k], ck0["model"][k]) for k in ck0["model"])
        import h5py
        with h5py.File(os.path.join(mnt, "weights.h5"), "r") as f, h5py.File(os.path.join(src, "weights.h5")) as g:
            np.testing.assert_array_equal(f["dense/kernel"][()], g["dense/kernel"][()])
            assert f.attrs["seed"] == 2
        arr = np.load(os.path.join(mnt, "embeddings.npy"), mmap_mode="r")
        np.testing.assert_array_equal(arr, np.load(os.path.join(src, "embeddings.npy")))
        # per-tensor .npy views, memory-mapped
        v = np.load(os.path.join(mnt, ".coral", "tensors", "model.safetensors",
                                 "encoder.layer.0.attention.self.query.weight.npy"), mmap_mode="r")
        np.testing.assert_array_equal(np.asarray(v), b["encoder.layer.0.attention.self.query.weight"].numpy())
        k = np.load(os.path.join(mnt, ".coral", "tensors", "weights.h5", "dense", "kernel.npy"), mmap_mode="r")
        assert k.shape == (512, 256)
        del a, sl, ck, arr, v, k  # each maps the mount's files: unmounting waits for them


def test_sentence_transformers_from_the_mount(series, mnt):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer
    with mounted(series["repo"], mnt, "v1"):
        m1 = SentenceTransformer(mnt, device="cpu")
        m2 = SentenceTransformer(series["src"][1], device="cpu")
        s = ["coralfs mounts model weights", "a second sentence"]
        np.testing.assert_array_equal(m1.encode(s), m2.encode(s))
        del m1  # its weights map the mount's file
        gc.collect()


def test_mmap_equals_read_and_concurrent_readers(series, mnt):
    src = os.path.join(series["src"][2], "model.safetensors")
    want = open(src, "rb").read()
    with mounted(series["repo"], mnt, "main"):
        path = os.path.join(mnt, "model.safetensors")
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            assert m[:] == want
            assert m[12345:99999] == want[12345:99999]
        errors = []

        def reader(seed):
            rng = np.random.default_rng(seed)
            with open(path, "rb") as f:
                for _ in range(40):
                    off = int(rng.integers(0, len(want) - 1))
                    n = int(rng.integers(1, 3 << 20))
                    f.seek(off)
                    if f.read(n) != want[off:off + n]:
                        errors.append((off, n))
        ts = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
        [t.start() for t in ts]
        code = "import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())"
        procs = [subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
        [t.join() for t in ts]
        outs = [p.communicate()[0].strip() for p in procs]
        assert not errors
        assert outs == [sha(src)] * 3


def _committed(tmp_path, tensors: dict, extra: dict | None = None) -> tuple[str, str]:
    """A repository with one commit of model.safetensors (and extra text files)."""
    from safetensors.numpy import save_file
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    d = tmp_path / "src"
    d.mkdir()
    save_file(tensors, str(d / "model.safetensors"))
    for name, text in (extra or {}).items():
        (d / name).write_text(text)
    run_cli("commit", str(d), "-m", "x", repo=repo)
    return repo, str(d)


def test_laziness_one_tensor_of_a_large_model(tmp_path, mnt):
    rng = np.random.default_rng(0)
    tensors = {f"layer{i:02d}.weight": rng.standard_normal((4096, 4096), dtype=np.float32) for i in range(16)}
    want = tensors["layer07.weight"]
    repo, _ = _committed(tmp_path, tensors)  # 16 x 64 MiB = 1 GiB
    del tensors
    from safetensors import safe_open
    with mounted(repo, mnt, "main"):
        before = stats(mnt)["decoded_bytes"]
        with safe_open(os.path.join(mnt, "model.safetensors"), "np") as f:
            got = f.get_tensor("layer07.weight")
        np.testing.assert_array_equal(got, want)
        decoded = stats(mnt)["decoded_bytes"] - before
        assert want.nbytes <= decoded <= 1.2 * want.nbytes, (decoded, want.nbytes)
        # mmap page faults on one tensor decode its chunks once, not page by page
        before = stats(mnt)
        arr = np.load(os.path.join(mnt, ".coral", "tensors", "model.safetensors", "layer03.weight.npy"), mmap_mode="r")
        assert float(arr[::64, ::64].sum()) == pytest.approx(float(arr[::64, ::64].sum()))
        after = stats(mnt)
        assert after["decoded_chunks"] - before["decoded_chunks"] <= 17  # 16 chunks of 4 MiB + header
        del arr  # it maps the mount's file


def test_include_narrows_the_mount(series, mnt):
    from safetensors.torch import load_file
    with mounted(series["repo"], mnt, "main", "--include", "encoder.layer.0.*", "--include", "pooler.*"):
        t = load_file(os.path.join(mnt, "model.safetensors"))
        assert t and all(k.startswith(("encoder.layer.0.", "pooler.")) for k in t)
        assert os.path.getsize(os.path.join(mnt, "model.safetensors")) < 20 << 20
        assert sha(os.path.join(mnt, "config.json")) == sha(os.path.join(series["src"][2], "config.json"))
        names = os.listdir(os.path.join(mnt, ".coral", "tensors", "model.safetensors"))
        assert names and all(n.startswith(("encoder.layer.0.", "pooler.")) for n in names)
        del t  # its tensors map the mount's file


def test_writes_fail_with_erofs(series, mnt):
    with mounted(series["repo"], mnt, "main"):
        for action in (lambda: open(os.path.join(mnt, "new.txt"), "w"),
                       lambda: open(os.path.join(mnt, "config.json"), "r+b"),
                       lambda: os.unlink(os.path.join(mnt, "config.json")),
                       lambda: os.mkdir(os.path.join(mnt, "d")),
                       lambda: os.rename(os.path.join(mnt, "config.json"), os.path.join(mnt, "c.json")),
                       lambda: os.chmod(os.path.join(mnt, "config.json"), 0o777),
                       lambda: os.truncate(os.path.join(mnt, "config.json"), 0)):
            with pytest.raises(OSError) as e:
                action()
            assert e.value.errno == errno.EROFS


def test_repository_view(series, mnt):
    with mounted(series["repo"], mnt):
        assert sorted(os.listdir(mnt)) == [".coral", "HEAD", "branches", "commits", "tags"]
        assert os.readlink(os.path.join(mnt, "HEAD")) == "branches/main"
        assert sorted(os.listdir(os.path.join(mnt, "branches"))) == ["exp", "main"]
        assert os.listdir(os.path.join(mnt, "tags")) == ["v1"]
        assert tree_sha(os.path.join(mnt, "tags", "v1")) == tree_sha(series["src"][1])
        short = series["ids"][1][:8]
        assert sha(os.path.join(mnt, "commits", short, "config.json")) == sha(os.path.join(series["src"][1], "config.json"))
        assert sorted(os.listdir(os.path.join(mnt, "commits"))) == sorted(series["ids"].values())
        assert not os.path.exists(os.path.join(mnt, "commits", "ffffffff"))
        assert sha(os.path.join(mnt, "HEAD", "weights.h5")) == sha(os.path.join(series["src"][2], "weights.h5"))


def test_corrupt_chunk_gives_eio_only_where_touched(tmp_path, mnt):
    from coralfs import Repository
    rng = np.random.default_rng(1)
    repo, d = _committed(tmp_path, {"a": rng.standard_normal(1 << 20).astype(np.float32),
                                    "b": rng.standard_normal(1 << 20).astype(np.float32)},
                         {"other.json": '{"fine": true}'})
    r = Repository.open(repo)
    f = r.read_file(r.tree_of("main").entries["model.safetensors"].file)
    victim = r.odb.get_object(f.tensors()["b"].tensor).chunks[0]
    path = r.store._path(victim)
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        fh.write(b"\x00\xff\x00\xff")
    log_file = str(tmp_path / "daemon.log")
    with mounted(repo, mnt, "main", "--log", log_file):
        p = os.path.join(mnt, "model.safetensors")
        with open(p, "rb") as fh:
            head = fh.read(4096)  # header and the start of tensor a: fine
            assert head == open(os.path.join(d, "model.safetensors"), "rb").read(4096)
            fh.seek(os.path.getsize(p) - 100)
            with pytest.raises(OSError) as e:
                fh.read(100)
            assert e.value.errno == errno.EIO
        assert open(os.path.join(mnt, "other.json")).read() == '{"fine": true}'
    # the daemon names the damaged object in its log
    assert victim.hex() in open(log_file, errors="replace").read()


def test_kill_9_then_umount_or_remount_recovers(series, mnt):
    p = run_cli("mount", series["repo"], f"{mnt}@main")
    pid = int(p.stdout.split("(pid ")[1].split(",")[0])
    try:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        with pytest.raises(OSError) as e:
            os.listdir(mnt)
        assert e.value.errno == errno.ENOTCONN
        assert "daemon dead" in run_cli("mounts").stdout
        run_cli("umount", mnt)
        assert os.path.realpath(mnt) not in open("/proc/mounts").read()
        # and mounting over a stale mount (daemon killed again) cleans it up by itself
        p = run_cli("mount", series["repo"], f"{mnt}@main")
        os.kill(int(p.stdout.split("(pid ")[1].split(",")[0]), signal.SIGKILL)
        time.sleep(0.3)
        with mounted(series["repo"], mnt, "v1"):
            assert os.path.exists(os.path.join(mnt, "model.safetensors"))
    finally:
        force_unmount(mnt)


def test_mount_errors(series, tmp_path, mnt):
    repo = series["repo"]
    r = run_cli("mount", repo, str(tmp_path / "missing") + "@main", check=False)
    assert r.returncode != 0 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert "not empty" in run_cli("mount", repo, f"{full}@main", check=False).stderr
    assert "bad revision" in run_cli("mount", repo, f"{mnt}@nope", check=False).stderr
    with mounted(repo, mnt, "main"):
        assert "already mounted" in run_cli("mount", repo, f"{mnt}@main", check=False).stderr
        assert mnt in run_cli("mounts").stdout
    assert "not mounted" in run_cli("umount", mnt, check=False).stderr
    assert "not a coralfs repository" in run_cli("mount", str(tmp_path), f"{mnt}@main", check=False).stderr


def test_ls_lR_and_foreground(series, tmp_path):
    mnt = str(tmp_path / "fg")
    os.makedirs(mnt)
    p = subprocess.Popen([sys.executable, "-m", "coralfs", "mount", series["repo"], f"{mnt}@main", "--foreground"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert "mounted main" in line
        out = subprocess.run(["ls", "-lR", mnt], capture_output=True, text=True, check=True).stdout
        assert "model.safetensors" in out
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        assert os.path.realpath(mnt) not in open("/proc/mounts").read()
    finally:
        force_unmount(mnt, p.pid)


def test_cache_size_bounds_the_decoded_chunk_cache(series, mnt):
    # Without the materialization cache (an earlier test's mount of this series filled it,
    # and then nothing would be decoded): this test is about the memory cache's bound.
    with mounted(series["repo"], mnt, "main", "--cache-size", "16m", "--materialize-size", "0"):
        assert sha(os.path.join(mnt, "model.safetensors")) == sha(os.path.join(series["src"][2], "model.safetensors"))
        s = stats(mnt)
        assert s["cache_budget"] == 16 << 20
        assert 0 < s["cache_used"] <= 16 << 20
        assert s["decoded_bytes"] >= os.path.getsize(os.path.join(mnt, "model.safetensors")) * 0.9
