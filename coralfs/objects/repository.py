"""The repository: one directory holding objects, refs, reflogs, config and staging.

```
repo/
  config.toml   HEAD   refs/heads/*   refs/tags/*   logs/   objects/ab/cdef...
  staging/      index/similarity.sqlite
```

A commit first makes all its objects durable, then moves its branch by compare-and-swap,
so a crash at any point leaves the repository valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import threading
import time as _time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from . import fsck as _fsck
from . import gc as _gc
from . import history
from .config import FORMAT_VERSION, Config, ConfigError, attach_scopes, user_config
from .durable import fsync_dir, make_dirs, open_private
from .errors import CoralError, NotARepository
from .history import BadRevision
from .ids import ObjectId, from_hex, is_hex_prefix, to_hex
from .kinds import Commit, File, ShaObject, Tag, Tensor, Tree
from .merge import MergeConflict, MergeReport, Strategy, merge_trees, parse_strategy
from .odb import ObjectDB
from .pins import Pins
from .reader import FileView
from .refs import HEAD, HEADS, REMOTES, TAGS, DiskRefs, RefNotFound, RefsContainer, check_ref_name, default_identity
from .regions import Region
from .similarity import SimilarityIndex
from .stores import DiskStore, ObjectStore
from .writer import IngestStats, Settings, Source, Writer

log = logging.getLogger(__name__)

MARKERS = ("HEAD", "objects", "refs", "config.toml")
DEFAULT_BRANCH = "main"
PRIVATE_MODE = 0o700
SHARED_MODE = 0o2750
# Held shared (flock) by every write session, exclusive by gc while it marks and sweeps.
SESSION_LOCK = "sessions.lock"


def _markers(store: ObjectStore | None, refs: RefsContainer | None) -> list[str]:
    """What must exist under a repository's path: what is not injected, and the config."""
    return [m for m in MARKERS if not (m == "objects" and store is not None)
            and not (m in ("HEAD", "refs") and refs is not None)]


def in_write_session(fn):
    """Run a method that stores or reuses objects, or points a ref at one, inside a write
    session of its repository (``self``, or ``self.repo`` for a staging area or a Watcher)."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with getattr(self, "repo", self).write_session():
            return fn(self, *args, **kwargs)
    return wrapper


class FormatOps(Protocol):
    """What a Repository does with file formats, ingest, export and reports: the code
    lives above the object layer (coralfs.ingest, coralfs.export, coralfs.diff), which this
    package never imports. The composition root, ``coralfs/__init__.py``, registers the
    provider once with :func:`use_format_ops`, so every Repository (the CLI's, a mount
    daemon's, a user's) offers the same operations. Results are typed where they are made."""

    def commit_paths(self, repo: Repository, sources: list[str], message: str, **options: Any) -> Any: ...
    def export(self, repo: Repository, rev: str, dest: str, include: list[str] | None,
               paths: list[str] | None, preserve_owner: bool = False) -> list[str]: ...
    def safetensors_header(self, repo: Repository, file_id: ObjectId) -> tuple[int, dict]: ...
    def iter_subset(self, repo: Repository, file_id: ObjectId, include: list[str]) -> Iterator[bytes]: ...
    def diff(self, repo: Repository, a: str | None, b: str, *, tensors: bool = True) -> list[Any]: ...
    def tensor_stored_bytes(self, repo: Repository, tensor: Tensor) -> tuple[int, Counter]: ...
    def file_stored_bytes(self, repo: Repository, f: File) -> int: ...
    def stats(self, repo: Repository) -> dict: ...


_format_ops_provider: Callable[[], FormatOps] | None = None
# Wraps a repository's own DiskStore when its config says so (a partial clone reads what
# it lacks from its remote); set by the composition root, since remotes live above here.
_store_wrapper: Callable[[Repository, ObjectStore], ObjectStore] | None = None
SHALLOW = "shallow"  # ids of the commits a shallow clone has without their parents


def use_store_wrapper(wrapper: Callable[[Repository, ObjectStore], ObjectStore]) -> None:
    global _store_wrapper
    _store_wrapper = wrapper


def use_format_ops(provider: Callable[[], FormatOps]) -> None:
    """Set where repositories get their FormatOps (called on first use, once per Repository)."""
    global _format_ops_provider
    _format_ops_provider = provider


class Repository:
    """A coralfs repository: a directory, with its objects and refs in it unless a store
    or refs are given. Open with :meth:`open`, create with :meth:`init`."""

    # None until first use, then the provider's (an instance may be given its own).
    _format_ops: FormatOps | None = None

    def __init__(self, path: str, store: ObjectStore | None = None, refs: RefsContainer | None = None,
                 *, tolerate_config: bool = False, overrides: dict[str, str] | None = None) -> None:
        """``store``/``refs``: where objects and refs live (default: ``objects/`` and
        ``HEAD``, ``refs/``, ``logs/`` under ``path``); the directory still holds the
        config, pins, staging areas, the similarity index and the session lock.
        ``tolerate_config``: a config.toml that does not parse or holds refused values
        is recorded in ``config_problem`` (defaults apply) instead of raised; for fsck,
        which reports it with everything else. ``overrides``: ``KEY: text`` settings from
        the command line (``coralfs -c KEY=VALUE``), above every other scope."""
        self.path = os.path.abspath(path)
        for m in _markers(store, refs):
            if not os.path.exists(os.path.join(self.path, m)):
                raise NotARepository(path, f"no {m}")
        self.config_problem: str | None = None
        try:
            self.config = Config(os.path.join(self.path, "config.toml"))
            attach_scopes(self.config, self.path, overrides=overrides)
        except ConfigError as e:
            if not tolerate_config:
                raise
            self.config_problem = str(e)
            self.config = Config(os.path.join(self.path, "config.toml"), read=False)
        fmt = self.config.get("core.format")
        if fmt != FORMAT_VERSION:
            raise NotARepository(path, f"format {fmt}; this coralfs reads format {FORMAT_VERSION}")
        if store is None:
            store = DiskStore(os.path.join(self.path, "objects"))
            if _store_wrapper is not None:
                store = _store_wrapper(self, store)
        self.store: ObjectStore = store
        self.shallow = self.read_shallow()
        self.odb = ObjectDB(self.store, cache_bytes=int(self.config.get("cache.size")),
                            level=int(self.config.get("storage.literal_level")))
        self.refs: RefsContainer = DiskRefs(self.path) if refs is None else refs
        self.pins = Pins(self.path)
        self._writer: Writer | None = None
        self._similarity: SimilarityIndex | None = None
        # Metadata a commit of paths adds from its new tree and the parent's (the
        # ``annotate`` option of :meth:`commit_paths` when the call gives none). The layers
        # above set it: `coralfs commit`, `import` and `watch` infer ``derived_from``
        # (coralfs.api.infer_derivations); None: nothing is added.
        self.commit_annotate: Callable[[Tree, Tree | None], dict] | None = None
        self._session_mutex = threading.Lock()
        self._session_depth = 0
        self._session_fd: int | None = None

    def read_shallow(self) -> frozenset[ObjectId]:
        """The shallow boundary: commits whose parents were not fetched (history walks,
        gc and fsck stop there instead of looking for them)."""
        try:
            with open(os.path.join(self.path, SHALLOW), encoding="ascii") as f:
                return frozenset(from_hex(ln.strip()) for ln in f if ln.strip())
        except FileNotFoundError:
            return frozenset()
        except (ValueError, UnicodeDecodeError):
            raise CoralError(f"{os.path.join(self.path, SHALLOW)} is damaged: one commit id per line expected") from None

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def init(cls, path: str, *, default_branch: str = DEFAULT_BRANCH, shared: bool = False,
             store: ObjectStore | None = None, refs: RefsContainer | None = None) -> Repository:
        """Create an empty repository at ``path``: private (0700, files 0600) or, with
        ``shared``, readable by the directory's group (02750, files 0640). Every file and
        directory made inside it later takes these bits from its directory. With
        ``store``/``refs`` (e.g. MemoryStore, MemoryRefs) objects or refs live there
        instead of under ``path``; open it again with the same ones."""
        check_ref_name(default_branch)
        path = os.path.abspath(path)
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            if all(os.path.exists(os.path.join(path, m)) for m in MARKERS):
                raise CoralError(f"{path} is already a coralfs repository")
            raise CoralError(f"cannot init {path}: it exists and is not an empty directory")
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise CoralError(f"cannot init {path}: parent directory {parent} does not exist")
        os.makedirs(path, exist_ok=True)
        # chmod, not the mkdir mode: the umask must not widen nor narrow it. setgid makes
        # new files and directories keep the repository's group.
        os.chmod(path, SHARED_MODE if shared else PRIVATE_MODE)
        dirs = ["staging", "index"]
        if store is None:
            dirs.append("objects")
        if refs is None:
            dirs += ["refs/heads", "refs/tags", "logs"]
        for d in dirs:
            make_dirs(os.path.join(path, d))
        cfg = Config(os.path.join(path, "config.toml"))
        cfg.data = {"core": {"format": FORMAT_VERSION}}
        cfg.save()
        # HEAD last: until it exists the directory is not yet a repository.
        (DiskRefs(path) if refs is None else refs).write_head(f"ref: {HEADS}{default_branch}\n")
        fsync_dir(path)
        return cls(path, store, refs)

    @classmethod
    def open(cls, path: str, store: ObjectStore | None = None, refs: RefsContainer | None = None,
             *, tolerate_config: bool = False, overrides: dict[str, str] | None = None) -> Repository:
        if not os.path.isdir(path):
            raise NotARepository(path, "no such directory")
        return cls(path, store, refs, tolerate_config=tolerate_config, overrides=overrides)

    @staticmethod
    def discover(start: str = ".") -> str:
        """The repository at ``start`` or its nearest parent."""
        p = os.path.abspath(start)
        while True:
            if all(os.path.exists(os.path.join(p, m)) for m in MARKERS):
                return p
            up = os.path.dirname(p)
            if up == p:
                raise NotARepository(os.path.abspath(start), "nor any of its parents")
            p = up

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- write sessions ------------------------------------------------------------------
    def _open_session_lock(self) -> int:
        path = os.path.join(self.path, SESSION_LOCK)
        try:
            return open_private(path, os.O_RDWR)  # the repository's file mode (0600 when private)
        except OSError as e:
            # A repository this user may only read (fsck of someone else's): flock works
            # on a read-only descriptor too.
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise CoralError(f"cannot open {path} ({e.strerror}): no write access to the repository") from None

    @contextlib.contextmanager
    def write_session(self) -> Iterator[None]:
        """Hold off gc from the first object a writer stores or reuses until its ref has
        moved: a shared flock on ``sessions.lock`` that gc takes exclusively.

        Sessions never block each other; they wait only while a gc marks and sweeps.
        Re-entrant (nested calls and threads of one Repository share one lock).
        """
        with self._session_mutex:
            if self._session_depth == 0:
                fd = self._open_session_lock()
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                except BaseException:
                    os.close(fd)
                    raise
                self._session_fd = fd
            self._session_depth += 1
        try:
            yield
        finally:
            with self._session_mutex:
                self._session_depth -= 1
                if self._session_depth == 0 and self._session_fd is not None:
                    os.close(self._session_fd)  # closing releases the flock
                    self._session_fd = None

    @contextlib.contextmanager
    def exclusive_session(self) -> Iterator[None]:
        """No write session runs while this is held (gc marks and sweeps under it)."""
        if self._session_depth:
            raise CoralError("gc cannot run inside a write session of the same repository")
        fd = self._open_session_lock()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("gc: waiting for running commits to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def write_batch(self) -> Iterator[None]:
        """Objects stored inside it skip their own fsync and become durable together in a
        few flushes of the file system (:meth:`DiskStore.batch`: at the latest in
        ``store.sync()``, which every ref move waits for, and when the outermost batch
        ends). A commit of a checkpoint paid an fsync per object file, per fan-out
        directory and per re-encoded parent (~450 for 45 MB of bf16). Use it inside a
        write session: pending objects are hidden temp files that gc must not race."""
        store = self.store
        disk = store if isinstance(store, DiskStore) else getattr(store, "local", None)
        if not isinstance(disk, DiskStore):
            yield   # a store without batches (memory, remote): each put as it is
            return
        with self.write_session(), disk.batch():
            yield

    # -- components ----------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        c = self.config
        return Settings(chunk_size=int(c.get("storage.chunk_size")),
                        tensor_level=int(c.get("storage.tensor_level")),
                        literal_level=int(c.get("storage.literal_level")),
                        max_chain=int(c.get("storage.max_chain")))

    @property
    def similarity(self) -> SimilarityIndex | None:
        if self._similarity is None and self.config.get("storage.similarity"):
            self._similarity = SimilarityIndex(os.path.join(self.path, "index", "similarity.sqlite"))
        return self._similarity

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            self._writer = Writer(self.odb, self.settings, self.similarity)
        return self._writer

    # -- objects -------------------------------------------------------------------------
    def put(self, obj: ShaObject) -> ObjectId:
        return self.odb.put_object(obj)

    def read_commit(self, oid: ObjectId) -> Commit:
        return self.odb.get_object(oid, Commit)

    def read_tree(self, oid: ObjectId) -> Tree:
        return self.odb.get_object(oid, Tree)

    def read_file(self, oid: ObjectId) -> File:
        return self.odb.get_object(oid, File)

    def open_file(self, oid: ObjectId) -> FileView:
        return FileView(self.odb, self.read_file(oid))

    def write_file(self, source: str | Source, regions: list[Region] | None = None,
                   fmt: str = "bytes", base: File | None = None) -> tuple[ObjectId, IngestStats]:
        """Store one file (streamed) described by ``regions``; unlisted bytes are literal."""
        if isinstance(source, str):
            with Source(source) as src:
                return self.writer.write_file(src, regions or [], fmt, base)
        return self.writer.write_file(source, regions or [], fmt, base)

    def tree_of(self, rev: str | ObjectId | None) -> Tree:
        if rev is None:
            return Tree({})
        oid = rev if isinstance(rev, bytes) else self.resolve(rev)
        return self.read_tree(self.read_commit(oid).tree)

    # -- refs ----------------------------------------------------------------------------
    def head_branch(self) -> str | None:
        t = self.refs.head_target()
        return t[len(HEADS):] if t else None

    def head(self) -> ObjectId | None:
        return self.refs.read(HEAD)

    def branches(self) -> dict[str, ObjectId]:
        return self.refs.list(HEADS)

    def tags(self) -> dict[str, ObjectId]:
        """Tag name -> the tag's own id (annotated) or commit id (lightweight)."""
        return self.refs.list(TAGS)

    def branch_head(self, name: str) -> ObjectId | None:
        check_ref_name(name)
        return self.refs.read(HEADS + name)

    @in_write_session
    def create_branch(self, name: str, start: str | None = None, force: bool = False) -> ObjectId:
        check_ref_name(name)
        oid = self.resolve(start or "HEAD")
        old = self.refs.read(HEADS + name)
        if old is not None and not force:
            raise CoralError(f"branch {name} already exists; use another name or -f to move it")
        self._check_ref_dirs(HEADS, name)
        self.refs.set_if_equals(HEADS + name, old, oid, f"branch: created from {start or 'HEAD'}")
        return oid

    def delete_branch(self, name: str) -> ObjectId:
        check_ref_name(name)
        old = self.refs.read(HEADS + name)
        if old is None:
            raise RefNotFound(f"branch {name}")
        if self.head_branch() == name:
            raise CoralError(f"cannot delete branch {name}: HEAD is on it; checkout another first")
        self.refs.set_if_equals(HEADS + name, old, None, "branch: deleted")
        return old

    @in_write_session
    def create_tag(self, name: str, target: str = "HEAD", message: str = "",
                   tagger: str | None = None, force: bool = False) -> ObjectId:
        check_ref_name(name, "tag")
        commit = self.resolve(target)
        old = self.refs.read(TAGS + name)
        if old is not None and not force:
            raise CoralError(f"tag {name} already exists; delete it first or use -f")
        self._check_ref_dirs(TAGS, name)
        tag = Tag(commit, name, tagger or self.identity(), int(_time.time()), message)
        tid = self.put(tag)
        self.store.sync()
        self.refs.set_if_equals(TAGS + name, old, tid, f"tag: {name} -> {to_hex(commit)[:12]}")
        return tid

    @in_write_session
    def tag_rotating(self, prefix: str, target: ObjectId, keep: int, message: str = "") -> str:
        """Tag ``target`` as ``PREFIX/N`` (one more than the highest N) and delete all but
        the newest ``keep`` of the ``PREFIX/N`` tags. Returns the new tag's name."""
        prefix = prefix.rstrip("/") + "/"
        nums = sorted(int(n[len(prefix):]) for n in self.tags()
                      if n.startswith(prefix) and n[len(prefix):].isdigit())
        name = f"{prefix}{(nums[-1] + 1) if nums else 1}"
        self.create_tag(name, to_hex(target), message=message)
        nums.append(int(name[len(prefix):]))
        for n in nums[:-keep] if keep > 0 else []:
            self.delete_tag(f"{prefix}{n}")
        return name

    def delete_tag(self, name: str) -> None:
        check_ref_name(name, "tag")
        old = self.refs.read(TAGS + name)
        if old is None:
            raise RefNotFound(f"tag {name}")
        self.refs.set_if_equals(TAGS + name, old, None, "tag: deleted")

    def _check_ref_dirs(self, prefix: str, name: str) -> None:
        """Refuse names that clash as file vs directory with existing ones (a vs a/b)."""
        existing = self.refs.list(prefix)
        for other in existing:
            if other.startswith(name + "/") or name.startswith(other + "/"):
                raise CoralError(f"{name!r} conflicts with existing {prefix.split('/')[1][:-1]} {other!r}")

    def peel(self, oid: ObjectId) -> ObjectId:
        """Follow annotated tags to the commit they name."""
        for _ in range(16):
            obj = self.odb.get_object(oid)
            if isinstance(obj, Tag):
                oid = obj.target
                continue
            if isinstance(obj, Commit):
                return oid
            raise BadRevision(to_hex(oid), f"is a {obj.type_name}, not a commit")
        raise BadRevision(to_hex(oid), "tag chain too long")

    def resolve(self, spec: str) -> ObjectId:
        """A revision spec -> commit id: HEAD, branch, tag, full or unique short id
        (4+ hex digits), followed by any of ``~N``, ``^`` and ``^N``."""
        if not spec:
            raise BadRevision(spec, "empty revision")
        name, ops = history.split_spec(spec)
        oid = self._resolve_name(name, spec)
        for op, n in ops:
            c = self.read_commit(oid)
            if op == "~":
                for _ in range(n):
                    c = self.read_commit(oid)
                    if not c.parents:
                        raise BadRevision(spec, f"{to_hex(oid)[:12]} has no parent")
                    oid = c.parents[0]
            else:
                if n == 0:
                    continue
                if len(c.parents) < n:
                    raise BadRevision(spec, f"{to_hex(oid)[:12]} has no parent number {n}")
                oid = c.parents[n - 1]
        return oid

    def _resolve_name(self, name: str, spec: str) -> ObjectId:
        if name in ("HEAD", "@", ""):
            oid = self.refs.read(HEAD)
            if oid is None:
                raise BadRevision(spec, f"HEAD ({self.head_branch() or 'detached'}) has no commits yet")
            return oid
        for prefix in (HEADS, TAGS):
            try:
                check_ref_name(name)
            except CoralError:
                break
            oid = self.refs.read(prefix + name)
            if oid is not None:
                return self.peel(oid)
        for prefix in (HEADS, TAGS, REMOTES):
            if name.startswith(prefix):
                oid = self.refs.read(name)
                if oid is not None:
                    return self.peel(oid)
        if "/" in name:  # REMOTE/BRANCH: a remote-tracking ref
            try:
                oid = self.refs.read(REMOTES + name)
            except CoralError:
                oid = None
            if oid is not None:
                return self.peel(oid)
        low = name.lower()
        if is_hex_prefix(low):
            if len(low) == 64:
                oid = from_hex(low)
                if self.store.has(oid):
                    return self.peel(oid)
            elif len(low) >= 4:
                matches = [o for o in self.store.iter_prefix(low) if self._is_commitish(o)]
                if len(matches) == 1:
                    return self.peel(matches[0])
                if len(matches) > 1:
                    raise BadRevision(spec, f"short id {name} is ambiguous ({len(matches)} commits); give more digits")
        raise BadRevision(spec, "no branch, tag or commit by that name (see `coralfs branch`, `coralfs tag`, `coralfs log`)")

    def _is_commitish(self, oid: ObjectId) -> bool:
        try:
            return isinstance(self.odb.get_object(oid), (Commit, Tag))
        except CoralError:
            return False

    def identity(self) -> str:
        """user.name of the repository, else of the user's config, else user@host."""
        return self.config.get("user.name") or user_config().get("user.name") or default_identity()

    def describe_commit(self, oid: ObjectId) -> dict:
        """A commit as JSON-ready data (``show --json``, ``.coral/commit.json``, a mount's
        status): its id and fields, ids in hex. Kept apart from the stored form on purpose:
        a new object format version must not change what users read."""
        c = self.read_commit(oid)
        return {"id": to_hex(oid), "tree": to_hex(c.tree), "parents": [to_hex(p) for p in c.parents],
                "author": c.author, "time": c.time, "message": c.message, "metadata": c.metadata}

    # -- operations implemented above the object layer (see FormatOps) -------------------
    @property
    def format_ops(self) -> FormatOps:
        if self._format_ops is None:
            if _format_ops_provider is None:
                raise CoralError("this operation needs coralfs's format layer: import coralfs (not only coralfs.objects)")
            self._format_ops = _format_ops_provider()
        return self._format_ops

    @format_ops.setter
    def format_ops(self, ops: FormatOps) -> None:
        self._format_ops = ops

    def commit_paths(self, sources: list[str], message: str, **options: Any) -> Any:
        """Commit checkpoint directories or files (:func:`coralfs.ingest.commit_paths`)."""
        if self.commit_annotate is not None:
            options.setdefault("annotate", self.commit_annotate)
        return self.format_ops.commit_paths(self, sources, message, **options)

    def export(self, rev: str, dest: str, include: list[str] | None = None,
               paths: list[str] | None = None, preserve_owner: bool = False) -> list[str]:
        """Write the files of ``rev`` under ``dest`` (:func:`coralfs.export.export_rev`)."""
        return self.format_ops.export(self, rev, dest, include, paths, preserve_owner)

    def safetensors_header(self, file_id: ObjectId) -> tuple[int, dict]:
        return self.format_ops.safetensors_header(self, file_id)

    def iter_subset(self, file_id: ObjectId, include: list[str]) -> Iterator[bytes]:
        """A stored safetensors file holding only the tensors matching ``include``."""
        return self.format_ops.iter_subset(self, file_id, include)

    def diff(self, a: str | None, b: str, *, tensors: bool = True) -> list[Any]:
        """Per file and per tensor changes from ``a`` to ``b`` (:func:`coralfs.diff.diff`)."""
        return self.format_ops.diff(self, a, b, tensors=tensors)

    def tensor_stored_bytes(self, tensor: Tensor) -> tuple[int, Counter]:
        return self.format_ops.tensor_stored_bytes(self, tensor)

    def file_stored_bytes(self, f: File) -> int:
        return self.format_ops.file_stored_bytes(self, f)

    def stats(self) -> dict:
        """Logical and stored bytes, objects by codec (:func:`coralfs.diff.stats`)."""
        return self.format_ops.stats(self)

    # -- committing ----------------------------------------------------------------------
    @in_write_session
    def commit(self, tree: Tree | ObjectId, message: str, *, branch: str | None = None,
               parents: list[ObjectId] | None = None, author: str | None = None,
               time: int | None = None, metadata: dict | None = None,
               expected_head: ObjectId | None | bool = True,
               before_move: Callable[[ObjectId], None] | None = None) -> ObjectId:
        """Record a commit of ``tree`` and move ``branch`` (default: HEAD's) to it.

        ``parents`` defaults to the branch head. ``expected_head`` is the value the branch
        must still hold (True: the head read now). If another commit moved the branch in
        between, RefMoved is raised and the branch is left as it was. ``before_move(cid)``
        runs once the commit is durable, just before the branch moves (a caller records
        what it is about to publish, to finish it after a crash).
        """
        tree_id = tree if isinstance(tree, bytes) else self.put(tree)
        detached = False
        if branch is None:
            branch = self.head_branch()
            detached = branch is None
        if not detached:
            check_ref_name(branch)
            current = self.refs.read(HEADS + branch)
        else:
            current = self.refs.read(HEAD)
        if expected_head is True:
            expected_head = current
        if parents is None:
            parents = [expected_head] if expected_head else []
        c = Commit(tree_id, parents, author or self.identity(),
                   int(_time.time()) if time is None else time, message, metadata)
        cid = self.put(c)
        # Every object of the commit is durable before any ref can reach it.
        self.store.sync()
        if before_move is not None:
            before_move(cid)
        summary = message.splitlines()[0] if message else ""
        if detached:
            self.refs.set_detached(cid, f"commit: {summary}")
        else:
            kind = "commit (merge)" if len(parents) > 1 else ("commit" if parents else "commit (initial)")
            self.refs.set_if_equals(HEADS + branch, expected_head or None, cid, f"{kind}: {summary}")
        return cid

    @in_write_session
    def checkout(self, spec: str) -> tuple[str | None, ObjectId | None]:
        """Move HEAD: to a branch (attached) or to any other revision (detached)."""
        try:
            check_ref_name(spec)
            is_branch = self.refs.read(HEADS + spec) is not None
        except CoralError:
            is_branch = False
        if is_branch:
            self.refs.set_symbolic(HEAD, HEADS + spec, f"checkout: moving to {spec}")
            return spec, self.refs.read(HEADS + spec)
        oid = self.resolve(spec)
        self.refs.set_detached(oid, f"checkout: moving to {spec}")
        return None, oid

    # -- history -------------------------------------------------------------------------
    def log(self, start: str | ObjectId = "HEAD", limit: int | None = None,
            first_parent: bool = False) -> Iterator[tuple[ObjectId, Commit]]:
        oid = start if isinstance(start, bytes) else self.resolve(start)
        for i, c in enumerate(history.walk(self, [oid], first_parent)):
            if limit is not None and i >= limit:
                return
            yield c, self.read_commit(c)

    def merge_base(self, a: str | ObjectId, b: str | ObjectId) -> ObjectId | None:
        a_id = a if isinstance(a, bytes) else self.resolve(a)
        b_id = b if isinstance(b, bytes) else self.resolve(b)
        bases = history.merge_bases(self, a_id, b_id)
        return bases[0] if bases else None

    @in_write_session
    def merge(self, theirs: str, strategy: str | Strategy = "fail", *, message: str | None = None,
              author: str | None = None, no_ff: bool = False) -> tuple[str, ObjectId, MergeReport]:
        """Merge ``theirs`` into HEAD's branch.

        Returns (outcome, commit id, report), outcome one of ``up-to-date``,
        ``fast-forward`` and ``merged``. Raises MergeConflict with nothing changed when
        the strategy leaves conflicts.
        """
        s = parse_strategy(strategy) if isinstance(strategy, str) else strategy
        branch = self.head_branch()
        ours = self.refs.read(HEAD)
        if ours is None:
            raise CoralError("cannot merge into a branch with no commits; commit first")
        their_id = self.resolve(theirs)
        if history.is_ancestor(self, their_id, ours):
            return "up-to-date", ours, MergeReport()
        if not no_ff and history.is_ancestor(self, ours, their_id):
            if branch is None:
                self.refs.set_detached(their_id, f"merge {theirs}: fast-forward")
            else:
                self.refs.set_if_equals(HEADS + branch, ours, their_id, f"merge {theirs}: fast-forward")
            return "fast-forward", their_id, MergeReport()
        base_id = self.merge_base(ours, their_id)
        base_tree = self.tree_of(base_id) if base_id else None
        tree, rep = merge_trees(self.odb, base_tree, self.tree_of(ours), self.tree_of(their_id), s)
        if tree is None:
            raise MergeConflict(rep.conflicts)
        msg = message or f"Merge {theirs} into {branch or 'HEAD'} ({s.kind}{'' if s.kind != 'weighted' else f':{s.alpha}'})"
        meta = {"merge": {"strategy": s.kind, "alpha": s.alpha if s.combines else None,
                          "combined": rep.combined, "resolved": rep.resolved,
                          "base": to_hex(base_id) if base_id else None}}
        cid = self.commit(tree, msg, parents=[ours, their_id], author=author, metadata=meta,
                          expected_head=ours)
        return "merged", cid, rep

    # -- maintenance ---------------------------------------------------------------------
    def gc(self, grace_seconds: float = 3600.0, dry_run: bool = False) -> _gc.GcReport:
        return _gc.gc(self, grace_seconds, dry_run)

    def fsck(self, progress: Callable[[int, int], None] | None = None) -> _fsck.FsckReport:
        return _fsck.fsck(self, progress)


__all__ = ["FormatOps", "IngestStats", "Region", "Repository", "Source", "use_format_ops"]
