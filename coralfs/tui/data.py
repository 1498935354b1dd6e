"""What the browser shows, read through the repository (nothing of textual here, so it is
testable and timed on its own): refs, commits page by page with a lane graph, the files
and tensors of a commit, search hits, the compare numbers (coralfs.analysis.visual_diff
and grouping, computed once) and the value statistics of one tensor (analysis.values).
A writable mount's staged changes and stash/pop go through its control requests."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..analysis import VisualDiff, visual_diff
from ..analysis.grouping import Group, group
from ..analysis.values import ValueStats, value_stats
from ..api import Repository, _mount_request, mount_status
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, short
from ..objects.kinds import Commit, File, Tensor, TensorSegment

PAGE = 100          # commits (and tensors) loaded at a time: a screenful or three
HEATMAP_WIDTH = 60  # blocks across a compare heatmap (the pane is about that wide)
MAX_HITS = 500      # search stops after this many hits


@dataclass(frozen=True)
class RefRow:
    kind: str     # HEAD, branch, tag
    name: str
    commit: ObjectId


@dataclass(frozen=True)
class CommitRow:
    oid: ObjectId
    graph: str
    commit: Commit
    decorations: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        return short(self.oid, 10)

    @property
    def summary(self) -> str:
        return self.commit.message.splitlines()[0] if self.commit.message else ""


@dataclass(frozen=True)
class FileRow:
    path: str
    format: str
    size: int
    tensors: int
    file_id: ObjectId


@dataclass(frozen=True)
class TensorRow:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    stored: int | None    # None: a small tensor inside a shared pack (counted with its file)
    codec: str


@dataclass(frozen=True)
class Hit:
    kind: str             # message, metadata, tensor
    commit: ObjectId
    text: str             # what matched, one line
    path: str | None = None
    tensor: str | None = None


@dataclass
class Comparison:
    a: ObjectId | None    # None: compared with nothing (a root commit)
    b: ObjectId
    diff: VisualDiff
    groups: list[Group] = field(default_factory=list)


class Lanes:
    """The lane graph of ``coralfs log --graph`` kept between pages: one column per line
    of history in flight, fed commit by commit as pages load."""

    def __init__(self) -> None:
        self.lanes: list[ObjectId] = []

    def row(self, oid: ObjectId, parents: list[ObjectId]) -> str:
        if oid not in self.lanes:
            self.lanes.append(oid)
        col = self.lanes.index(oid)
        text = "".join("*" if i == col else "|" for i in range(len(self.lanes)))
        new = self.lanes[:col] + parents[:1] + self.lanes[col + 1:] + parents[1:]
        self.lanes = list(dict.fromkeys(new))
        return text


class CommitPager:
    """The history from one commit, newest first, a page at a time: a list of 10,000
    commits costs only the pages scrolled to."""

    def __init__(self, repo: Repository, start: ObjectId, decorations: dict[ObjectId, list[str]]) -> None:
        self._log = repo.log(start)
        self._lanes = Lanes()
        self._deco = decorations
        self.done = False
        self.loaded: list[CommitRow] = []
        self._mutex = threading.Lock()

    def next_page(self, n: int = PAGE) -> list[CommitRow]:
        with self._mutex:
            if self.done:
                return []
            page = []
            for oid, c in itertools.islice(self._log, n):
                page.append(CommitRow(oid, self._lanes.row(oid, list(c.parents)), c, tuple(self._deco.get(oid, ()))))
            if len(page) < n:
                self.done = True
            self.loaded += page
            return page


class Browser:
    """One repository as the browser reads it (``mount``: a writable mount whose staged
    changes it shows). Safe to call from worker threads: the object database is."""

    def __init__(self, repo: Repository, ref: str | None = None, mount: str | None = None) -> None:
        self.repo = repo
        self.ref = ref or "HEAD"
        self.start = repo.resolve(self.ref)   # an unknown ref fails here, before any screen
        self.mount = mount
        self._files: dict[ObjectId, File] = {}
        self._names: dict[ObjectId, list[str]] = {}
        if mount is not None:
            mount_status(mount)               # not a writable mount: its one-line error

    # -- refs and history -----------------------------------------------------------------
    def refs(self) -> list[RefRow]:
        rows = []
        head = self.repo.head()
        if head is not None:
            rows.append(RefRow("HEAD", self.repo.head_branch() or "(detached)", head))
        rows += [RefRow("branch", n, oid) for n, oid in sorted(self.repo.branches().items())]
        rows += [RefRow("tag", n, self.repo.peel(oid)) for n, oid in sorted(self.repo.tags().items())]
        return rows

    def decorations(self) -> dict[ObjectId, list[str]]:
        out: dict[ObjectId, list[str]] = {}
        for r in self.refs():
            if r.kind != "HEAD":
                out.setdefault(r.commit, []).append(r.name if r.kind == "branch" else f"tag: {r.name}")
        return out

    def pager(self, start: ObjectId | None = None) -> CommitPager:
        return CommitPager(self.repo, self.start if start is None else start, self.decorations())

    # -- files and tensors ----------------------------------------------------------------
    def file(self, file_id: ObjectId) -> File:
        f = self._files.get(file_id)
        if f is None:
            f = self._files[file_id] = self.repo.read_file(file_id)
        return f

    def files(self, commit: ObjectId) -> list[FileRow]:
        tree = self.repo.read_tree(self.repo.read_commit(commit).tree)
        out = []
        for path, e in tree.entries.items():
            if e.is_dir or e.is_symlink:
                continue
            f = self.file(e.file)
            out.append(FileRow(path, f.format, f.size, len(self.tensor_names(e.file)), e.file))
        return out

    def tensor_names(self, file_id: ObjectId) -> list[str]:
        names = self._names.get(file_id)
        if names is None:
            names = self._names[file_id] = list(self.file(file_id).tensors())
        return names

    def tensors(self, file_id: ObjectId, start: int = 0, n: int = PAGE) -> list[TensorRow]:
        """Rows ``start`` .. ``start + n`` of a file's tensors (stored bytes are read from
        the store per chunk: a page at a time keeps a 5,000-tensor file quick)."""
        refs = self.file(file_id).tensors()
        out = []
        for name in self.tensor_names(file_id)[start:start + n]:
            s = refs[name]
            if isinstance(s, TensorSegment):
                t = self.repo.odb.get_object(s.tensor, Tensor)
                stored, codecs = self.repo.tensor_stored_bytes(t)
                codec = ",".join(k + (f"x{v}" if v > 1 else "") for k, v in sorted(codecs.items()))
                out.append(TensorRow(name, t.dtype, t.shape, t.nbytes, stored, codec))
            else:
                out.append(TensorRow(name, s.dtype, tuple(s.shape), s.length, None, "packed"))
        return out

    def stats(self, file_id: ObjectId, name: str, bins: int = 32) -> ValueStats:
        return value_stats(self.repo, self.file(file_id), name, bins)

    # -- compare --------------------------------------------------------------------------
    def compare(self, a: ObjectId | None, b: ObjectId, progress: Callable[[str, str], None] | None = None) -> Comparison:
        """The per-tensor numbers and a |Δ| heatmap of every changed tensor, in one
        streaming pass (the same numbers `coralfs diff --visual` prints), and its layers."""
        vd = visual_diff(self.repo, a.hex() if a else None, b.hex(), tensor_glob="*", width=HEATMAP_WIDTH,
                         progress=progress, max_rows=16)
        return Comparison(a, b, vd, group(vd.tensors, 2))

    # -- search ---------------------------------------------------------------------------
    def search(self, query: str, start: ObjectId | None = None, stop: threading.Event | None = None) -> Iterator[Hit]:
        """Commits from ``start`` whose message or metadata (metrics, ...) contains
        ``query`` (case-insensitive), and tensors whose name does, each tensor at the newest
        commit holding it. A file shared by many commits is looked at once."""
        q = query.lower()
        seen_files: set[ObjectId] = set()
        seen_tensors: set[tuple[str, str]] = set()
        hits = 0
        for oid, c in self.repo.log(self.start if start is None else start):
            if stop is not None and stop.is_set():
                return
            found: list[Hit] = []
            if q in c.message.lower():
                found.append(Hit("message", oid, c.message.splitlines()[0] if c.message else ""))
            if c.metadata:
                for k, v in _flat(c.metadata):
                    if q in f"{k}={v}".lower():
                        found.append(Hit("metadata", oid, f"{k}={v}"))
            for path, e in self.repo.read_tree(c.tree).entries.items():
                if e.is_dir or e.is_symlink or e.file in seen_files:
                    continue
                seen_files.add(e.file)
                for n in self.tensor_names(e.file):
                    if q in n.lower() and (path, n) not in seen_tensors:
                        seen_tensors.add((path, n))
                        found.append(Hit("tensor", oid, f"{path}:{n}", path, n))
            for h in found:
                yield h
                hits += 1
                if hits >= MAX_HITS:
                    return

    # -- a writable mount -----------------------------------------------------------------
    def staged(self) -> list[dict]:
        if self.mount is None:
            return []
        return list(mount_status(self.mount)["changes"])

    def stash(self, message: str = "") -> int:
        return int(self._control({"op": "stash", "message": message})["stash"])

    def pop(self) -> dict:
        return self._control({"op": "stash-pop", "index": None})

    def _control(self, req: dict) -> dict:
        if self.mount is None:
            raise CoralError("no writable mount: start the browser with --mount MNT")
        return _mount_request(self.mount, req)


def _flat(meta: dict, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Metadata as dotted key = value pairs (``metrics.acc=0.9``)."""
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flat(v, key + ".")
        else:
            yield key, v if isinstance(v, str) else json.dumps(v)


__all__ = ["Browser", "CommitPager", "CommitRow", "Comparison", "FileRow", "Hit", "Lanes", "RefRow", "TensorRow"]
