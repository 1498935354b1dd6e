"""Mount lifecycle, client side: checks, spawning the daemon, readiness, unmounting, listing.

``mount`` checks everything it can before anything is mounted (one-line errors with the
fix), then runs the FUSE loop in this process (``foreground``) or starts a detached daemon
process (``python -m coralfs.fs.daemon``). Either way it returns only once the mount
answers a stat(), so the caller can use it at once. A state file per mount (under the
runtime directory) records repo, ref, commit, pid and log; /proc/mounts is the truth about
what is mounted. The CLI imports this module: it imports neither pyfuse3 nor trio
(daemon.py serves; tests/ops/test_fs_layout.py checks the arrow).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from ..objects.durable import pid_alive
from ..objects.errors import CoralError

log = logging.getLogger(__name__)

FSNAME = "coralfs"
FSTYPE = "fuse.coralfs"
READY_TIMEOUT = 60.0


class MountError(CoralError):
    exit_code = 6


@dataclass
class MountSpec:
    repo: str
    mountpoint: str
    ref: str | None = None
    include: list[str] | None = None
    cache_size: int | None = None
    log_file: str | None = None
    threads: int = 2
    commit: str | None = None
    pid: int | None = None
    write: bool = False               # a writable staging mount of ``branch``
    branch: str | None = None
    auto_commit: float | None = None  # seconds of quiet before an automatic commit
    allow_other: bool = False         # other local users may use it (as the files' modes allow)
    remote: str | None = None         # a remote's URL: a read-only mount served from its store
    endpoint: str | None = None       # the remote's service URL (emulators, S3-compatible stores)
    profile: str | None = None        # the credentials profile of the cloud's own config files
    cache_dir: str | None = None      # local caches: materialized chunks, a remote's chunk cache
    materialize_size: int | None = None   # bound of the materialization cache (None: default; 0: off)
    prefetch: list[str] | None = None     # materialize these ("all", or globs) after mounting
    read_ahead_kb: int | None = None      # the kernel's readahead for this mount (None: its default)
    max_background: int | None = None     # FUSE requests in flight in the background (None: default)
    remote_cache_size: int | None = None  # its budget in bytes
    fetch_timeout: float | None = None    # seconds a read may wait for the remote, retries included


def split_target(target: str) -> tuple[str, str | None]:
    """``/mnt/model@v1.2.0`` -> ("/mnt/model", "v1.2.0"); a path holding '@' that exists
    as a directory is taken literally."""
    if os.path.isdir(target) or "@" not in target:
        return target, None
    path, _, ref = target.rpartition("@")
    if not ref or "/" in ref and not ref.startswith(("refs/",)):
        return target, None
    return path, ref


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/coralfs-{os.getuid()}"
    d = os.path.join(base, "coralfs-mounts") if os.environ.get("XDG_RUNTIME_DIR") else os.path.join(base, "mounts")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def state_path(mountpoint: str) -> str:
    h = hashlib.sha1(os.path.realpath(mountpoint).encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"{h}.json")


def proc_mounts() -> list[tuple[str, str, str]]:
    """(source, mountpoint, fstype) of every mount."""
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                mp = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
                out.append((parts[0], mp, parts[2]))
    return out


def is_mounted(mountpoint: str) -> str | None:
    """The fstype mounted at ``mountpoint``, or None."""
    real = os.path.realpath(mountpoint)
    for _src, mp, fstype in proc_mounts():
        if mp == real:
            return fstype
    return None


def _stale(mountpoint: str) -> bool:
    # statvfs always reaches the daemon; stat() may be answered from cached attributes.
    try:
        os.statvfs(mountpoint)
        return False
    except OSError as e:
        return e.errno in (errno.ENOTCONN, errno.ECONNABORTED)


def _fusermount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["fusermount3", *args], capture_output=True, text=True)


def preflight(spec: MountSpec) -> None:
    """Every check that can fail before mounting, each with its fix."""
    mp = spec.mountpoint
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse is missing: load the fuse module (modprobe fuse) or run with --device /dev/fuse")
    if shutil.which("fusermount3") is None:
        raise MountError("fusermount3 is not installed: apt-get install fuse3 (or run scripts/setup)")
    fstype = is_mounted(mp)
    if fstype is not None:
        if fstype == FSTYPE and _stale(mp):
            log.warning("cleaning up a stale coralfs mount at %s (its daemon died)", mp)
            unmount(mp, lazy=False, quiet=True)
        else:
            raise MountError(f"{mp} is already mounted ({fstype}); `coralfs umount {mp}` first")
    if not os.path.exists(mp):
        raise MountError(f"mountpoint {mp} does not exist; create it with `mkdir -p {mp}`")
    if not os.path.isdir(mp):
        raise MountError(f"mountpoint {mp} is not a directory")
    if os.listdir(mp):
        raise MountError(f"mountpoint {mp} is not empty; use an empty directory")
    if spec.allow_other and os.getuid() != 0 and not _user_allow_other():
        raise MountError("--allow-other needs `user_allow_other` in /etc/fuse.conf (root can add it), "
                         "or mount without --allow-other (then only you see the mount)")


def _user_allow_other(conf: str = "/etc/fuse.conf") -> bool:
    try:
        with open(conf) as f:
            return any(ln.split("#", 1)[0].strip() == "user_allow_other" for ln in f)
    except OSError:
        return False


def mount(spec: MountSpec, foreground: bool = False) -> MountSpec:
    """Check, then mount; returns once the mount answers (background) or when it is
    unmounted (foreground)."""
    from ..objects.repository import Repository
    spec.mountpoint = os.path.abspath(spec.mountpoint)
    if spec.remote is not None:
        _check_remote(spec)
        spec.repo = spec.remote
        repo = open_remote(spec)
        try:
            commit = repo.resolve(spec.ref)  # an unknown ref or an unreachable remote fails here
        finally:
            repo.store.close()
    else:
        spec.repo = os.path.abspath(spec.repo)
        repo = Repository.open(spec.repo)
        if spec.write:
            _check_staging_args(repo, spec)
            commit = repo.branch_head(spec.branch)
        else:
            commit = repo.resolve(spec.ref) if spec.ref is not None else None  # unknown ref: fail here
    spec.commit = commit.hex() if commit else None
    _check_cache_args(spec)
    preflight(spec)
    if spec.write:
        # Open (and recover) the staging area now: a second writable mount of this
        # branch, or a staging area another daemon holds, fails here with its fix.
        from ..staging import StagingArea
        StagingArea.open(repo, spec.branch).close()
    if foreground:
        _serve_here(spec)
        return spec
    return _spawn(spec)


def _check_remote(spec: MountSpec) -> None:
    if spec.write:
        raise MountError("a remote is mounted read-only: drop --write (commit locally, then `coralfs push`)")
    if spec.ref is None:
        raise MountError("a remote mount shows one commit: write MOUNTPOINT@REF (e.g. /mnt/model@main)")
    if spec.fetch_timeout is not None and not 0 < spec.fetch_timeout <= 3600:
        raise MountError("--fetch-timeout takes seconds, more than 0 and at most 3600")


def open_remote(spec: MountSpec):
    """The read-only Repository of a remote mount (its store fetches into the cache)."""
    from ..remote.store import DEFAULT_BUDGET, DEFAULT_CACHE_SIZE, open_remote_repository
    return open_remote_repository(spec.remote, endpoint=spec.endpoint, cache_dir=spec.cache_dir,
                                  cache_size=spec.remote_cache_size or DEFAULT_CACHE_SIZE,
                                  read_budget=spec.fetch_timeout or DEFAULT_BUDGET,
                                  options={"profile": spec.profile} if spec.profile else None)


def _serve_here(spec: MountSpec) -> None:
    """Serve in this process until unmounted; says so once the mount answers."""
    r, w = os.pipe()

    def report() -> None:
        msg = os.read(r, 4096).decode()
        if msg.startswith("READY"):
            what = f"branch {spec.branch}, writable," if spec.write else (spec.ref or "repository")
            print(f"mounted {what} at {spec.mountpoint} (Ctrl-C or `coralfs umount` to stop)", flush=True)
    threading.Thread(target=report, daemon=True).start()
    from .daemon import serve  # only here: the client side imports neither pyfuse3 nor trio
    serve(spec, status_fd=w)


def _spawn(spec: MountSpec) -> MountSpec:
    """Start the daemon process and return once its mount answers (MountError otherwise)."""
    log_file = spec.log_file or os.path.join(runtime_dir(), os.path.basename(state_path(spec.mountpoint))[:-5] + ".log")
    spec.log_file = log_file
    r, w = os.pipe()
    with open(log_file, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coralfs.fs.daemon", json.dumps(asdict(spec)), str(w)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(w,), start_new_session=True,
            close_fds=True)
    os.close(w)
    msg = _wait_ready(r, proc)
    if msg == "READY":
        spec.pid = proc.pid
        return spec
    if proc.poll() is None:
        proc.terminate()
    tail = ""
    try:
        with open(log_file, errors="replace") as f:
            lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
            tail = lines[-1] if lines else ""
    except OSError:
        pass
    raise MountError(f"the mount daemon did not start: {msg or tail or 'no answer'} (log: {log_file})")


def _wait_ready(r: int, proc: subprocess.Popen) -> str:
    """The daemon's first status line ("READY" or "ERROR ..."), "" if it died or timed out."""
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    os.set_blocking(r, False)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(r, 4096)
        except BlockingIOError:
            chunk = None
        if chunk:
            buf += chunk
            if b"\n" in buf:
                break
        elif chunk == b"" and proc.poll() is not None:
            break
        time.sleep(0.02)
    os.close(r)
    return buf.decode().strip()


def _check_cache_args(spec: MountSpec) -> None:
    if spec.materialize_size is not None and spec.materialize_size < 0:
        raise MountError("--materialize-size takes a size >= 0 (0 turns the materialization cache off)")
    if not spec.prefetch:
        return
    if spec.write:
        raise MountError("--prefetch materializes a commit of a read-only mount: drop --write")
    if spec.ref is None:
        raise MountError("--prefetch needs one commit: mount MNT@REF")
    if spec.materialize_size == 0 or spec.remote is not None and spec.materialize_size is None:
        raise MountError("--prefetch writes to the materialization cache: give it a size with --materialize-size SIZE")


def _check_staging_args(repo, spec: MountSpec) -> None:
    from ..objects.refs import check_ref_name
    if spec.ref is not None:
        raise MountError(f"a writable mount shows a branch: use `--branch {spec.ref}` instead of @{spec.ref}")
    if spec.include:
        raise MountError("--include narrows read-only mounts; a writable mount shows whole files")
    if spec.branch is None:
        spec.branch = repo.head_branch()
        if spec.branch is None:
            raise MountError("HEAD is detached: name the branch to write to with --branch B")
    check_ref_name(spec.branch)
    if spec.auto_commit is not None and spec.auto_commit < 0:
        raise MountError("--auto-commit takes a number of seconds >= 0")


def unmount_staging(mountpoint: str, commit_message: str | None = None, keep: bool = False,
                    lazy: bool = False) -> dict | None:
    """Unmount a writable mount: with uncommitted changes, refuse unless ``keep`` (they
    stay in the spool for the next ``mount --write``) or ``commit_message`` (commit first)."""
    from .writable.control import request
    answer = None
    if _stale(mountpoint):
        unmount(mountpoint, lazy=lazy)
        if commit_message is not None:
            raise MountError(f"the daemon of {mountpoint} had died, so nothing was committed; it is unmounted and its "
                             "staged changes are kept: `coralfs mount REPO MNT --write` and commit again")
        return None
    if commit_message is not None:
        answer = request(mountpoint, {"op": "commit", "message": commit_message})
        if not answer.get("ok"):
            raise MountError(f"not unmounted: the commit failed: {answer.get('error')}")
    elif not keep:
        changes = request(mountpoint, {"op": "status"}).get("changes", [])
        if changes:
            names = ", ".join(c["path"] for c in changes[:3]) + (" ..." if len(changes) > 3 else "")
            raise MountError(f"{mountpoint} has {len(changes)} uncommitted change(s) ({names}): "
                             f"`coralfs umount {mountpoint} --commit -m MSG` records them, "
                             "`--keep` leaves them staged for the next `mount --write`")
    unmount(mountpoint, lazy=lazy)
    return answer


def mount_info(mountpoint: str) -> dict:
    """The state file of the mount at ``mountpoint`` ({} if none)."""
    try:
        with open(state_path(os.path.abspath(mountpoint))) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def unmount(mountpoint: str, lazy: bool = False, quiet: bool = False, timeout: float = 20.0) -> None:
    """Unmount a coralfs mount (also one whose daemon died) and wait for its daemon."""
    mp = os.path.abspath(mountpoint)
    fstype = is_mounted(mp)
    if fstype is None:
        if quiet:
            return
        raise MountError(f"{mp} is not mounted")
    if fstype != FSTYPE:
        raise MountError(f"{mp} is not a coralfs mount ({fstype})")
    pid = None
    try:
        with open(state_path(mp)) as f:
            pid = json.load(f).get("pid")
    except (OSError, ValueError):
        pass
    p = _fusermount("-z", "-u", mp) if lazy else _fusermount("-u", mp)
    if p.returncode != 0:
        if _stale(mp):
            p = _fusermount("-z", "-u", mp)
        if p.returncode != 0:
            why = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "fusermount3 failed"
            if "busy" in why.lower():
                raise MountError(f"{mp} is busy (files are open or a shell is inside it): close them, "
                                 "or `coralfs umount --lazy`")
            raise MountError(f"cannot unmount {mp}: {why}")
    if pid:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
    try:
        os.unlink(state_path(mp))
    except FileNotFoundError:
        pass


def list_mounts() -> list[dict]:
    out = []
    for _src, mp, fstype in proc_mounts():
        if fstype != FSTYPE:
            continue
        info: dict = {"mountpoint": mp}
        try:
            with open(state_path(mp)) as f:
                info.update(json.load(f))
        except (OSError, ValueError):
            pass
        alive = pid_alive(info["pid"]) if info.get("pid") else True
        info["alive"] = alive and not _stale(mp)
        out.append(info)
    return out
