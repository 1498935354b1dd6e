"""The materialization cache through real mounts: decoded chunks written once to local
files, reused by later mounts, processes and commits, never served when torn or damaged,
bounded on disk, and managed with ``coralfs cache``."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import threading
import time

import numpy as np
from safetensors.numpy import save_file

from tests.conftest import run_cli, sha
from tests.mount.conftest import force_unmount, mounted, stats


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def _model(d, n: int, seed: int = 0, rows: int = 1024) -> dict[str, np.ndarray]:
    """``n`` fp32 tensors of 4 MiB (one chunk each) plus a config file."""
    rng = np.random.default_rng(seed)
    t = {f"layer{i:02d}.weight": rng.standard_normal((rows, 1024), dtype=np.float32) for i in range(n)}
    os.makedirs(d, exist_ok=True)
    save_file(t, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"layers": n}, f)
    return t


def _repo(tmp_path, n: int = 16):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    src = str(tmp_path / "src")
    _model(src, n)
    run_cli("commit", src, "-m", "v1", repo=repo)
    return repo, src


def _entries(cache: str) -> list[str]:
    return [p for p in glob.glob(os.path.join(cache, "materialized", "??", "*")) if not os.path.basename(p).startswith(".")]


def _on_disk(cache: str) -> int:
    """Bytes of entries and temp files (the ledger excluded). A file renamed or evicted
    between the listing and its stat counts 0 (while the daemon writes, that happens)."""
    n = 0
    for p in (glob.glob(os.path.join(cache, "materialized", "??", "*"))
              + glob.glob(os.path.join(cache, "materialized", "??", ".tmp-*"))):
        try:
            n += os.path.getsize(p)
        except FileNotFoundError:
            pass
    return n


def _read_all(mnt: str, src: str) -> None:
    """Read every file (sha256 equal to the source), then wait for the cache writer to
    have written what the reads queued: the fixture's unmount kills the daemon right after,
    before it could drain its queue (what a kill -9 loses is never a torn entry, only
    entries; the kill tests below check that)."""
    for name in ("model.safetensors", "config.json"):
        assert sha(os.path.join(mnt, name)) == sha(os.path.join(src, name))
    deadline = time.monotonic() + 60
    while stats(mnt).get("materialized", {}).get("pending", 0) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_remount_after_drop_caches_decodes_nothing_and_commits_share_chunks(tmp_path, mnt):
    repo, src = _repo(tmp_path)
    cache = str(tmp_path / "cache")
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
        first = stats(mnt)
    assert first["decoded_chunks"] >= 17 and first["materialized"]["written"] >= 17
    drop_caches()
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
        again = stats(mnt)
    assert again["decoded_chunks"] == 0, again  # every chunk read back from its file
    assert again["materialized"]["hits"] >= 17 and again["materialized"]["discarded"] == 0
    # A fine-tune changing one tensor: only that tensor's chunk (and the header) decode.
    t = _model(src, 16)
    t["layer05.weight"] += 1.0
    save_file(t, os.path.join(src, "model.safetensors"))
    run_cli("commit", src, "-m", "v2", repo=repo)
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
        v2 = stats(mnt)
    assert 1 <= v2["decoded_chunks"] <= 3, v2  # the changed tensor, the header, maybe a delta base


def test_the_default_cache_lives_in_the_repository_and_can_be_turned_off(tmp_path, mnt):
    repo, src = _repo(tmp_path, n=2)
    with mounted(repo, mnt, "main"):
        _read_all(mnt, src)
        assert stats(mnt)["materialized"]["dir"] == os.path.join(repo, "cache", "materialized")
    assert len(_entries(os.path.join(repo, "cache"))) >= 3
    out = run_cli("stats", repo=repo).stdout
    assert "materialization cache" in out and os.path.join(repo, "cache", "materialized") in out
    assert json.loads(run_cli("stats", "--json", repo=repo).stdout)["materialized"]["entries"] >= 3
    with mounted(repo, mnt, "main", "--materialize-size", "0"):
        _read_all(mnt, src)
        s = stats(mnt)
    assert "materialized" not in s and s["decoded_chunks"] >= 3


def test_damaged_truncated_and_half_written_entries_are_decoded_again(tmp_path, mnt):
    repo, src = _repo(tmp_path)
    cache = str(tmp_path / "cache")
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
    big = sorted(_entries(cache), key=os.path.getsize)[-3:]  # tensor chunks
    flipped, truncated, half = big
    with open(flipped, "r+b") as f:  # one bit flipped in the middle of the bytes
        f.seek(os.path.getsize(flipped) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x10]))
    os.truncate(truncated, os.path.getsize(truncated) // 3)
    n = os.path.getsize(half)  # the right size, the second half never written (zeros)
    with open(half, "r+b") as f:
        f.seek(n // 2)
        f.write(b"\0" * (n - n // 2))
    drop_caches()
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
        s = stats(mnt)
    assert s["materialized"]["discarded"] == 3 and s["decoded_chunks"] == 3, s
    with mounted(repo, mnt, "main", "--cache-dir", cache):  # repaired: written again
        _read_all(mnt, src)
        assert stats(mnt)["decoded_chunks"] == 0


def test_kill_9_while_writing_leaves_no_torn_entry(tmp_path, mnt):
    repo, src = _repo(tmp_path, n=48)
    cache = str(tmp_path / "cache")
    target = os.path.join(mnt, "model.safetensors")
    caught = None
    for _attempt in range(5):
        with mounted(repo, mnt, "main", "--cache-dir", cache) as pid:
            reader = subprocess.Popen(["cat", target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                # Freeze the daemon at moments until a write is caught halfway (a temp file
                # not yet renamed into place), then kill it there.
                while reader.poll() is None and caught is None:
                    os.kill(pid, signal.SIGSTOP)
                    temps = glob.glob(os.path.join(cache, "materialized", "??", ".tmp-*"))
                    if temps:
                        caught = temps
                        os.kill(pid, signal.SIGKILL)
                        break
                    os.kill(pid, signal.SIGCONT)
                    time.sleep(0.002)
            finally:
                reader.kill()
                reader.wait()
                force_unmount(mnt, pid)
        if caught:
            break
        run_cli("cache", "clear", "--cache-dir", cache, repo=repo)
    assert caught, "no write was caught in flight"
    assert all(os.path.exists(p) for p in caught)  # left behind by the killed writer
    drop_caches()
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
        # The mount sweeps dead writers' temp files once, in the background, as it starts:
        # wait for that pass (a loaded machine may not have run it yet).
        deadline = time.monotonic() + 120
        s = stats(mnt)
        while s["materialized"]["temp_removed"] < len(caught) and time.monotonic() < deadline:
            time.sleep(0.2)
            s = stats(mnt)
    assert s["materialized"]["discarded"] == 0  # nothing torn was ever under an entry's name
    assert s["materialized"]["temp_removed"] >= len(caught)
    assert not any(os.path.exists(p) for p in caught)


def test_eviction_keeps_the_cache_within_its_bound_reading_a_model_4x_larger(tmp_path, mnt):
    repo, src = _repo(tmp_path, n=32)   # 128 MiB of chunks
    cache = str(tmp_path / "cache")
    budget = 32 << 20
    peak = [0]
    done = threading.Event()
    failed: list[BaseException] = []

    def sample() -> None:
        try:
            while not done.is_set():
                peak[0] = max(peak[0], _on_disk(cache))
                time.sleep(0.005)
        except BaseException as e:  # the bound is only checked while this runs
            failed.append(e)
            raise
    with mounted(repo, mnt, "main", "--cache-dir", cache, "--materialize-size", str(budget)):
        th = threading.Thread(target=sample)
        th.start()
        try:
            _read_all(mnt, src)
        finally:
            done.set()
            th.join()
        assert not failed, failed
        s = stats(mnt)["materialized"]
    assert os.path.getsize(os.path.join(src, "model.safetensors")) >= 4 * budget
    assert s["evicted"] > 0 and s["budget"] == budget and s["used"] <= budget
    assert 0 < peak[0] <= budget, (peak[0], budget)
    assert _on_disk(cache) <= budget


def test_two_mounts_racing_on_the_same_entries_share_the_cache(tmp_path):
    repo, src = _repo(tmp_path, n=24)
    cache = str(tmp_path / "cache")
    m1, m2 = str(tmp_path / "m1"), str(tmp_path / "m2")
    want = sha(os.path.join(src, "model.safetensors"))
    with mounted(repo, m1, "main", "--cache-dir", cache), mounted(repo, m2, "main", "--cache-dir", cache):
        # Two processes read the same chunks at once: both decode and write the same entries.
        got = {}

        def read(m: str) -> None:
            got[m] = sha(os.path.join(m, "model.safetensors"))
            _read_all(m, src)
        readers = [threading.Thread(target=read, args=(m,)) for m in (m1, m2)]
        for r in readers:
            r.start()
        for r in readers:
            r.join()
        assert got == {m1: want, m2: want}
        s1, s2 = stats(m1)["materialized"], stats(m2)["materialized"]
    assert s1["discarded"] == s2["discarded"] == 0
    assert s1["written"] + s2["written"] >= 25
    drop_caches()
    with mounted(repo, m1, "main", "--cache-dir", cache):
        _read_all(m1, src)
        s = stats(m1)
    assert s["decoded_chunks"] == 0 and s["materialized"]["discarded"] == 0


def _wait_prefetch(mnt: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = stats(mnt).get("prefetch", {})
        if p.get("state") == "done":
            return p
        time.sleep(0.2)
    raise AssertionError(f"prefetch not done: {stats(mnt).get('prefetch')}")


def test_prefetch_all_and_glob_materialize_in_the_background(tmp_path, mnt):
    repo, src = _repo(tmp_path, n=8)
    cache = str(tmp_path / "cache")
    with mounted(repo, mnt, "main", "--cache-dir", cache, "--prefetch", "layer0[1-3]*"):
        p = _wait_prefetch(mnt)
        assert stats(mnt)["decoded_chunks"] == 0  # nothing read: nothing went through the reads
    assert p["chunks"] == p["done_chunks"] >= 3 and p["errors"] == 0
    out = run_cli("cache", "ls", "main", "--cache-dir", cache, "--json", repo=repo).stdout
    files = {f["path"]: f for f in json.loads(out)["files"]}
    assert 0 < files["model.safetensors"]["materialized_bytes"] < files["model.safetensors"]["bytes"]
    assert files["config.json"]["materialized_bytes"] == 0
    with mounted(repo, mnt, "main", "--cache-dir", cache, "--prefetch", "all"):
        p = _wait_prefetch(mnt)
    assert p["already"] >= 3 and p["written"] >= 6
    drop_caches()
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
        assert stats(mnt)["decoded_chunks"] == 0


def test_cache_ls_prune_and_clear(tmp_path, mnt):
    repo, src = _repo(tmp_path, n=8)
    cache = str(tmp_path / "cache")
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
    out = run_cli("cache", "ls", "--cache-dir", cache, repo=repo).stdout
    assert "entries" in out and os.path.join(cache, "materialized") in out
    out = run_cli("cache", "ls", "main", "--cache-dir", cache, repo=repo).stdout
    assert "model.safetensors" in out and "100%" in out
    before = len(_entries(cache))
    out = run_cli("cache", "prune", "--size", "10m", "--cache-dir", cache, repo=repo).stdout
    assert "removed" in out and _on_disk(cache) <= 10 << 20 and len(_entries(cache)) < before
    run_cli("cache", "clear", "--cache-dir", cache, repo=repo)
    assert _entries(cache) == []
    bad = run_cli("cache", "prune", "--size", "lots", "--cache-dir", cache, repo=repo, check=False)
    assert bad.returncode != 0 and "--size" in bad.stderr and "Traceback" not in bad.stderr
    with mounted(repo, mnt, "main", "--cache-dir", cache):
        _read_all(mnt, src)
        assert stats(mnt)["decoded_chunks"] >= 9  # cleared: decoded again


def test_mount_refuses_bad_cache_options(tmp_path, mnt):
    repo, _src = _repo(tmp_path, n=1)
    for args, words in ((("--prefetch", "all", "--materialize-size", "0"), "--materialize-size"),
                        (("--materialize-size", "-1"), "--materialize-size")):
        p = run_cli("mount", repo, f"{mnt}@main", *args, check=False)
        assert p.returncode != 0 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = run_cli("mount", repo, mnt, "--prefetch", "all", check=False)
    assert p.returncode != 0 and "MNT@REF" in p.stderr



def test_a_killed_writer_not_yet_reaped_counts_as_dead():
    """A zombie writes nothing more: the sweep at mount start removes its temp files even
    when its parent has not reaped it yet (a daemon killed just before the remount)."""
    from coralfs.objects.durable import pid_alive as _pid_alive
    p = subprocess.Popen(["sleep", "60"])
    try:
        assert _pid_alive(p.pid)
        p.kill()
        deadline = time.monotonic() + 30
        while _pid_alive(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(p.pid)
        with open(f"/proc/{p.pid}/stat", "rb") as f:
            assert f.read().rsplit(b")", 1)[1].split()[0] == b"Z"   # still there, a zombie
    finally:
        p.wait()
    assert _pid_alive(os.getpid())
