"""The Python API: ``coralfs.Repository`` offers what the CLI does.

It extends the store's repository with the format layer: committing checkpoint
directories and files (each split into literal bytes and typed tensors), exporting
byte-identical files, diffs per tensor and storage statistics.
"""

from __future__ import annotations

import os
import stat as _stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .formats import layout_of
from .formats import safetensors as st_format
from .interrupts import landing
from .objects import dtypes
from .objects.codecs import HEADER_SIZE
from .objects.errors import CoralError
from .objects.ids import ObjectId, to_hex
from .objects.kinds import MODE_EXEC, MODE_FILE, File, PackedTensor, Tensor, TensorSegment, Tree, TreeEntry, validate_path
from .objects.reader import FileView
from .objects.repository import Repository as _StoreRepository
from .objects.repository import in_write_session
from .objects.writer import IngestStats

Progress = Callable[[str, int], None]


@dataclass
class CommitResult:
    commit: ObjectId
    stats: IngestStats
    files: dict[str, ObjectId]
    unchanged: bool = False


@dataclass
class TensorChange:
    name: str
    status: str  # added, removed, changed, unchanged
    dtype: str = ""
    shape: tuple = ()
    max_abs: float | None = None
    rel_l2: float | None = None
    stored: int = 0


@dataclass
class FileChange:
    path: str
    status: str  # added, removed, modified
    old: ObjectId | None = None
    new: ObjectId | None = None
    size_old: int = 0
    size_new: int = 0
    tensors: list[TensorChange] = field(default_factory=list)


def _tensor_key(ref: TensorSegment | PackedTensor) -> tuple:
    """What makes two versions of a tensor equal: its id, or a packed tensor's dtype,
    shape and content digest (a tensor that moves in or out of a pack compares unequal,
    which only costs a 'changed' line)."""
    if isinstance(ref, TensorSegment):
        return ("t", ref.tensor)
    return ("p", ref.dtype, ref.shape, ref.digest)


def _dtype_shape(ref: TensorSegment | PackedTensor, t: Tensor | None) -> tuple[str, tuple[int, ...]]:
    if isinstance(ref, PackedTensor):
        return ref.dtype, ref.shape
    assert t is not None
    return t.dtype, t.shape


def _delta_of(dt: dtypes.DType, pairs) -> tuple[float | None, float | None]:
    """Max |b - a| and relative L2 change over (a bytes, b bytes) blocks of one dtype."""
    max_abs, num, den = 0.0, 0.0, 0.0
    for xa, yb in pairs:
        x = np.frombuffer(xa, dt.numpy).astype(np.float64)
        y = np.frombuffer(yb, dt.numpy).astype(np.float64)
        d = y - x
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(d)
            if finite.any():
                max_abs = max(max_abs, float(np.abs(d[finite]).max()))
            num += float(np.square(d[finite]).sum())
            den += float(np.square(x[np.isfinite(x)]).sum())
    return max_abs, (num ** 0.5 / den ** 0.5) if den > 0 else None


def _packed_delta_stats(views, name: str, dtype: str) -> tuple[float | None, float | None]:
    dt = dtypes.lookup(dtype)
    if dt.numpy is None or dt.name == "BOOL":
        return None, None
    (va, offs_a), (vb, offs_b) = views
    (oa, ra), (ob, rb) = offs_a[name], offs_b[name]
    return _delta_of(dt, [(va.read(oa, ra.length), vb.read(ob, rb.length))])


def collect_sources(sources: list[str], *, follow_top_links: bool = True) -> dict[str, str]:
    """Map tree path -> file on disk. A directory contributes its contents at the tree
    root; a file contributes itself by its name.

    A symbolic link inside a source is never followed (it could point anywhere, say
    ``/etc/shadow``): it is refused, naming the link, before anything is read. A source
    given as a link itself is followed, as git and rsync follow the path a user typed,
    unless ``follow_top_links`` is false (watch: the entries were not typed by the user).
    """
    out: dict[str, str] = {}
    for src in sources:
        if not follow_top_links and os.path.islink(src):
            raise _link_error(src)
        if not os.path.exists(src):
            raise CoralError(f"{src}: no such file or directory")
        if os.path.isdir(src):
            def unreadable(e: OSError) -> None:
                raise CoralError(f"{e.filename}: cannot be read ({e.strerror}); nothing was committed")

            for dirpath, dirnames, files in os.walk(src, onerror=unreadable, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if d != ".coral")
                for name in dirnames + files:
                    full = os.path.join(dirpath, name)
                    if os.path.islink(full):
                        raise _link_error(full)
                for f in sorted(files):
                    full = os.path.join(dirpath, f)
                    if not _stat.S_ISREG(os.lstat(full).st_mode):
                        continue  # sockets, fifos, devices
                    rel = os.path.relpath(full, src).replace(os.sep, "/")
                    _add(out, rel, full)
        elif os.path.isfile(src):
            _add(out, os.path.basename(src), src)
        else:
            raise CoralError(f"{src}: not a regular file or directory")
    if not out:
        raise CoralError("nothing to commit: the sources hold no files")
    return out


def _link_error(link: str) -> CoralError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return CoralError(f"{link}: is a symbolic link (to {target!r}), and coralfs does not follow links "
                      f"inside a source; replace it by the file it points to (cp -L) or remove it; "
                      f"nothing was committed")


def _add(out: dict[str, str], rel: str, full: str) -> None:
    try:
        validate_path(rel)
    except CoralError as e:
        raise CoralError(f"{full}: {e}") from None
    if rel in out:
        raise CoralError(f"two sources give the path {rel!r} ({out[rel]} and {full})")
    out[rel] = full


class Repository(_StoreRepository):
    # -- committing ----------------------------------------------------------------------
    @in_write_session
    def commit_paths(self, sources: list[str], message: str, *, branch: str | None = None,
                     author: str | None = None, metadata: dict | None = None,
                     progress: Progress | None = None, allow_empty: bool = True,
                     follow_top_links: bool = True) -> CommitResult:
        """Commit checkpoint directories or files as the new snapshot of ``branch``.

        Every file is validated and split by its format first: a malformed file raises
        FormatError before any ref moves, so nothing is committed. Symbolic links inside
        the sources are refused (see :func:`collect_sources`).
        """
        files = collect_sources(sources, follow_top_links=follow_top_links)
        layouts = {rel: layout_of(path) for rel, path in files.items()}
        target = branch or self.head_branch()
        head = self.refs.read(f"refs/heads/{target}") if target else self.head()
        parent_tree = self.tree_of(head) if head else Tree({})
        stats = IngestStats()
        entries: dict[str, TreeEntry] = {}
        for rel, path in files.items():
            prev = parent_tree.entries.get(rel)
            base = self.read_file(prev.file) if prev else None
            fid, st = self.write_file(path, layouts[rel].regions, layouts[rel].format, base)
            stats.add(st)
            mode = MODE_EXEC if os.stat(path).st_mode & _stat.S_IXUSR else MODE_FILE
            entries[rel] = TreeEntry(fid, mode)
            if progress:
                progress(rel, st.logical)
        tree = Tree(entries)
        unchanged = head is not None and self.put(tree) == parent_tree.id
        if unchanged and not allow_empty:
            return CommitResult(head, stats, {k: e.file for k, e in entries.items()}, True)
        with landing():  # from here a signal no longer stops the commit (coralfs/interrupts.py)
            cid = self.commit(tree, message, branch=branch, author=author, metadata=metadata,
                              expected_head=head)
        return CommitResult(cid, stats, {k: e.file for k, e in entries.items()}, unchanged)

    # -- export --------------------------------------------------------------------------
    def export(self, rev: str, dest: str, include: list[str] | None = None,
               paths: list[str] | None = None) -> list[str]:
        """Write the files of ``rev`` under ``dest``, byte-identical to what was committed.

        With ``include`` (globs on tensor names), safetensors files are rewritten to hold
        only the matching tensors (a valid, smaller file); other files are unchanged.
        Each file is written durably (temp, fsync, rename, fsync dir), only the executable
        bit of a mode is applied, nothing is written through a symlink inside ``dest``,
        and a failed export leaves nothing new behind (see :mod:`coralfs.export`).
        """
        from .export import export_files
        tree = self.tree_of(rev)

        def files():
            for path, e in tree.entries.items():
                if paths and not any(path == p or path.startswith(p.rstrip("/") + "/") for p in paths):
                    continue
                yield path, bool(e.mode & 0o111), lambda e=e: self._export_blocks(e.file, include)

        return export_files(dest, files())

    def _export_blocks(self, file_id: ObjectId, include: list[str] | None) -> Iterator[bytes]:
        if include and self.read_file(file_id).format == "safetensors":
            return self.iter_subset(file_id, include)
        return self.open_file(file_id).iter_bytes()

    def safetensors_header(self, file_id: ObjectId) -> tuple[int, dict]:
        view = self.open_file(file_id)
        import io
        n = int.from_bytes(view.read(0, 8), "little")
        return st_format.read_header("<stored>", io.BytesIO(view.read(0, 8 + n)))

    def iter_subset(self, file_id: ObjectId, include: list[str]) -> Iterator[bytes]:
        n, header = self.safetensors_header(file_id)
        head, pieces = st_format.subset(header, include)
        yield head
        view = self.open_file(file_id)
        for off, length in pieces:
            pos = 8 + n + off
            end = pos + length
            while pos < end:
                step = min(end - pos, 8 << 20)
                yield view.read(pos, step)
                pos += step

    # -- inspecting ----------------------------------------------------------------------
    def tensor_stored_bytes(self, tensor: Tensor) -> tuple[int, Counter]:
        total, codecs = 0, Counter()
        for c in tensor.chunks:
            total += self.store.size(c)
            codecs[self.odb.chunk_header(c).codec_name] += 1
        return total, codecs

    def file_stored_bytes(self, f: File) -> int:
        total = 0
        for s in f.segments:
            if isinstance(s, TensorSegment):
                total += self.tensor_stored_bytes(self.odb.get_object(s.tensor, Tensor))[0]
            else:
                total += sum(self.store.size(c) for c, _ in s.chunks)
        return total

    def diff(self, a: str | None, b: str, *, tensors: bool = True) -> list[FileChange]:
        """Per file and per tensor changes from ``a`` to ``b`` (``a`` None: empty)."""
        ta = self.tree_of(a) if a else Tree({})
        tb = self.tree_of(b)
        out = []
        for path in sorted(set(ta.entries) | set(tb.entries)):
            ea, eb = ta.entries.get(path), tb.entries.get(path)
            if ea == eb:
                continue
            fa = self.read_file(ea.file) if ea else None
            fb = self.read_file(eb.file) if eb else None
            status = "added" if ea is None else "removed" if eb is None else "modified"
            ch = FileChange(path, status, ea.file if ea else None, eb.file if eb else None,
                            fa.size if fa else 0, fb.size if fb else 0)
            if tensors:
                ch.tensors = self._tensor_changes(fa, fb)
            out.append(ch)
        return out

    def _tensor_changes(self, fa: File | None, fb: File | None) -> list[TensorChange]:
        ta = fa.tensors() if fa else {}
        tb = fb.tensors() if fb else {}
        out = []
        views = None
        for name in list(ta) + [n for n in tb if n not in ta]:
            sa, sb = ta.get(name), tb.get(name)
            if sa and sb and _tensor_key(sa) == _tensor_key(sb):
                continue
            t_b = self.odb.get_object(sb.tensor, Tensor) if isinstance(sb, TensorSegment) else None
            t_a = self.odb.get_object(sa.tensor, Tensor) if isinstance(sa, TensorSegment) else None
            dt, shape = _dtype_shape(sb or sa, t_b or t_a)
            ch = TensorChange(name, "added" if not sa else "removed" if not sb else "changed", dt, shape)
            if t_b is not None:
                ch.stored = self.tensor_stored_bytes(t_b)[0]
            if t_a is not None and t_b is not None:
                ch.max_abs, ch.rel_l2 = self._delta_stats(t_a, t_b)
            elif sa and sb and _dtype_shape(sa, t_a) == (dt, shape):
                # A packed tensor on either side: compare its bytes read through the files.
                if views is None:
                    views = [(FileView(self.odb, f), f.tensor_offsets()) for f in (fa, fb)]
                ch.max_abs, ch.rel_l2 = _packed_delta_stats(views, name, dt)
            out.append(ch)
        return out

    def _delta_stats(self, a: Tensor, b: Tensor) -> tuple[float | None, float | None]:
        dt = dtypes.lookup(a.dtype)
        if a.dtype != b.dtype or a.shape != b.shape or dt.numpy is None or dt.name == "BOOL" \
                or a.chunk_size != b.chunk_size:
            return None, None
        return _delta_of(dt, ((self.odb.read_chunk(ca), self.odb.read_chunk(cb))
                              for ca, cb in zip(a.chunks, b.chunks)))

    def stats(self) -> dict:
        """Logical bytes (every file of every reachable commit), stored bytes, objects by
        codec."""
        from .objects.history import walk
        starts = list(self.branches().values()) + [self.peel(t) for t in self.tags().values()]
        logical = 0
        for c in walk(self, starts) if starts else []:
            for e in self.read_tree(self.read_commit(c).tree).entries.values():
                logical += self.read_file(e.file).size
        stored, count = 0, 0
        by_codec: Counter = Counter()
        by_codec_bytes: Counter = Counter()
        for oid in self.store:
            n = self.store.size(oid)
            stored += n
            count += 1
            h = self.odb.chunk_header(oid) if n >= HEADER_SIZE else None
            name = "object" if h and h.structured else h.codec_name if h else "?"
            by_codec[name] += 1
            by_codec_bytes[name] += n
        return {"logical_bytes": logical, "stored_bytes": stored, "objects": count,
                "ratio": (stored / logical) if logical else None,
                "objects_by_codec": dict(by_codec), "bytes_by_codec": dict(by_codec_bytes),
                "commits": sum(1 for _ in walk(self, starts)) if starts else 0}


def describe_commit(repo: Repository, oid: ObjectId) -> dict:
    c = repo.read_commit(oid)
    return {"id": to_hex(oid), "tree": to_hex(c.tree), "parents": [to_hex(p) for p in c.parents],
            "author": c.author, "time": c.time, "message": c.message, "metadata": c.metadata}


__all__ = ["Repository", "CommitResult", "FileChange", "TensorChange", "describe_commit"]


# -- writable mounts ---------------------------------------------------------------------
def commit_mount(mountpoint: str, message: str, *, metadata: dict | None = None) -> dict:
    """Commit what was saved into the writable mount at ``mountpoint`` (what ``coralfs
    commit --mount`` does), from a training script. Returns the daemon's answer: ``commit``
    (hex id, or None when nothing changed), ``changes``, ``logical`` and ``stored`` bytes.
    The author is the mount's owner (its ``user.name``). Raises CoralError with the
    mount's one-line message when it refuses."""
    return _mount_request(mountpoint, {"op": "commit", "message": message, "metadata": metadata})


def mount_status(mountpoint: str) -> dict:
    """What the writable mount at ``mountpoint`` has staged (``changes``, ``base``, ...)."""
    return _mount_request(mountpoint, {"op": "status"})


def _mount_request(mountpoint: str, req: dict) -> dict:
    from .fs.writable.control import request
    answer = request(mountpoint, req)
    if not answer.get("ok"):
        err = CoralError(answer.get("error") or "the mount refused the request")
        err.exit_code = answer.get("exit_code") or 1
        raise err
    return answer

