"""Serving a mount: the daemon process ``lifecycle.mount`` starts (or the foreground run).

``serve`` opens the repository, builds the read-only or writable operations, mounts with
pyfuse3 and runs the FUSE loop until unmounted or signalled (SIGTERM/SIGINT/SIGHUP unmount
cleanly). The client side (checks, spawning, readiness, unmount, listing) is
lifecycle.py, which imports neither pyfuse3 nor trio.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict

import pyfuse3
import trio

from .lifecycle import FSNAME, MountSpec, state_path

log = logging.getLogger(__name__)


def _preload() -> None:
    """Import what the first decode needs (numpy: 50-70 ms of a first read otherwise), run
    once the mount answers, on the readiness probe's thread: a reader that starts a moment
    later (a training script importing torch) finds it done. Before readiness it would
    lengthen every mount's start (the imports share the GIL); a read that comes first
    waits on the import lock, as it would have imported numpy itself. Commands that never
    decode import numpy lazily (objects/lazy.py); a daemon always decodes."""
    importlib.import_module("numpy")


def serve(spec: MountSpec, status_fd: int | None = None) -> None:
    """Mount and serve until unmounted or signalled (SIGTERM/SIGINT unmount cleanly)."""
    from ..objects.repository import Repository

    remote = spec.remote is not None
    repo = _remote_repo(spec) if remote else Repository.open(spec.repo)
    if spec.cache_size:
        repo.odb.chunks.budget = spec.cache_size
    stage = tier = None
    if spec.write:
        ops, stage = _staging_ops(repo, spec)
        spec.commit = stage.base.hex() if stage.base else None
    else:
        ops, tier = _readonly_ops(repo, spec)
    spec.pid = os.getpid()
    # Everything that touches the mountpoint happens before mounting: afterwards it would
    # wait for this very process to answer.
    state_file = state_path(spec.mountpoint)
    options = set(pyfuse3.default_options)
    options |= {f"fsname={FSNAME}", "subtype=coralfs"}
    if not spec.write:
        options.add("ro")
    # Without allow_other the kernel lets only this uid in (not even root). With it, the
    # kernel checks each access against the modes we report (default_permissions, also
    # in pyfuse3's defaults): files and directories as in the tree, .coral/control 0600.
    options.add("default_permissions")
    if spec.allow_other:
        options.add("allow_other")
    real = os.path.realpath(spec.mountpoint)  # before mounting: afterwards a stat waits for us
    pyfuse3.init(ops, spec.mountpoint, options)
    if not spec.write:
        kernel = tune_kernel(real, spec.read_ahead_kb, spec.max_background)
        local = ops.vfs.stats
        ops.vfs.stats = lambda: {**local(), "kernel": kernel}
    with open(state_file, "w") as f:
        json.dump(asdict(spec), f)

    def announce(error: OSError | None) -> None:
        msg = "READY\n" if error is None else f"ERROR the mount does not answer ({error})\n"
        if status_fd is not None:
            os.write(status_fd, msg.encode())
            os.close(status_fd)
        if error is None:
            _preload()

    try:
        serve_mounted(spec.mountpoint, announce, ops.start)
    finally:
        try:
            os.unlink(state_file)
        except FileNotFoundError:
            pass
        if stage is not None:
            ops.sfs.close()
            stage.close()
        if tier is not None:
            tier.close()  # what is queued for the disk is written before the daemon exits
        repo.close()
        if remote:
            repo.store.close()


def _mount_device(real: str) -> str | None:
    """The "major:minor" of the mount at the resolved path ``real`` (from
    /proc/self/mountinfo: a stat() of the mountpoint would wait for this very process)."""
    path = real.encode()
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = None
    for ln in lines:
        parts = ln.split()
        if len(parts) > 4 and parts[4].replace(b"\\040", b" ") == path:
            found = parts[2].decode()  # the last one listed is the one on top
    return found


def tune_kernel(real: str, read_ahead_kb: int | None, max_background: int | None) -> dict:
    """Set the kernel's side of a read-only mount: the readahead of its bdi (how large and
    how far ahead the kernel reads for sequential and mmap readers) and how many requests
    the FUSE connection keeps in flight in the background (readahead is background).
    Needs root (and fusectl at /sys/fs/fuse/connections for the second); otherwise the
    kernel's defaults stay, which costs speed, not reads. Returns what is in effect."""
    dev = _mount_device(real)
    if dev is None:
        return {}
    wanted = {f"/sys/class/bdi/{dev}/read_ahead_kb": read_ahead_kb}
    conn = f"/sys/fs/fuse/connections/{dev.split(':')[1]}"
    if max_background:
        # Congestion (the kernel stops queueing readahead) at 3/4 of it, as its defaults 12/9.
        wanted[f"{conn}/max_background"] = max_background
        wanted[f"{conn}/congestion_threshold"] = max(1, max_background * 3 // 4)
    out = {}
    for path, value in wanted.items():
        if value is not None:
            try:
                with open(path, "w") as f:
                    f.write(f"{value}\n")
            except OSError as e:
                log.info("cannot set %s to %s (%s): the kernel's default stays", path, value, e)
        try:
            with open(path) as f:
                out[os.path.basename(path)] = int(f.read())
        except (OSError, ValueError):
            pass
    return out


def _readonly_ops(repo, spec: MountSpec):
    from .readonly.ops import CoralOperations
    from .readonly.vfs import VFS
    # A remote mount shows the commit the client resolved (a push in between does not
    # change what was asked for).
    remote = spec.remote is not None
    vfs = VFS(repo, spec.commit if remote else spec.ref, spec.include)
    tier = _materialization(repo, spec)
    ops = CoralOperations(vfs, threads=spec.threads, tier=tier, prefetch=spec.prefetch)
    spec.commit = vfs.root_commit.hex() if vfs.root_commit else None
    if remote:
        _serve_remote(repo, vfs, ops, spec)
    return ops, tier


def _materialization(repo, spec: MountSpec):
    """The decoded-chunk cache of a read-only mount with its materialization cache on disk
    (None when --materialize-size is 0, for a remote mount without --materialize-size, or
    when the cache directory cannot be created: the
    mount then decodes in memory as before, which costs speed, not reads)."""
    from .materialize import DEFAULT_SIZE, MaterializedCache, TieredChunks, materialized_dir
    # A remote mount keeps the fetched frames on disk already (its chunk cache): it also
    # materializes decoded chunks only when asked to with --materialize-size.
    if spec.materialize_size == 0 or spec.remote is not None and spec.materialize_size is None:
        return None
    root = materialized_dir(spec.cache_dir, None if spec.remote is not None else spec.repo)
    try:
        disk = MaterializedCache(root, spec.materialize_size or DEFAULT_SIZE)
    except OSError as e:
        log.warning("materialization cache %s not usable (%s): decoding in memory only", root, e)
        return None
    log.info("materialization cache %s, budget %d bytes", root, disk.budget)
    return TieredChunks(repo.odb.chunks, disk)


def _remote_repo(spec: MountSpec):
    from .lifecycle import open_remote
    return open_remote(spec)


def _serve_remote(repo, vfs, ops, spec: MountSpec) -> None:
    """What a mount served from a remote store needs: every object the event loop walks
    (commit, tree, files, tensors) fetched and pinned before serving, chunk fetches run
    by the read path under their own limit, and the store's counters in stats.json."""
    from ..remote.store import warm_snapshot
    n = warm_snapshot(repo, vfs.root_commit, headers=bool(spec.include))
    log.info("remote mount of %s at %s: %d metadata objects pinned", spec.remote, spec.commit, n)
    ops.reads.fetcher = repo.store
    local = ops.stats
    vfs.stats = lambda: {**local(), "remote": repo.store.stats()}


def _staging_ops(repo, spec: MountSpec):
    from ..staging import StagingArea
    from .writable.ops import StagingOperations
    from .writable.vfs import AutoCommit, StageFS
    stage = StagingArea.open(repo, spec.branch)
    auto = None
    if spec.auto_commit is not None:
        cfg = repo.config
        paths = [p.strip() for p in cfg.get("staging.auto_commit_paths").split(",") if p.strip()]
        auto = AutoCommit(spec.auto_commit, paths, float(cfg.get("staging.min_interval")),
                          cfg.get("staging.keep_last"))
    return StagingOperations(StageFS(repo, stage, auto), threads=spec.threads), stage


def serve_mounted(mountpoint: str, on_ready, on_nursery=None) -> None:
    """Run the FUSE loop of a session ``pyfuse3.init`` has mounted, until it is unmounted
    or SIGTERM/SIGINT/SIGHUP arrives, then close it (unmounting). ``on_ready(error)`` runs
    in a thread once the mount answers (statvfs blocks until the loop serves it);
    ``on_nursery(nursery)`` gets the loop's nursery for background work."""
    def probe() -> None:
        try:
            os.statvfs(mountpoint)
            on_ready(None)
        except OSError as e:
            on_ready(e)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if on_nursery is not None:
                on_nursery(nursery)

            async def signals() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as rx:
                    async for _sig in rx:
                        log.info("signal received: unmounting %s", mountpoint)
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(signals)
            threading.Thread(target=probe, daemon=True).start()
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)


def _daemon_main() -> None:
    spec = MountSpec(**json.loads(sys.argv[1]))
    status_fd = int(sys.argv[2])
    level = os.environ.get("CORALFS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("h5py").setLevel(logging.WARNING)
    from ..objects.memory import tune_allocator
    tune_allocator()  # the daemon's own process decodes 4 MiB chunks: buffers reused (objects/memory.py)
    code = 0
    try:
        serve(spec, status_fd=status_fd)
    except Exception as e:  # reported to the waiting parent, then logged
        try:
            os.write(status_fd, f"ERROR {e}\n".encode())
        except OSError:
            pass
        log.exception("mount failed")
        code = 1
    if spec.remote is not None:
        # A fetch stuck in a stalled store must not hold the exit until the client's own
        # timeout (thread pools are joined at exit): nothing is left to write (cache
        # entries are renamed into place whole), so leave now.
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _daemon_main()
