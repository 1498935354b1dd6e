"""Writing the files of a revision into a destination directory without trusting either.

A tree is data (it may be crafted) and the destination may hold anything (symlinks placed
by someone else), so:

- modes: only the executable bit of a tree entry counts; files are created 0666 or 0777
  and the umask decides the rest (0644/0755 under the usual 022), like git. A setuid,
  setgid or sticky bit in a tree is never applied.
- every directory below the destination is opened component by component with
  O_DIRECTORY|O_NOFOLLOW relative to its parent's descriptor (openat), and files are
  created and renamed relative to that descriptor: a symlink, or a non-directory where a
  directory is needed, is refused with an error naming it, and nothing is written
  through it.
- symbolic links of the tree are created as links (their stored target text, whatever it
  names, even outside the destination); nothing is ever written through a link, one the
  export made or one that was there, since every path is reached by the walk above.
  Empty directories of the tree are created.
- ``preserve_owner``: uid, gid and the 12 mode bits the commit recorded
  (``commit --preserve-owner``) are applied once everything is in place, through
  descriptors opened without following links (needs root, like ``tar -p``).
- two phases: every file is first written to a hidden temp file next to its final name
  (a link: created under a temp name) and fsynced; only when all of them are written are
  they renamed into place and their directories fsynced. A failure in the first phase (a corrupt object, ENOSPC, a refused
  path) removes the temp files and the directories the export created, so nothing new is
  left; a failure while renaming (rare: the destination changed under the export) removes
  what it can and names the existing files it had already replaced.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .formats import safetensors as st_format
from .ingest import OWNERS_KEY, read_link
from .objects.durable import fsync_dir, write_temp
from .objects.errors import CoralError
from .objects.ids import ObjectId
from .objects.kinds import validate_path
from .objects.repository import Repository

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ExportError(CoralError):
    pass


@dataclass(frozen=True)
class Item:
    """One entry to export: a file (``blocks`` gives its bytes), a link (``target``) or
    an empty directory."""

    path: str
    kind: str = "file"    # "file", "link" or "dir"
    executable: bool = False
    blocks: Callable[[], Iterable[bytes]] | None = None
    target: bytes = b""


Owners = dict[str, tuple[int, int, int]]  # tree path -> (uid, gid, mode bits)


@dataclass
class _Pending:
    path: str       # the tree path
    dir_rel: str    # its directory, relative to the destination ('' = the destination)
    name: str
    tmp: str
    existed: bool


class Destination:
    """One export into ``dest`` (created if missing). Use :meth:`write` per file, then
    :meth:`finish`; :meth:`abort` undoes what is not finished."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self._created_above: list[str] = []   # dest itself and missing parents, made here
        self._created: list[str] = []         # directories below dest made here (rel paths)
        self._pending: list[_Pending] = []
        self._empty: list[str] = []           # the tree's empty directories, made or found
        self._cur: tuple[str, int] | None = None  # the directory fd in use
        self._root = self._open_root()

    # -- paths -------------------------------------------------------------------------
    def shown(self, rel: str) -> str:
        return os.path.join(self.dest, *rel.split("/")) if rel else self.dest

    def _open_root(self) -> int:
        # The destination as the user named it may be, or lie under, a symlink: that is
        # their choice. What lies below it is checked component by component.
        missing = []
        p = os.path.abspath(self.dest)
        while not os.path.lexists(p):
            missing.append(p)
            p = os.path.dirname(p)
        try:
            for d in reversed(missing):
                os.mkdir(d, 0o777)
                self._created_above.append(d)
            return os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            self._remove_dirs()
            what = "is not a directory" if e.errno == errno.ENOTDIR else (e.strerror or str(e))
            raise ExportError(f"cannot export to {self.dest}: {what}") from None

    def _dir(self, rel: str, create: bool) -> int:
        """A descriptor of the directory ``rel`` below the destination (kept until the
        next call asks for another one)."""
        if self._cur is not None and self._cur[0] == rel:
            return self._cur[1]
        self._close_cur()
        fd = os.dup(self._root)
        done = []
        for comp in rel.split("/") if rel else []:
            done.append(comp)
            fd = self._step(fd, comp, "/".join(done), create)  # closes the parent's fd
        self._cur = (rel, fd)
        return fd

    def _step(self, parent: int, comp: str, rel: str, create: bool) -> int:
        try:
            try:
                child = os.open(comp, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(comp, 0o777, dir_fd=parent)
                self._created.append(rel)
                child = os.open(comp, _DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ExportError(self._not_a_dir(parent, comp, rel)) from None
            raise ExportError(f"cannot export into {self.shown(rel)}: {e.strerror or e}") from None
        finally:
            os.close(parent)
        return child

    def _not_a_dir(self, parent: int, comp: str, rel: str) -> str:
        try:
            link = stat.S_ISLNK(os.stat(comp, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        if link:
            return (f"{self.shown(rel)} is a symbolic link; export does not write through links "
                    "in the destination (remove it or export elsewhere)")
        return (f"{self.shown(rel)} is not a directory but the revision has files under it "
                "(remove it or export elsewhere)")

    def _close_cur(self) -> None:
        if self._cur is not None:
            os.close(self._cur[1])
            self._cur = None

    # -- phase 1: temp files -------------------------------------------------------------
    def _slot(self, path: str, what: str) -> tuple[str, str, int, bool]:
        """(directory, name, its descriptor, whether the name exists) of ``path``, which
        must not be a directory in the destination."""
        dir_rel, _, name = path.rpartition("/")
        dfd = self._dir(dir_rel, create=True)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ExportError(f"{self.shown(path)} is a directory but the revision has {what} "
                              "there (remove it or export elsewhere)")
        return dir_rel, name, dfd, st is not None

    def link(self, path: str, target: bytes) -> None:
        """Create the tree link ``path`` (to ``target``, never resolved) under a temp name."""
        dir_rel, name, dfd, existed = self._slot(path, "a symbolic link")
        tmp = f".tmp-{os.getpid()}-{secrets.token_hex(6)}.link"
        try:
            os.symlink(target, tmp, dir_fd=dfd)
        except OSError as e:
            raise ExportError(f"cannot create the link {self.shown(path)}: {e.strerror or e}") from None
        self._pending.append(_Pending(path, dir_rel, name, tmp, existed))

    def mkdir(self, path: str) -> None:
        """Create the tree's empty directory ``path`` (an existing directory is kept)."""
        self._dir(path, create=True)
        self._empty.append(path)

    def write(self, path: str, blocks: Callable[[], Iterable[bytes]], executable: bool) -> None:
        """Write the tree file ``path`` to a temp file beside its final name."""
        dir_rel, name, dfd, existed = self._slot(path, "a file")
        try:
            tmp = write_temp("", blocks(), mode=0o777 if executable else 0o666, dir_fd=dfd, sparse=True)
        except CoralError as e:
            err = ExportError(f"cannot export {path}: {e}")
            err.exit_code = e.exit_code
            raise err from None
        except OSError as e:
            raise ExportError(f"cannot write {self.shown(path)}: {e.strerror or e}") from None
        self._pending.append(_Pending(path, dir_rel, name, tmp, existed))

    # -- phase 2: rename ---------------------------------------------------------------
    def finish(self, owners: Owners | None = None) -> list[str]:
        """Move every temp file to its name, fsync the directories, then apply ``owners``
        (if given). Returns the paths."""
        placed: list[_Pending] = []
        try:
            by_dir: dict[str, list[_Pending]] = {}
            for p in self._pending:
                by_dir.setdefault(p.dir_rel, []).append(p)
            for rel, items in by_dir.items():
                dfd = self._dir(rel, create=False)
                for p in items:
                    try:
                        os.replace(p.tmp, p.name, src_dir_fd=dfd, dst_dir_fd=dfd)
                    except OSError as e:
                        raise ExportError(f"cannot write {self.shown(p.path)}: {e.strerror or e}") from None
                    placed.append(p)
                os.fsync(dfd)
            # A new directory's own name lives in its parent.
            for rel in {r.rpartition("/")[0] for r in self._created}:
                os.fsync(self._dir(rel, create=False))
            for d in {os.path.dirname(d) for d in self._created_above}:
                fsync_dir(d)
        except BaseException as e:
            replaced = [p.path for p in placed if p.existed]
            for p in placed:
                if not p.existed:
                    self._unlink(p.dir_rel, p.name)
            self._pending = [p for p in self._pending if p not in placed]
            left = self.abort()
            if isinstance(e, CoralError):
                extra = ""
                if replaced:
                    extra = (f"; {len(replaced)} existing file(s) were already replaced: "
                             + ", ".join(replaced[:5]) + (" ..." if len(replaced) > 5 else ""))
                raise ExportError(f"{e}{extra}{left}") from None
            raise
        finally:
            self._close_cur()
        try:
            if owners:
                self._restore_owners(owners)
        finally:
            self._close_cur()
            self._close_root()
        return [p.path for p in self._pending] + self._empty

    def _restore_owners(self, owners: Owners) -> None:
        """chown/chmod every recorded path, deepest first (a directory's own mode may
        forbid entering it, so it comes after everything below it). Each is reached by
        the O_NOFOLLOW walk and changed through a descriptor (a link: lchown only)."""
        for rel in sorted(owners, key=lambda p: (-p.count("/"), p)):
            uid, gid, mode = owners[rel]
            parent, _, name = rel.rpartition("/")
            try:
                dfd = self._dir(parent, create=False)
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
                    continue
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                fd = os.open(name, flags | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0), dir_fd=dfd)
                try:
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, mode)  # after chown, which clears setuid/setgid
                finally:
                    os.close(fd)
            except FileNotFoundError:
                continue  # recorded, but not part of this export (--path)
            except OSError as e:
                raise ExportError(f"the files were written, but the owner of {self.shown(rel)} could not be "
                                  f"restored: {e.strerror or e}") from None

    # -- undo --------------------------------------------------------------------------
    def abort(self) -> str:
        """Remove the temp files and the directories this export made. Returns '' or a
        clause naming what could not be removed."""
        left: list[str] = []
        for p in self._pending:
            if not self._unlink(p.dir_rel, p.tmp):
                left.append(self.shown(f"{p.dir_rel}/{p.tmp}" if p.dir_rel else p.tmp))
        self._pending = []
        left += self._remove_dirs()
        self._close_cur()
        self._close_root()
        if left:
            return "; left behind: " + ", ".join(left)
        return ""

    def _unlink(self, rel: str, name: str) -> bool:
        try:
            os.unlink(name, dir_fd=self._dir(rel, create=False))
            return True
        except FileNotFoundError:
            return True
        except (OSError, CoralError):
            return False

    def _remove_dirs(self) -> list[str]:
        left = []
        for rel in reversed(self._created):
            parent, _, comp = rel.rpartition("/")
            try:
                os.rmdir(comp, dir_fd=self._dir(parent, create=False))
            except FileNotFoundError:
                pass
            except (OSError, CoralError):
                left.append(self.shown(rel))
        self._created = []
        self._close_cur()
        self._close_root()
        for d in reversed(self._created_above):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(d)
        self._created_above = []
        return left

    def _close_root(self) -> None:
        root = getattr(self, "_root", None)
        if root is not None:
            os.close(root)
            self._root = None


def export_files(dest: str, items: Iterable[Item], owners: Owners | None = None) -> list[str]:
    """Write ``items`` (files, links, empty directories) into ``dest`` as described above;
    then apply ``owners``."""
    d = Destination(dest)
    try:
        for it in items:
            if it.kind == "link":
                d.link(it.path, it.target)
            elif it.kind == "dir":
                d.mkdir(it.path)
            else:
                assert it.blocks is not None
                d.write(it.path, it.blocks, it.executable)
    except BaseException as e:
        left = d.abort()
        if isinstance(e, CoralError):
            what = left or f"; nothing was written to {dest}"
            err = ExportError(f"{e}{what}")
            err.exit_code = e.exit_code
            raise err from None
        raise
    return d.finish(owners)


def recorded_owners(repo: Repository, rev: str) -> Owners:
    """What ``commit --preserve-owner`` recorded in ``rev``'s metadata, checked (a commit
    is data: a crafted record is refused, not applied)."""
    c = repo.read_commit(repo.peel(repo.resolve(rev)))
    rec = c.metadata.get(OWNERS_KEY)
    if rec is None:
        raise ExportError(f"{rev} was committed without --preserve-owner, so it records no owners; "
                          "export it without --preserve-owner")
    out: Owners = {}
    ok = isinstance(rec, dict)
    for path, v in rec.items() if ok else ():
        try:
            validate_path(path)
        except CoralError:
            ok = False
            break
        if not (isinstance(v, list) and len(v) == 3 and all(type(x) is int for x in v)
                and 0 <= v[0] < 1 << 32 and 0 <= v[1] < 1 << 32 and 0 <= v[2] <= 0o7777):
            ok = False
            break
        out[path] = (v[0], v[1], v[2])
    if not ok:
        raise ExportError(f"{rev}: its {OWNERS_KEY!r} metadata is not a record of [uid, gid, mode] per path; "
                          "export it without --preserve-owner")
    return out


def export_rev(repo: Repository, rev: str, dest: str, include: list[str] | None = None,
               paths: list[str] | None = None, preserve_owner: bool = False) -> list[str]:
    """Write the files of ``rev`` under ``dest``, byte-identical to what was committed,
    with its symbolic links as links and its empty directories.

    With ``include`` (globs on tensor names), safetensors files are rewritten to hold
    only the matching tensors (a valid, smaller file); other files are unchanged.
    Each file is written durably (temp, fsync, rename, fsync dir), only the executable
    bit of a mode is applied, nothing is written through a symlink inside ``dest``,
    and a failed export leaves nothing new behind (see :class:`Destination`).
    ``preserve_owner``: also restore the uid, gid and mode ``commit --preserve-owner``
    recorded (root only; refused before anything is written otherwise).
    """
    tree = repo.tree_of(rev)
    owners = None
    if preserve_owner:
        owners = recorded_owners(repo, rev)
        if os.geteuid() != 0:
            raise ExportError("export --preserve-owner sets owners with chown, which needs root: run it as root, "
                              "or export without --preserve-owner")

    def wanted(path: str) -> bool:
        return not paths or any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths)

    def items() -> Iterator[Item]:
        for path, e in tree.entries.items():
            if not wanted(path):
                continue
            if e.is_symlink:
                yield Item(path, "link", target=read_link(repo, e.file, path))
            elif e.is_dir:
                yield Item(path, "dir")
            else:
                yield Item(path, "file", bool(e.mode & 0o111), lambda e=e: _blocks(repo, e.file, include))

    if owners is not None and paths:
        keep: set[str] = set()  # the exported paths and the directories above them
        for q in filter(wanted, tree.entries):
            while q and q not in keep:
                keep.add(q)
                q = q.rpartition("/")[0]
        owners = {p: v for p, v in owners.items() if p in keep}
    return export_files(dest, items(), owners)


def _blocks(repo: Repository, file_id: ObjectId, include: list[str] | None) -> Iterator[bytes]:
    if include and repo.read_file(file_id).format == "safetensors":
        return iter_subset(repo, file_id, include)
    return repo.open_file(file_id).iter_bytes()


def safetensors_header(repo: Repository, file_id: ObjectId) -> tuple[int, dict]:
    return st_format.stored_header(repo.open_file(file_id).read)


def iter_subset(repo: Repository, file_id: ObjectId, include: list[str]) -> Iterator[bytes]:
    """The bytes of a safetensors file holding only the stored file's tensors that match
    ``include`` (globs), in blocks of at most 8 MiB."""
    view = repo.open_file(file_id)
    head, pieces = st_format.stored_subset(view.read, include)
    yield head
    for pos, length in pieces:
        end = pos + length
        while pos < end:
            step = min(end - pos, 8 << 20)
            yield view.read(pos, step)
            pos += step
