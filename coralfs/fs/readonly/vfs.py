"""What a mount shows: inodes, directory entries and file contents, over the store.

Two shapes of mount:

- one snapshot (``MNT@REF``): the tree of a commit at the root;
- the whole repository (``MNT``): ``branches/NAME/``, ``tags/NAME/``, ``commits/ID/`` (any
  id or unique prefix resolves on lookup) and a ``HEAD`` symlink.

Every snapshot root has a hidden ``.coral/`` with ``commit.json``, ``stats.json`` (the
daemon's counters) and ``tensors/FILE/NAME.npy``: one valid .npy per tensor, served from
the same chunks as the file. ``include`` narrows a mount to tensors matching globs:
safetensors files are then served with a rewritten header holding just those tensors.

A tree's symbolic link (a MODE_SYMLINK entry) is a symlink whose target is the stored
text, handed to the kernel as it is (the daemon never resolves it; the kernel follows it
like any link in a read-only view); an empty directory (MODE_DIR) is an empty directory.
A directory's st_nlink is 2 plus its subdirectories (1 for ``commits/``, whose listing is
the whole history: 1 is the "not counted" value find(1) knows).

Inode numbers are derived from what a node is (commit and path), so they are stable
across lookups, forgets and remounts. The kernel's lookup counts are kept, and a node is
dropped from the table only when ``forget`` brings its count to zero. Nothing here
imports pyfuse3: operations.py translates.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
import posixpath
import stat
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...formats import safetensors as st_format
from ...ingest import read_link
from ...objects import dtypes
from ...objects.history import BadRevision, walk
from ...objects.ids import ObjectId, is_hex_prefix, to_hex
from ...objects.kinds import MODE_EXEC, File, PackedTensor, Tensor, TensorSegment
from ...objects.reader import FileView
from ...objects.repository import Repository
from ..content import Content, Literal, Pieces, Stored
from ..materialize import segment_chunks
from ..model import InodeT, NotFound

log = logging.getLogger(__name__)

ROOT_INO = InodeT(1)
STATS_SIZE = 4096
LONG = 3600.0   # snapshots never change
SHORT = 1.0     # branch and tag listings do

NPY_DESCR = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "F8_E4M3": "|u1", "F8_E5M2": "|u1",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "|i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
    "U8": "|u1", "BOOL": "|b1", "C64": "<c8", "C128": "<c16",
}


# What a node is: its key. Inode numbers are derived from it (stable across remounts).
@dataclass(frozen=True)
class RepoRoot:
    """The root of a whole-repository mount."""


@dataclass(frozen=True)
class TopDir:
    name: str  # "branches", "tags" or "commits"


@dataclass(frozen=True)
class RefDir:
    """A directory of ref names below ``branches/`` or ``tags/`` (names holding '/')."""
    kind: str  # "branches" or "tags"
    prefix: str


@dataclass(frozen=True)
class HeadLink:
    """The ``HEAD`` symlink of a whole-repository mount."""


@dataclass(frozen=True)
class SnapPath:
    """A file or directory of a commit's tree ("" is the snapshot's root)."""
    cid: ObjectId
    path: str


@dataclass(frozen=True)
class CoralPath:
    """``.coral/`` of a snapshot (cid None: of the whole-repository root), one of its
    files or ``tensors/``; ``tensor`` is a path relative to ``tensors/`` ("" for
    ``tensors/`` itself), None outside it."""
    cid: ObjectId | None
    name: str = ""              # "", "commit.json", "stats.json" or "tensors"
    tensor: str | None = None


Key = RepoRoot | TopDir | RefDir | HeadLink | SnapPath | CoralPath


@dataclass
class Node:
    kind: str  # "dir", "file" or "link"
    key: Key
    perm: int = 0o555
    mtime_ns: int = 0
    volatile: bool = False  # its listing can change (refs); short kernel timeouts
    dynamic: bool = False   # its bytes change between reads (stats.json): never cached
    ino: InodeT = ROOT_INO
    size: int = 0
    nlink: int = 0  # 0: 2 for a directory, 1 otherwise (see st_nlink)

    @property
    def st_nlink(self) -> int:
        return self.nlink or (2 if self.kind == "dir" else 1)

    @property
    def mode(self) -> int:
        t = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK}[self.kind]
        return t | self.perm

    @property
    def attr_timeout(self) -> float:
        """How long the kernel may keep this node's attributes."""
        if self.dynamic:
            return 0.0
        return SHORT if self.volatile else LONG  # HEAD is volatile; a snapshot's links never change


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The header of an .npy file holding a C-ordered array of this dtype and shape."""
    # Types numpy has no name for (fp8 variants, opaque B<n>) are served as their raw
    # bytes: one uint8 per byte-wide element, else a void element of the type's width.
    width = dtypes.lookup(dtype).width
    descr = NPY_DESCR.get(dtype) or ("|u1" if width == 1 else f"|V{width}")
    buf = io.BytesIO()
    d = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # header over 64 KiB: version 2
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def _safe_parts(name: str) -> list[str]:
    """Path components for a tensor name ('/' nests; '.', '..' and empties escaped)."""
    parts = [p for p in name.split("/") if p]
    return [p if p not in (".", "..") else p.replace(".", "%2E") for p in parts] or ["%00"]


class Snapshot:
    """The directory structure and contents of one commit (built once, cached)."""

    def __init__(self, repo: Repository, cid: ObjectId, include: list[str] | None) -> None:
        self.repo = repo
        self.cid = cid
        self.include = include
        c = repo.read_commit(cid)
        self.commit = c
        self.mtime_ns = c.time * 1_000_000_000
        tree = repo.read_tree(c.tree)
        self.files = tree.entries  # every entry; links and empty directories are in dirs too
        self.dirs: dict[str, dict[str, str]] = {"": {}}
        for path, e in self.files.items():
            if e.is_dir:
                self._add_dir(path)
                continue
            parent, name = posixpath.split(path)
            self._add_dir(parent)
            self.dirs[parent][name] = "l" if e.is_symlink else "f"
        self._contents: dict[str, Content] = {}
        self._links: dict[str, bytes] = {}
        self._views: dict[str, tuple[FileView, dict[str, int]]] = {}
        self._tensor_dirs: dict[str, dict[str, tuple]] | None = None

    def _add_dir(self, d: str) -> None:
        if d in self.dirs:
            return
        parent, name = posixpath.split(d)
        self._add_dir(parent)
        self.dirs[d] = {}
        self.dirs[parent][name] = "d"

    def subdirs(self, d: str) -> int:
        return sum(1 for kind in self.dirs[d].values() if kind == "d")

    def link_target(self, path: str) -> bytes:
        """The stored target text of a link (read_link refuses a damaged one: EIO)."""
        t = self._links.get(path)
        if t is None:
            t = self._links[path] = read_link(self.repo, self.files[path].file, path)
        return t

    def wanted(self, tensor_name: str) -> bool:
        return self.include is None or any(fnmatch.fnmatchcase(tensor_name, p) for p in self.include)

    def file(self, path: str) -> File:
        return self.repo.read_file(self.files[path].file)

    def content(self, path: str) -> Content:
        c = self._contents.get(path)
        if c is None:
            f = self.file(path)
            view = self._view(path)[0]
            if self.include is not None and f.format == "safetensors":
                c = self._subset(view)
            else:
                c = Stored(view)
            self._contents[path] = c
        return c

    def _subset(self, view: FileView) -> Content:
        head, pieces = st_format.stored_subset(view.read, self.include or [])
        return Pieces([head] + [(view, off, length) for off, length in pieces])

    def commit_json(self) -> bytes:
        return (json.dumps(self.repo.describe_commit(self.cid), indent=2, sort_keys=True) + "\n").encode()

    def tensor_dirs(self) -> dict[str, dict[str, tuple]]:
        """``.coral/tensors`` as dir path -> name -> ("d",) or ("f", file path, segment)."""
        if self._tensor_dirs is None:
            dirs: dict[str, dict[str, tuple]] = {"": {}}

            def add(d: str) -> None:
                if d in dirs:
                    return
                parent, name = posixpath.split(d)
                add(parent)
                dirs[d] = {}
                dirs[parent][name] = ("d",)

            for path, e in self.files.items():
                if e.is_symlink or e.is_dir:
                    continue
                f = self.file(path)
                tens = [s for s in f.tensors().values() if self.wanted(s.name)]
                if not tens:
                    continue
                for s in tens:
                    parts = _safe_parts(s.name)
                    d = posixpath.join(path, *parts[:-1])
                    add(d)
                    dirs[d][parts[-1] + ".npy"] = ("f", path, s)
            self._tensor_dirs = dirs
        return self._tensor_dirs

    def _view(self, path: str) -> tuple[FileView, dict[str, int]]:
        """One FileView per file, with the start offset of each named tensor."""
        got = self._views.get(path)
        if got is None:
            view = FileView(self.repo.odb, self.file(path))
            starts = {name: off for name, (off, _s) in view.file.tensor_offsets().items()}
            got = self._views[path] = (view, starts)
        return got

    def chunk_plan(self, patterns: list[str]) -> list[tuple[ObjectId, int]]:
        """(chunk id, length) of every chunk ``--prefetch`` materializes, in file order,
        each once: all of them for ``["all"]``, else those of the files whose path, or the
        tensors whose name, matches a pattern (with the literal bytes of their files, which
        a reader of the tensor reads too: the header)."""
        every = "all" in patterns
        out: dict[ObjectId, int] = {}
        for path, e in self.files.items():
            if e.is_symlink or e.is_dir:
                continue
            whole = every or any(fnmatch.fnmatchcase(path, p) for p in patterns)
            picked: list[tuple[ObjectId, int]] = []
            literal: list[tuple[ObjectId, int]] = []
            for seg in self.file(path).segments:
                if isinstance(seg, TensorSegment):
                    if whole or any(fnmatch.fnmatchcase(seg.name, p) for p in patterns):
                        picked.extend(segment_chunks(self.repo.odb, seg))
                elif getattr(seg, "tensors", None) and not whole:  # small tensors packed together
                    if any(fnmatch.fnmatchcase(pt.name, p) for pt in seg.tensors for p in patterns):
                        picked.extend(seg.chunks)
                else:
                    literal.extend(seg.chunks)
            if whole or picked:
                for oid, n in literal + picked:
                    out.setdefault(oid, n)
        return list(out.items())

    def npy_content(self, path: str, seg: TensorSegment | PackedTensor) -> Content:
        key = f".coral/{path}/{seg.name}"
        c = self._contents.get(key)
        if c is None:
            if isinstance(seg, TensorSegment):
                t = self.repo.odb.get_object(seg.tensor, Tensor)
                dtype, shape = t.dtype, t.shape
            else:
                dtype, shape = seg.dtype, seg.shape
            view, starts = self._view(path)
            c = Pieces([npy_header(dtype, shape), (view, starts[seg.name], seg.length)])
            self._contents[key] = c
        return c


@dataclass
class _Entry:
    node: Node
    lookups: int = 0


TENSORS = "tensors"


@dataclass
class VFS:
    repo: Repository
    ref: str | None = None
    include: list[str] | None = None
    stats: Callable[[], dict] = dict
    _table: dict[InodeT, _Entry] = field(default_factory=dict)
    _snaps: OrderedDict = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.ref is not None:
            self.root_commit = self.repo.resolve(self.ref)
            root = self._snap_node(self.root_commit, "")
        else:
            self.root_commit = None
            root = Node("dir", RepoRoot(), volatile=True, nlink=6)  # branches, tags, commits, .coral
        root.ino = ROOT_INO
        self._table[ROOT_INO] = _Entry(root, 1)

    # -- the inode table -----------------------------------------------------------------
    def _ino_for(self, key: Key) -> InodeT:
        if key == self._table[ROOT_INO].node.key:
            return ROOT_INO
        h = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little") & ((1 << 63) - 1)
        while h <= ROOT_INO or (h in self._table and self._table[h].node.key != key):
            h = (h + 1) & ((1 << 63) - 1)  # a collision: probe (deterministic per table)
        return InodeT(h)

    def _numbered(self, nodes: dict[str, Node]) -> dict[str, Node]:
        """Give listed nodes their inode numbers (the table keeps only what the kernel holds)."""
        for n in nodes.values():
            n.ino = self._ino_for(n.key)
        return nodes

    def remember(self, node: Node) -> None:
        """The kernel now knows this node once more (a lookup or a readdirplus entry)."""
        node.ino = self._ino_for(node.key)
        if node.ino == ROOT_INO:
            self._table[ROOT_INO].lookups += 1
            return
        e = self._table.get(node.ino)
        if e is None:
            e = self._table[node.ino] = _Entry(node)
        else:
            e.node = node
        e.lookups += 1

    def forget(self, ino: InodeT, n: int) -> None:
        e = self._table.get(ino)
        if e is None or ino == ROOT_INO:
            return
        e.lookups -= n
        if e.lookups <= 0:
            del self._table[ino]

    def known(self) -> int:
        return len(self._table)

    def node(self, ino: InodeT) -> Node:
        e = self._table.get(ino)
        if e is None:
            raise NotFound(f"inode {ino}")
        return e.node

    # -- snapshots -----------------------------------------------------------------------
    def snapshot(self, cid: ObjectId) -> Snapshot:
        s = self._snaps.get(cid)
        if s is None:
            s = Snapshot(self.repo, cid, self.include)
            self._snaps[cid] = s
            if len(self._snaps) > 64:
                self._snaps.popitem(last=False)
        else:
            self._snaps.move_to_end(cid)
        return s

    def _snap_node(self, cid: ObjectId, path: str) -> Node:
        s = self.snapshot(cid)
        if path in s.dirs:
            # The snapshot root also holds .coral/.
            return Node("dir", SnapPath(cid, path), 0o555, s.mtime_ns, nlink=2 + s.subdirs(path) + (path == ""))
        if path not in s.files:
            raise NotFound(path)
        e = s.files[path]
        if e.is_symlink:
            # The File's size is the target's length; the text itself is read (and checked:
            # a crafted one is EIO for readlink alone, its siblings still list) on readlink.
            return Node("link", SnapPath(cid, path), 0o777, s.mtime_ns, size=s.file(path).size)
        perm = 0o555 if e.mode == MODE_EXEC else 0o444
        return Node("file", SnapPath(cid, path), perm, s.mtime_ns, size=s.content(path).size)

    def _coral_node(self, key: CoralPath) -> Node:
        cid = key.cid
        mtime = self.snapshot(cid).mtime_ns if cid is not None else 0
        if key.name == "":
            return Node("dir", key, 0o555, mtime, nlink=2 if cid is None else 3)  # tensors/
        if key.name == "stats.json":
            return Node("file", key, 0o444, mtime, volatile=True, dynamic=True, size=STATS_SIZE)
        if cid is None:  # the whole-repository root's .coral holds only stats.json
            raise NotFound(key.name)
        if key.name == "commit.json":
            return Node("file", key, 0o444, mtime, size=len(self.snapshot(cid).commit_json()))
        if key.name != TENSORS or key.tensor is None:
            raise NotFound(key.name)
        dirs = self.snapshot(cid).tensor_dirs()
        if key.tensor in dirs:
            sub = sum(1 for item in dirs[key.tensor].values() if item[0] == "d")
            return Node("dir", key, 0o555, mtime, nlink=2 + sub)
        d, name = posixpath.split(key.tensor)
        item = dirs.get(d, {}).get(name)
        if item and item[0] == "f":
            c = self.snapshot(cid).npy_content(item[1], item[2])
            return Node("file", key, 0o444, mtime, size=c.size)
        raise NotFound(posixpath.join(TENSORS, key.tensor))

    # -- resolving names -----------------------------------------------------------------
    def _ref_names(self, kind: str) -> dict[str, ObjectId]:
        if kind == "branches":
            return self.repo.branches()
        return {k: self.repo.peel(v) for k, v in self.repo.tags().items()}

    def children(self, ino: InodeT) -> dict[str, Node]:
        """Every entry of a directory (for readdir), numbered."""
        n = self.node(ino)
        if n.kind != "dir":
            raise NotADirectoryError(ino)
        return self._numbered(self._children(n.key))

    def _children(self, key: Key) -> dict[str, Node]:
        if isinstance(key, RepoRoot):
            out = {name: self._top_node(name) for name in ("branches", "tags", "commits")}
            out["HEAD"] = Node("link", HeadLink(), 0o777, volatile=True)
            out[".coral"] = self._coral_node(CoralPath(None))
            return out
        if isinstance(key, TopDir) and key.name == "commits":
            heads = list(self.repo.branches().values()) + [self.repo.peel(t) for t in self.repo.tags().values()]
            return {to_hex(c): self._snap_node(c, "") for c in (walk(self.repo, heads) if heads else [])}
        if isinstance(key, TopDir):
            return self._ref_children(key.name, "")
        if isinstance(key, RefDir):
            return self._ref_children(key.kind, key.prefix + "/")
        if isinstance(key, SnapPath):
            s = self.snapshot(key.cid)
            out = {name: self._snap_node(key.cid, posixpath.join(key.path, name)) for name in s.dirs[key.path]}
            if key.path == "":
                out[".coral"] = self._coral_node(CoralPath(key.cid))
            return out
        if isinstance(key, CoralPath) and key.name == "":
            names = ["stats.json"] + (["commit.json", TENSORS] if key.cid is not None else [])
            return {nm: self._coral_node(CoralPath(key.cid, nm, "" if nm == TENSORS else None)) for nm in names}
        if isinstance(key, CoralPath) and key.cid is not None and key.tensor is not None:
            items = self.snapshot(key.cid).tensor_dirs().get(key.tensor, {})
            return {nm: self._coral_node(CoralPath(key.cid, TENSORS, posixpath.join(key.tensor, nm)))
                    for nm in items}
        raise NotFound(str(key))

    def _ref_children(self, kind: str, prefix: str) -> dict[str, Node]:
        out = {}
        for name, cid in self._ref_names(kind).items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            first = rest.split("/", 1)[0]
            if "/" in rest:
                out[first] = self._ref_dir_node(kind, prefix + first)
            else:
                out[first] = self._snap_node(cid, "")
        return out

    def _top_node(self, name: str) -> Node:
        # commits/ lists every reachable commit: not counted for a stat (1, see above).
        n = 1 if name == "commits" else 2 + self._ref_subdirs(name, "")
        return Node("dir", TopDir(name), volatile=True, nlink=n)

    def _ref_dir_node(self, kind: str, prefix: str) -> Node:
        return Node("dir", RefDir(kind, prefix), volatile=True, nlink=2 + self._ref_subdirs(kind, prefix + "/"))

    def _ref_subdirs(self, kind: str, prefix: str) -> int:
        """Entries below ``prefix`` of branches/ or tags/: each a directory (a snapshot
        root, or a directory of names holding '/')."""
        return len({n[len(prefix):].split("/", 1)[0] for n in self._ref_names(kind) if n.startswith(prefix)})

    def lookup(self, parent: InodeT, name: str) -> Node:
        """Resolve one name and count the kernel's new reference to it."""
        pnode = self.node(parent)
        if pnode.key == TopDir("commits"):
            node = self._lookup_commit(name)
        else:
            node = self.children(parent).get(name)
            if node is None:
                raise NotFound(name)
        self.remember(node)
        return node

    def _lookup_commit(self, name: str) -> Node:
        if not is_hex_prefix(name.lower()) or len(name) < 4:
            raise NotFound(name)
        try:
            cid = self.repo.resolve(name)
        except BadRevision:
            raise NotFound(name) from None
        return self._snap_node(cid, "")

    def readlink(self, ino: InodeT) -> bytes:
        return self.link_target(self.node(ino))

    def link_target(self, n: Node) -> bytes:
        if n.kind == "link" and isinstance(n.key, SnapPath):
            return self.snapshot(n.key.cid).link_target(n.key.path)
        if not isinstance(n.key, HeadLink):
            raise NotFound("not a link")
        b = self.repo.head_branch()
        if b is not None:
            return f"branches/{b}".encode()
        head = self.repo.head()
        return f"commits/{to_hex(head)}".encode() if head else b"branches/main"

    def open(self, ino: InodeT) -> Content:
        n = self.node(ino)
        if n.kind != "file":
            raise IsADirectoryError(ino)
        key = n.key
        if isinstance(key, SnapPath):
            return self.snapshot(key.cid).content(key.path)
        assert isinstance(key, CoralPath)
        if key.name == "stats.json":
            body = json.dumps(self.stats(), indent=1, sort_keys=True).encode()
            return Literal(body.ljust(STATS_SIZE - 1)[: STATS_SIZE - 1] + b"\n")
        snap = self.snapshot(key.cid)
        if key.name == "commit.json":
            return Literal(snap.commit_json())
        d, name = posixpath.split(key.tensor)
        item = snap.tensor_dirs()[d][name]
        return snap.npy_content(item[1], item[2])

    def entry_timeout(self, parent: InodeT) -> float:
        try:
            return SHORT if self.node(parent).volatile else LONG
        except NotFound:
            return SHORT


__all__ = ["VFS", "CoralPath", "HeadLink", "Key", "Node", "NotFound", "RefDir", "RepoRoot", "SnapPath", "TopDir",
           "Snapshot", "npy_header"]
