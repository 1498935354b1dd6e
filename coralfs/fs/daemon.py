"""Serving a mount: the daemon process ``lifecycle.mount`` starts (or the foreground run).

``serve`` opens the repository, builds the read-only or writable operations, mounts with
pyfuse3 and runs the FUSE loop until unmounted or signalled (SIGTERM/SIGINT/SIGHUP unmount
cleanly). The client side (checks, spawning, readiness, unmount, listing) is
lifecycle.py, which imports neither pyfuse3 nor trio.
"""

from __future__ import annotations

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


def serve(spec: MountSpec, status_fd: int | None = None) -> None:
    """Mount and serve until unmounted or signalled (SIGTERM/SIGINT unmount cleanly)."""
    from ..objects.repository import Repository
    from .readonly.ops import CoralOperations
    from .readonly.vfs import VFS

    remote = spec.remote is not None
    repo = _remote_repo(spec) if remote else Repository.open(spec.repo)
    if spec.cache_size:
        repo.odb.chunks.budget = spec.cache_size
    stage = None
    if spec.write:
        ops, stage = _staging_ops(repo, spec)
        spec.commit = stage.base.hex() if stage.base else None
    else:
        # A remote mount shows the commit the client resolved (a push in between does not
        # change what was asked for).
        vfs = VFS(repo, spec.commit if remote else spec.ref, spec.include)
        ops = CoralOperations(vfs, threads=spec.threads)
        spec.commit = vfs.root_commit.hex() if vfs.root_commit else None
        if remote:
            _serve_remote(repo, vfs, ops, spec)
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
    pyfuse3.init(ops, spec.mountpoint, options)
    with open(state_file, "w") as f:
        json.dump(asdict(spec), f)

    def announce(error: OSError | None) -> None:
        msg = "READY\n" if error is None else f"ERROR the mount does not answer ({error})\n"
        if status_fd is not None:
            os.write(status_fd, msg.encode())
            os.close(status_fd)

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
        repo.close()
        if remote:
            repo.store.close()


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
