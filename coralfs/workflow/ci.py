"""Continuous-integration checks on checkpoints: ``ci validate`` (constraints from a
schema file, PASS/FAIL per check), ``ci benchmark`` (what a revision costs and changes
against a base, as Markdown for a pull request), the GitHub Actions template of ``ci
init github`` and the pre-commit hook that keeps raw weight files out of git.

A schema is TOML or JSON::

    finite = true                      # no NaN/Inf in any float tensor (default true)
    max_file_size = "2 GB"             # each file's size
    max_stored_ratio = 0.9             # stored bytes / file bytes of the whole revision
    required_metadata = ["metrics.accuracy", "dataset"]   # keys of the commit metadata

    [[files]]
    glob = "*.safetensors"             # fnmatch on tree paths; must match unless required = false
    exact = false                      # true: no tensors besides the listed ones
    finite = true                      # overrides the top-level setting for these files
    max_file_size = "500 MB"
    [files.tensors]
    "embed.weight" = { dtype = "F32", shape = [32000, 768] }
    "layers.*.bias" = { dtype = "F32", shape = [-1] }     # -1: any length on that axis

Values are checked streaming, one stored chunk at a time (never a whole tensor in memory).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, field

import numpy as np

from ..diff import file_stored_bytes
from ..objects import dtypes
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, short, to_hex
from ..objects.kinds import File, PackedTensor, Tensor, TensorSegment
from ..objects.reader import FileView
from ..objects.repository import Repository
from .changelog import layer_changes


class SchemaError(CoralError):
    exit_code = 2

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"schema {where}: {why}")


# -- sizes -------------------------------------------------------------------------------
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(v: object, what: str = "size") -> int:
    """``10485760``, ``"10MB"``, ``"10 MiB"``, ``"500k"`` -> bytes."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    m = _SIZE.match(v) if isinstance(v, str) else None
    if not m or m.group(2).lower() not in _UNITS:
        raise CoralError(f"{what} {v!r}: give bytes or a number with a unit (10MB, 512 KiB, 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# -- the schema --------------------------------------------------------------------------
@dataclass
class TensorSpec:
    pattern: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


@dataclass
class FileRule:
    glob: str
    required: bool = True
    exact: bool = False
    finite: bool | None = None
    max_file_size: int | None = None
    tensors: list[TensorSpec] = field(default_factory=list)


@dataclass
class Schema:
    finite: bool = True
    max_file_size: int | None = None
    max_stored_ratio: float | None = None
    required_metadata: list[str] = field(default_factory=list)
    files: list[FileRule] = field(default_factory=list)


_TOP = {"finite", "max_file_size", "max_stored_ratio", "required_metadata", "files"}
_RULE = {"glob", "required", "exact", "finite", "max_file_size", "tensors"}


def _bool(v: object, where: str) -> bool:
    if not isinstance(v, bool):
        raise SchemaError(where, f"{v!r} is not true or false")
    return v


def _size(v: object, where: str) -> int:
    try:
        return parse_size(v, "size")
    except CoralError as e:
        raise SchemaError(where, str(e)) from None


def _unknown(d: dict, known: set[str], where: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        raise SchemaError(where, f"unknown key {extra[0]!r} (known: {', '.join(sorted(known))})")


def _tensor_spec(pattern: str, v: object, where: str) -> TensorSpec:
    if not isinstance(v, dict):
        raise SchemaError(where, "a tensor entry is a table like { dtype = \"F32\", shape = [768] }")
    _unknown(v, {"dtype", "shape"}, where)
    spec = TensorSpec(pattern)
    if "dtype" in v:
        try:
            spec.dtype = dtypes.lookup(str(v["dtype"]).upper()).name
        except ValueError:
            raise SchemaError(where, f"unknown dtype {v['dtype']!r} (F32, BF16, F16, I64 ...)") from None
    if "shape" in v:
        s = v["shape"]
        if not isinstance(s, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= -1 for n in s):
            raise SchemaError(where, f"shape {s!r} is not a list of lengths (-1 for any)")
        spec.shape = tuple(s)
    return spec


def parse_schema(doc: object, where: str = "") -> Schema:
    if not isinstance(doc, dict):
        raise SchemaError(where or "file", "the top level is not a table")
    _unknown(doc, _TOP, where or "top level")
    sc = Schema()
    if "finite" in doc:
        sc.finite = _bool(doc["finite"], "finite")
    if "max_file_size" in doc:
        sc.max_file_size = _size(doc["max_file_size"], "max_file_size")
    if "max_stored_ratio" in doc:
        r = doc["max_stored_ratio"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not (0 < r) or not math.isfinite(r):
            raise SchemaError("max_stored_ratio", f"{r!r} is not a number above 0")
        sc.max_stored_ratio = float(r)
    if "required_metadata" in doc:
        keys = doc["required_metadata"]
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise SchemaError("required_metadata", "a list of key names (dotted for nested: metrics.accuracy)")
        sc.required_metadata = list(keys)
    rules = doc.get("files", [])
    if not isinstance(rules, list):
        raise SchemaError("files", "an array of tables ([[files]])")
    for i, r in enumerate(rules):
        w = f"files[{i}]"
        if not isinstance(r, dict):
            raise SchemaError(w, "not a table")
        _unknown(r, _RULE, w)
        g = r.get("glob")
        if not isinstance(g, str) or not g:
            raise SchemaError(w, "needs glob = \"PATTERN\" (e.g. \"*.safetensors\")")
        rule = FileRule(g)
        for key in ("required", "exact", "finite"):
            if key in r:
                setattr(rule, key, _bool(r[key], f"{w}.{key}"))
        if "max_file_size" in r:
            rule.max_file_size = _size(r["max_file_size"], f"{w}.max_file_size")
        ts = r.get("tensors", {})
        if not isinstance(ts, dict):
            raise SchemaError(f"{w}.tensors", "a table of tensor name (or glob) = { dtype, shape }")
        rule.tensors = [_tensor_spec(k, v, f"{w}.tensors.{k}") for k, v in ts.items()]
        sc.files.append(rule)
    return sc


def load_schema(path: str | None) -> Schema:
    """The schema in ``path`` (TOML, or JSON by its .json name); None: the defaults (no
    NaN/Inf)."""
    if path is None:
        return Schema()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SchemaError(path, e.strerror or str(e)) from None
    try:
        doc = json.loads(raw) if path.endswith(".json") else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SchemaError(path, f"does not parse ({str(e).splitlines()[0]})") from None
    return parse_schema(doc)


# -- validate ----------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def _files(repo: Repository, rev: str) -> dict[str, File]:
    """Path -> File of every regular file of ``rev``."""
    return {p: repo.read_file(e.file) for p, e in sorted(repo.tree_of(rev).entries.items())
            if not (e.is_symlink or e.is_dir)}


def _value_blocks(repo: Repository, f: File, view: FileView | None = None):
    """(tensor name, dtype, bytes) blocks of every tensor of ``f``: a stored tensor's
    chunks one by one, a packed (small) tensor's bytes at once."""
    offsets = None
    for name, ref in f.tensors().items():
        if isinstance(ref, TensorSegment):
            t = repo.odb.get_object(ref.tensor, Tensor)
            for c in t.chunks:
                yield name, t.dtype, repo.odb.read_chunk(c)
        else:
            assert isinstance(ref, PackedTensor)
            view = view or FileView(repo.odb, f)
            offsets = offsets or f.tensor_offsets()
            yield name, ref.dtype, view.read(offsets[name][0], ref.length)


def non_finite(repo: Repository, f: File) -> tuple[int, dict[str, tuple[int, int]]]:
    """(float tensors checked, name -> (NaN count, Inf count) of the tensors that have any)."""
    bad: dict[str, list[int]] = {}
    seen: set[str] = set()
    for name, dtype, data in _value_blocks(repo, f):
        dt = dtypes.lookup(dtype)
        if not dt.is_float or dt.numpy is None:
            continue
        seen.add(name)
        a = np.frombuffer(data, dt.numpy)
        if a.dtype not in (np.float16, np.float32, np.float64):
            a = a.astype(np.float32)   # bfloat16, float8: exact in float32, NaN and Inf kept
        nan = int(np.count_nonzero(np.isnan(a)))
        inf = int(np.count_nonzero(np.isinf(a)))
        if nan or inf:
            acc = bad.setdefault(name, [0, 0])
            acc[0] += nan
            acc[1] += inf
    return len(seen), {k: (v[0], v[1]) for k, v in bad.items()}


def _shape_ok(want: tuple[int, ...], got: tuple[int, ...]) -> bool:
    return len(want) == len(got) and all(w in (-1, g) for w, g in zip(want, got))


def _fmt_shape(s: tuple[int, ...]) -> str:
    return "[" + ", ".join("*" if n == -1 else str(n) for n in s) + "]"


def _tensor_checks(repo: Repository, path: str, f: File, rule: FileRule) -> list[Check]:
    from ..analysis.bump import tensor_signatures
    sigs = tensor_signatures(repo, f)
    out = []
    claimed: set[str] = set()
    for spec in rule.tensors:
        hits = [n for n in sigs if fnmatch.fnmatchcase(n, spec.pattern)]
        claimed |= set(hits)
        name = f"tensors {path} {spec.pattern}"
        if not hits:
            out.append(Check(name, False, "no tensor by that name"))
            continue
        wrong = []
        for n in hits:
            dt, shape, _ = sigs[n]
            if spec.dtype and dt != spec.dtype:
                wrong.append(f"{n} is {dt}, expected {spec.dtype}")
            elif spec.shape is not None and not _shape_ok(spec.shape, shape):
                wrong.append(f"{n} has shape {_fmt_shape(shape)}, expected {_fmt_shape(spec.shape)}")
        want = " ".join(x for x in (spec.dtype, _fmt_shape(spec.shape) if spec.shape is not None else None) if x)
        out.append(Check(name, not wrong, "; ".join(wrong[:3]) + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
                         if wrong else f"{len(hits)} tensor(s) {want}".rstrip()))
    if rule.exact:
        extra = sorted(set(sigs) - claimed)
        out.append(Check(f"exact {path}", not extra,
                         f"unexpected tensors: {', '.join(extra[:5])}" + (f" (+{len(extra) - 5} more)" if len(extra) > 5 else "")
                         if extra else f"only the {len(sigs)} listed tensors"))
    return out


def _metadata_value(meta: dict, key: str) -> tuple[bool, object]:
    cur: object = meta
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def validate(repo: Repository, rev: str, schema: Schema) -> list[Check]:
    """Every check of ``schema`` on revision ``rev``, in order."""
    oid = repo.resolve(rev)
    commit = repo.read_commit(oid)
    files = _files(repo, to_hex(oid))
    checks: list[Check] = []
    finite_for: dict[str, bool] = dict.fromkeys(files, schema.finite)
    size_for: dict[str, int | None] = dict.fromkeys(files, schema.max_file_size)
    for rule in schema.files:
        matched = [p for p in files if fnmatch.fnmatchcase(p, rule.glob)
                   or fnmatch.fnmatchcase(os.path.basename(p), rule.glob)]
        if rule.required or matched:
            checks.append(Check(f"files {rule.glob}", bool(matched),
                                f"{len(matched)} file(s): {', '.join(matched[:3])}" + (" ..." if len(matched) > 3 else "")
                                if matched else "no file matches"))
        for p in matched:
            if rule.finite is not None:
                finite_for[p] = rule.finite
            if rule.max_file_size is not None:
                size_for[p] = rule.max_file_size
            checks += _tensor_checks(repo, p, files[p], rule)
    for p, f in files.items():
        limit = size_for[p]
        if limit is not None:
            checks.append(Check(f"size {p}", f.size <= limit, f"{f.size} bytes (limit {limit})"))
    for p, f in files.items():
        if not finite_for[p] or not f.tensors():
            continue
        n, bad = non_finite(repo, f)
        if bad:
            worst = sorted(bad.items())[:3]
            detail = "; ".join(f"{k} has {nan} NaN, {inf} Inf" for k, (nan, inf) in worst)
            checks.append(Check(f"finite {p}", False, detail + (f" (+{len(bad) - 3} more tensors)" if len(bad) > 3 else "")))
        else:
            checks.append(Check(f"finite {p}", True, f"{n} float tensor(s), no NaN or Inf"))
    if schema.max_stored_ratio is not None:
        logical = sum(f.size for f in files.values())
        stored = sum(file_stored_bytes(repo, f) for f in files.values())
        ratio = stored / logical if logical else 0.0
        checks.append(Check("stored ratio", ratio <= schema.max_stored_ratio,
                            f"{ratio:.3f} ({stored} stored / {logical} bytes; limit {schema.max_stored_ratio})"))
    for key in schema.required_metadata:
        found, value = _metadata_value(commit.metadata, key)
        checks.append(Check(f"metadata {key}", found, f"= {value!r}" if found else f"missing from commit {short(oid)}"))
    return checks


# -- benchmark ---------------------------------------------------------------------------
def _object_ids(repo: Repository, rev: str) -> tuple[set[ObjectId], dict[str, ObjectId]]:
    """Every object a revision's files use (file objects, tensors, chunks), and path ->
    file id."""
    ids: set[ObjectId] = set()
    entries = {p: e.file for p, e in repo.tree_of(rev).entries.items() if not (e.is_symlink or e.is_dir)}
    for fid in entries.values():
        ids.add(fid)
        for s in repo.read_file(fid).segments:
            if isinstance(s, TensorSegment):
                ids.add(s.tensor)
                ids.update(repo.odb.get_object(s.tensor, Tensor).chunks)
            else:   # bytes and pack segments: content-defined chunks
                ids.update(c for c, _ in s.chunks)
    return ids, entries


@dataclass
class EvalResult:
    rev: str
    ok: bool
    metric: str | None = None
    value: float | None = None
    error: str | None = None


@dataclass
class Benchmark:
    ref: str
    base: str
    ref_commit: str
    base_commit: str
    changed_files: int = 0
    changed_bytes: int = 0        # logical bytes of the files that differ
    new_stored: int = 0           # bytes of objects REF uses that BASE does not
    total_bytes: int = 0          # logical bytes of REF
    layers: list = field(default_factory=list)
    other_files: list = field(default_factory=list)
    evals: list[EvalResult] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.new_stored / self.changed_bytes if self.changed_bytes else None

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.evals)


_METRIC_LINE = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s*=\s*(\S+)\s*$")


def run_eval(repo: Repository, rev: str, cmd: str, timeout: float | None = None) -> EvalResult:
    """Export ``rev`` to a temporary directory and run ``cmd`` (a shell command the user
    gave) with CORALFS_CHECKPOINT naming it; its last stdout line is ``metric=value``."""
    oid = repo.resolve(rev)
    tmp = tempfile.mkdtemp(prefix="coralfs-eval-")
    try:
        dest = os.path.join(tmp, "checkpoint")
        repo.export(to_hex(oid), dest)
        env = {**os.environ, "CORALFS_CHECKPOINT": dest, "CORALFS_REV": rev, "CORALFS_COMMIT": to_hex(oid)}
        try:
            p = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return EvalResult(rev, False, error=f"timed out after {timeout} s")
        if p.returncode != 0:
            tail = (p.stderr.strip().splitlines() or [""])[-1]
            return EvalResult(rev, False, error=f"exited {p.returncode}" + (f": {tail}" if tail else ""))
        lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
        m = _METRIC_LINE.match(lines[-1]) if lines else None
        if not m:
            return EvalResult(rev, False, error="its last output line is not metric=value")
        try:
            value = float(m.group(2))
        except ValueError:
            return EvalResult(rev, False, m.group(1), error=f"{m.group(2)!r} is not a number")
        return EvalResult(rev, math.isfinite(value), m.group(1), value,
                          None if math.isfinite(value) else "not a finite number")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def benchmark(repo: Repository, ref: str, base: str, eval_cmd: str | None = None) -> Benchmark:
    a, b = repo.resolve(base), repo.resolve(ref)
    out = Benchmark(ref, base, to_hex(b), to_hex(a))
    ids_a, files_a = _object_ids(repo, to_hex(a))
    ids_b, files_b = _object_ids(repo, to_hex(b))
    out.new_stored = sum(repo.store.size(o) for o in ids_b - ids_a)
    for p, fid in files_b.items():
        size = repo.read_file(fid).size
        out.total_bytes += size
        if files_a.get(p) != fid:
            out.changed_files += 1
            out.changed_bytes += size
    out.layers, out.other_files = layer_changes(repo, to_hex(a), to_hex(b))
    if eval_cmd:
        out.evals = [run_eval(repo, base, eval_cmd), run_eval(repo, ref, eval_cmd)]
    return out


def _human(n: int) -> str:
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return str(n)


def _cell(text: object, esc=str) -> str:
    return esc(str(text)).replace("|", "\\|")


def to_markdown(bm: Benchmark, esc=str, max_layers: int = 50) -> str:
    """The benchmark as Markdown for a pull-request comment or a job summary."""
    ratio = "-" if bm.ratio is None else f"{bm.ratio:.3f}"
    lines = [f"## coralfs benchmark: `{_cell(bm.ref, esc)}` against `{_cell(bm.base, esc)}`", "",
             f"`{bm.ref_commit[:12]}` vs `{bm.base_commit[:12]}`", "",
             "| check | value |", "|---|---|",
             f"| files changed | {bm.changed_files} ({_human(bm.changed_bytes)}) |",
             f"| new stored bytes | {_human(bm.new_stored)} |",
             f"| storage ratio (new stored / changed bytes) | {ratio} |",
             f"| checkpoint size | {_human(bm.total_bytes)} |"]
    if bm.evals:
        base_e, ref_e = bm.evals
        lines += ["", "### Evaluation", "", "| metric | base | this | change |", "|---|---:|---:|---:|"]
        name = ref_e.metric or base_e.metric or "eval"

        def show(e: EvalResult) -> str:
            return f"{e.value:.6g}" if e.ok and e.value is not None else f"FAIL ({_cell(e.error, esc)})"
        delta = f"{ref_e.value - base_e.value:+.6g}" if base_e.ok and ref_e.ok else "-"
        lines.append(f"| {_cell(name, esc)} | {show(base_e)} | {show(ref_e)} | {delta} |")
    if bm.layers:
        layers = sorted(bm.layers, key=lambda lc: -(lc.max_rel_l2 or 0.0))
        lines += ["", "### Changes by layer (largest first)", "",
                  "| file | layer | changed | added | removed | max rel. L2 |", "|---|---|---:|---:|---:|---:|"]
        for lc in layers[:max_layers]:
            rel = "-" if lc.max_rel_l2 is None else f"{lc.max_rel_l2:.3g}"
            lines.append(f"| {_cell(lc.path, esc)} | {_cell(lc.layer, esc)} | {lc.changed} | {lc.added} | {lc.removed} | {rel} |")
        if len(layers) > max_layers:
            lines.append(f"\n... and {len(layers) - max_layers} more layers")
    if bm.other_files:
        lines += ["", "### Other files", ""] + [f"- {s} `{_cell(p, esc)}`" for p, s in bm.other_files]
    return "\n".join(lines) + "\n"


# -- pre-commit: raw weight files ----------------------------------------------------------
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".h5", ".hdf5", ".onnx", ".gguf", ".ckpt", ".npz", ".npy",
                   ".msgpack", ".tflite", ".keras", ".pb", ".joblib", ".pkl", ".mlmodel", ".params")
DEFAULT_MAX_RAW = 10 * 10**6


def raw_weights(paths: list[str], max_size: int = DEFAULT_MAX_RAW) -> list[tuple[str, int]]:
    """(path, size) of the weight files above ``max_size`` bytes among ``paths``."""
    out = []
    for p in paths:
        if not p.lower().endswith(WEIGHT_SUFFIXES):
            continue
        try:
            size = os.stat(p).st_size
        except FileNotFoundError:
            continue   # deleted in this commit: nothing is added
        if size > max_size:
            out.append((p, size))
    return out


# -- the GitHub Actions template -----------------------------------------------------------
GITHUB_WORKFLOW = """\
# Written by `coralfs ci init github`. Validates and benchmarks the checkpoint of each
# pull request with coralfs; the benchmark report lands in the job summary.
name: coralfs

on:
  pull_request:

jobs:
  checkpoint:
    runs-on: ubuntu-latest
    env:
      # The coralfs repository holding the checkpoints (a directory in this checkout,
      # or one your job fetches from your remote first).
      CORALFS_REPO: ${{ github.workspace }}/checkpoints
      # The revisions to compare: coralfs branches named like the pull request's.
      CORALFS_REF: ${{ github.head_ref }}
      CORALFS_BASE: ${{ github.base_ref }}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - name: Install coralfs
        run: pip install coralfs
      - name: Validate
        run: coralfs ci validate "$CORALFS_REF" --schema coralfs-schema.toml
      - name: Benchmark
        # add --eval-cmd "python eval.py" to run your evaluation on both checkpoints
        # (the exported checkpoint's directory is in $CORALFS_CHECKPOINT)
        run: coralfs ci benchmark "$CORALFS_REF" --against "$CORALFS_BASE" --format github
"""
