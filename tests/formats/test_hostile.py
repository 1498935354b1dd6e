"""Small inputs that used to cost huge time or memory: a deflate bomb in data.pkl, a file
of many tiny tensors, an .npz of many members, a sparse file; and a signal during a
commit. These tests assert the behaviour (what is stored, how many objects, how much is
read); the times and peak RSS are benchmark figures (scripts/bench_hostile.py)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from coralfs import Repository
from coralfs.api import Repository as ApiRepository
from tests.conftest import PYTHON, REPO_ROOT, run_cli, sha

sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
import hostile_inputs  # noqa: E402


def object_files(repo_path: str) -> list[str]:
    out = []
    for root, _dirs, files in os.walk(os.path.join(repo_path, "objects")):
        out += [os.path.join(root, f) for f in files]
    return out


def stored_bytes(repo_path: str) -> int:
    return sum(os.path.getsize(p) for p in object_files(repo_path))


def _limited_cli(limit: int, *args: str, repo: str) -> subprocess.CompletedProcess:
    """coralfs in a child whose address space is capped at ``limit`` bytes."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    env = dict(os.environ, CORALFS_REPO=repo)
    return subprocess.run([PYTHON, "-m", "coralfs", *args], capture_output=True, text=True, env=env,
                          preexec_fn=cap, timeout=600)


# -- the pickle bomb ----------------------------------------------------------------------

def test_pickle_bomb_commits_within_a_memory_cap_and_exports_exactly(tmp_path):
    """A 2.5 GiB data.pkl deflated to a few MB: inflation stops at the cap, the file is
    stored byte-exact with untyped storages. The child runs under a 2 GiB address-space
    cap, which inflating it whole cannot fit."""
    src = tmp_path / "ck"
    src.mkdir()
    bomb = src / "model.pt"
    hostile_inputs.pickle_bomb(str(bomb), inflated=5 << 29, level=1)
    assert bomb.stat().st_size < 64 << 20
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    p = _limited_cli(2 << 30, "commit", str(src), "-m", "bomb", repo=repo)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "64 MiB cap" in p.stderr  # the warning says why the storages are untyped
    run_cli("export", "HEAD", str(tmp_path / "out"), repo=repo)
    assert sha(tmp_path / "out" / "model.pt") == sha(bomb)
    r = Repository(repo)
    f = r.read_file(r.tree_of("HEAD").entries["model.pt"].file)
    assert "data/0" in f.tensors()
    r.close()


def test_lying_gguf_and_legacy_headers_fail_within_a_memory_cap(tmp_path):
    """Headers that claim a million tensors of 2**40 elements, a 2**60-item array, or a
    storage record of 2**62 elements: refused in one line by a child capped at 2 GiB of
    address space (nothing is allocated from what a header claims)."""
    import struct
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    infos = b"".join(struct.pack("<Q", 4) + b"t%03d" % i + struct.pack("<IQQIQ", 2, 1 << 20, 1 << 20, 0, 0)
                     for i in range(1000))
    cases = {
        "many.gguf": b"GGUF" + struct.pack("<IQQ", 3, 1000, 0) + infos,
        "array.gguf": b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 8, 1 << 60),
        "record.pt": hostile_inputs.legacy_torch_claiming(1 << 62),
    }
    for name, data in cases.items():
        src = tmp_path / name.replace(".", "_")
        src.mkdir()
        (src / name).write_bytes(data)
        p = _limited_cli(2 << 30, "commit", str(src), "-m", "x", repo=repo)
        assert p.returncode != 0, name
        err = p.stderr.strip()
        assert len(err.splitlines()) == 1 and name in err and "nothing was committed" in err, err
        assert "Traceback" not in err and "MemoryError" not in err


# -- many small tensors -------------------------------------------------------------------

def test_many_tiny_tensors_pack_into_few_objects(tmp_path):
    src = tmp_path / "ck"
    src.mkdir()
    path = src / "model.safetensors"
    hostile_inputs.many_tensors_safetensors(str(path), 50_000)
    r = ApiRepository.init(str(tmp_path / "repo"))
    r.commit_paths([str(src)], "one")
    # One pack's chunks, the header's chunks, the file, the tree, the commit (the ref
    # files live outside objects/): not 100,000 objects.
    assert len(object_files(r.path)) < 40
    r.export("HEAD", str(tmp_path / "out"))
    assert sha(tmp_path / "out" / "model.safetensors") == sha(path)
    f = r.read_file(r.tree_of("HEAD").entries["model.safetensors"].file)
    assert len(f.tensors()) == 50_000

    # Per-tensor diff still names exactly the changed tensor.
    ts = load_file(str(path))
    ts["t.123"] = ts["t.123"] + 1
    save_file(ts, str(path))
    r.commit_paths([str(src)], "two")
    (ch,) = r.diff("HEAD~1", "HEAD")
    assert [(t.name, t.status, t.dtype, t.shape) for t in ch.tensors] == [("t.123", "changed", "F32", (4,))]
    (t,) = ch.tensors
    assert t.max_abs == 1.0 and t.rel_l2 is not None and 0 < t.rel_l2 < 1
    r.close()


def test_packed_tensors_in_views_show_and_fsck(tmp_path):
    from coralfs.fs.readonly.vfs import Snapshot
    src = tmp_path / "ck"
    src.mkdir()
    tensors = {f"layer.{i}.bias": np.full(5, i, dtype=np.float32) for i in range(20)}
    tensors["big"] = np.arange(1 << 16, dtype=np.float32)  # 256 KiB: stored as its own tensor
    save_file(tensors, str(src / "m.safetensors"))
    repo = str(tmp_path / "repo")
    r = ApiRepository.init(repo)
    r.commit_paths([str(src)], "one")
    f = r.read_file(r.tree_of("HEAD").entries["m.safetensors"].file)
    assert f.to_bytes()[4] == 2  # a File with a pack is version 2
    vfs = Snapshot(r, r.resolve("HEAD"), None)
    dirs = vfs.tensor_dirs()
    kind, path, seg = dirs["m.safetensors"]["layer.3.bias.npy"]
    c = vfs.npy_content(path, seg)
    import io
    raw = c.read(0, 1 << 20)
    assert np.array_equal(np.load(io.BytesIO(raw)), tensors["layer.3.bias"])
    kind, path, seg = dirs["m.safetensors"]["big.npy"]
    assert np.array_equal(np.load(io.BytesIO(vfs.npy_content(path, seg).read(0, 1 << 20))), tensors["big"])
    r.close()
    out = run_cli("show", "HEAD:m.safetensors", repo=repo).stdout
    assert "layer.7.bias" in out and "21 tensors" in out
    assert "no problems" in run_cli("fsck", repo=repo).stdout
    run_cli("gc", "--prune-age", "0", repo=repo)
    run_cli("export", "HEAD", str(tmp_path / "out"), repo=repo)
    assert sha(tmp_path / "out" / "m.safetensors") == sha(src / "m.safetensors")


def test_npz_with_many_members_packs(tmp_path):
    src = tmp_path / "ck"
    src.mkdir()
    path = src / "arrays.npz"
    hostile_inputs.many_members_npz(str(path), 20_000)
    r = ApiRepository.init(str(tmp_path / "repo"))
    r.commit_paths([str(src)], "npz")
    assert len(object_files(r.path)) < 60
    f = r.read_file(r.tree_of("HEAD").entries["arrays.npz"].file)
    assert f.format == "npz" and len(f.tensors()) == 20_000
    r.export("HEAD", str(tmp_path / "out"))
    assert sha(tmp_path / "out" / "arrays.npz") == sha(path)
    with np.load(str(tmp_path / "out" / "arrays.npz")) as z:
        assert np.array_equal(z["a19999"], np.full(3, 19999, dtype=np.int64))
    r.close()


# -- sparse files -------------------------------------------------------------------------

def _data_spans(path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos, out = os.fstat(fd).st_size, 0, []
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, h))
            pos = h
        return out
    finally:
        os.close(fd)


def _read_chars() -> int:
    with open("/proc/self/io") as f:
        return int(next(ln for ln in f if ln.startswith("rchar:")).split()[1])


def test_sparse_10gib_file_reads_only_its_data_and_stores_little(tmp_path):
    src = tmp_path / "ck"
    src.mkdir()
    path = src / "sparse.bin"
    hostile_inputs.sparse_file(str(path), 10 << 30)
    if len(_data_spans(path)) > 3 or os.stat(path).st_blocks * 512 > 1 << 20:
        pytest.fail("the test file system does not keep holes (SEEK_HOLE)")
    r = ApiRepository.init(str(tmp_path / "repo"))
    before = _read_chars()
    r.commit_paths([str(src)], "sparse")
    read = _read_chars() - before
    assert read < 64 << 20, f"the commit read {read} bytes of a file with 12 KiB of data"
    assert stored_bytes(r.path) < 1 << 20
    out = tmp_path / "out"
    r.export("HEAD", str(out))
    got = out / "sparse.bin"
    assert os.path.getsize(got) == os.path.getsize(path)
    assert os.stat(got).st_blocks * 512 < 64 << 20  # written back with holes
    # Byte-identical: both files read as zeros outside their data spans, so comparing
    # the union of the spans compares every byte.
    with open(path, "rb") as a, open(got, "rb") as b:
        for lo, hi in sorted(set(_data_spans(path)) | set(_data_spans(got))):
            a.seek(lo)
            b.seek(lo)
            assert a.read(hi - lo) == b.read(hi - lo), f"bytes differ in [{lo}, {hi})"
    r.close()


# -- signals ------------------------------------------------------------------------------

def _head(repo: str) -> bytes | None:
    r = Repository(repo)
    try:
        return r.refs.read("refs/heads/main")
    finally:
        r.close()


@pytest.fixture
def slow_source(tmp_path):
    src = tmp_path / "ck"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        save_file({"w": rng.standard_normal((1 << 22) // 4 * 6, dtype=np.float32)}, str(src / f"m{i}.safetensors"))
    return src


def _count_objects(repo: str) -> int:
    return sum(len(fs) for _d, _s, fs in os.walk(os.path.join(repo, "objects")))


def test_sigterm_at_any_point_either_commits_or_leaves_the_branch(tmp_path, slow_source):
    """SIGTERM at several points of a commit (after its first object, after more, and
    late): exit 0 with the commit reported and the branch on it, or non-zero saying
    nothing was committed with the branch unmoved; never a branch that moves later."""
    outcomes = set()
    for k, after_objects in enumerate((1, 6, 12, 20, 26, 10**9)):
        repo = str(tmp_path / f"repo{k}")  # a fresh repository: every round ingests everything
        run_cli("init", repo)
        base = _count_objects(repo)
        p = subprocess.Popen([PYTHON, "-m", "coralfs", "commit", str(slow_source), "-m", f"c{k}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, CORALFS_REPO=repo))
        while p.poll() is None and _count_objects(repo) - base < after_objects:
            time.sleep(0.002)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=300)
        after = _head(repo)
        assert "Traceback" not in err
        if p.returncode == 0:
            outcomes.add("committed")
            assert after is not None and after.hex()[:12] in out
        else:
            outcomes.add("stopped")
            assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err)
            assert "nothing was committed" in err and len(err.strip().splitlines()) == 1
            assert after is None
        # the branch moves only by what the command reported, never afterwards
        time.sleep(0.2)
        assert _head(repo) == after
    assert outcomes == {"stopped", "committed"}, outcomes


def test_signal_before_landing_stops_and_during_landing_is_reported(tmp_path, slow_source):
    from coralfs import interrupts
    r = ApiRepository.init(str(tmp_path / "repo"))

    def kill_self(*_a) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(interrupts.Interrupted) as e:
        with interrupts.interruptible():
            r.commit_paths([str(slow_source)], "x", progress=kill_self)
    assert "nothing was committed" in str(e.value) and e.value.exit_code == 143
    assert r.head() is None

    real = r.commit

    def commit_then_signal(*a, **k):
        kill_self()  # arrives while the ref is being moved
        return real(*a, **k)

    r.commit = commit_then_signal
    with interrupts.interruptible():
        res = r.commit_paths([str(slow_source)], "y")
        assert interrupts.late() == ["SIGTERM"]
    assert r.head() == res.commit
    r.close()
