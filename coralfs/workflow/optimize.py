"""optimize --analyze: what other storage settings would store, measured on a sample of the
repository's own chunks, and --apply: re-encode every reachable chunk with the chosen
settings (lossless: each new frame is decoded and checked against the chunk's checksum
before it replaces the old one; resumable through a journal).

The estimate is a ratio estimator over a deterministic sample (chunks ordered by a hash
of their id, taken until the sample budget of decoded bytes is reached): for each sampled
chunk the frame the new level would give (kept only where it is smaller, exactly as
--apply keeps it), scaled by the stored bytes of all chunks of that kind over the
sample's. Each candidate is also timed (encode and decode MB/s of decoded bytes), because
a higher zstd level costs every future commit and a read path slower than today's costs
every mount.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import xxhash

from ..objects import codecs
from ..objects.durable import append_durable, write_durable
from ..objects.errors import CoralError
from ..objects.ids import ObjectId, from_hex, to_hex
from ..objects.kinds import File, PackSegment, Tensor, TensorSegment
from ..objects.reach import mark
from ..objects.repository import Repository

log = logging.getLogger(__name__)

LEVELS = (1, 3, 6, 9, 15, 19)
KINDS = {"tensor": "storage.tensor_level", "literal": "storage.literal_level"}
JOURNAL = "optimize.journal"
# What a recommendation must keep: commits at least this share of today's encode speed,
# reads at least this share of today's decode speed, and a saving worth a rewrite.
MIN_ENCODE, MIN_DECODE, MIN_SAVING = 0.25, 0.9, 0.01


@dataclass
class Candidate:
    level: int
    stored: int            # estimated stored bytes of all chunks of the kind at this level
    saving: float          # share of today's stored bytes saved (negative: costs)
    encode_mbps: float
    decode_mbps: float


@dataclass
class KindAnalysis:
    kind: str              # tensor or literal
    key: str               # the config key that sets its level
    current: int
    chunks: int
    stored: int            # stored bytes of the kind's reachable chunks today
    sample_chunks: int
    sample_bytes: int      # decoded bytes sampled
    candidates: list[Candidate] = field(default_factory=list)
    best: Candidate | None = None   # None: keep the current level
    by_layer: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer kind -> (sampled stored now, at best)


@dataclass
class Analysis:
    kinds: list[KindAnalysis]
    store_bytes: int
    unreachable_bytes: int
    notes: list[str] = field(default_factory=list)

    def config_lines(self) -> list[str]:
        return [f"coralfs config set {k.key} {k.best.level}" for k in self.kinds if k.best]

    def gc_advice(self) -> str:
        share = self.unreachable_bytes / self.store_bytes if self.store_bytes else 0.0
        if share >= 0.1:
            return (f"{share:.0%} of the store ({self.unreachable_bytes} bytes) is unreachable: run `coralfs gc` now, "
                    "then after each branch or tag deletion (weekly on a busy repository)")
        return f"{share:.1%} of the store is unreachable: gc can wait (run it when that passes 10%)"


def layer_kind(name: str) -> str:
    """A coarse layer type from a tensor name, for the per-layer breakdown."""
    n = name.lower()
    if "embed" in n:
        return "embeddings"
    if "norm" in n or n.endswith(("ln.weight", "ln.bias")):
        return "norms"
    if n.endswith("bias"):
        return "biases"
    return "weights"


def _chunk_kinds(repo: Repository, seen: set[ObjectId]) -> dict[str, list[ObjectId]]:
    out: dict[str, list[ObjectId]] = {k: [] for k in KINDS}
    for oid in seen:
        try:
            h = repo.odb.chunk_header(oid)
        except CoralError:
            continue
        if h.structured:
            continue
        if h.codec in codecs.TENSOR_CODECS or (h.codec == codecs.RAW and h.width > 1):
            out["tensor"].append(oid)
        elif h.codec in (codecs.ZSTD, codecs.RAW):
            out["literal"].append(oid)
    return out


def _chunk_names(repo: Repository) -> dict[ObjectId, str]:
    """Chunk id -> tensor name, for the tensors of every branch and tag head."""
    names: dict[ObjectId, str] = {}
    heads = list(repo.branches().values()) + [repo.peel(t) for t in repo.tags().values()]
    for head in dict.fromkeys(heads):
        for e in repo.tree_of(head).entries.values():
            if e.is_symlink or e.is_dir:
                continue
            f = repo.odb.get_object(e.file, File)
            for s in f.segments:
                if isinstance(s, TensorSegment):
                    t = repo.odb.get_object(s.tensor, Tensor)
                    for c in t.chunks:
                        names.setdefault(c, s.name)
                elif isinstance(s, PackSegment):
                    for c, _ in s.chunks:
                        names.setdefault(c, s.tensors[0].name if s.tensors else "")
    return names


def reencode(repo: Repository, oid: ObjectId, level: int, data: bytes | None = None) -> bytes:
    """The frame of chunk ``oid`` at zstd ``level``, same content, same base (a delta stays
    a delta of the same base, a keyframe keeps its group count)."""
    h = repo.odb.chunk_header(oid)
    data = repo.odb.read_chunk(oid) if data is None else data
    if h.codec in (codecs.ZSTD,) or (h.codec == codecs.RAW and h.width <= 1):
        return codecs.encode(data, oid, level=level, literal=True)
    base = None
    if h.base is not None:
        base = codecs.Base(h.base, repo.odb.read_chunk(h.base), max(0, h.depth - 1))
    return codecs.encode(data, oid, width=h.width, key=h.key, level=level, base=base, gen=h.gen)


def _sample(oids: list[ObjectId], budget: int, repo: Repository) -> list[ObjectId]:
    order = sorted(oids, key=lambda o: xxhash.xxh3_64_intdigest(o))
    out, total = [], 0
    for oid in order:
        if total >= budget:
            break
        out.append(oid)
        total += repo.odb.chunk_header(oid).decoded_len
    return out


def analyze(repo: Repository, sample_bytes: int = 64 << 20, levels: tuple[int, ...] = LEVELS) -> Analysis:
    m, problems = mark(repo)
    if problems or m.problems:
        raise CoralError(f"the repository has damage ({(problems + m.problems)[0]}): run `coralfs fsck` first")
    store = repo.odb.store
    store_bytes = unreachable = 0
    for oid in store:
        n = store.size(oid)
        store_bytes += n
        if oid not in m.seen:
            unreachable += n
    names = _chunk_names(repo)
    kinds = []
    for kind, oids in _chunk_kinds(repo, m.seen).items():
        if not oids:
            continue
        cur = int(repo.config.get(KINDS[kind]))
        stored = sum(store.size(o) for o in oids)
        sample = _sample(oids, sample_bytes, repo)
        datas = {o: repo.odb.read_chunk(o) for o in sample}
        now = {o: store.size(o) for o in sample}
        ka = KindAnalysis(kind, KINDS[kind], cur, len(oids), stored, len(sample), sum(map(len, datas.values())))
        frames_at: dict[int, dict[ObjectId, bytes]] = {}
        for lvl in sorted(set(levels) | {cur}):
            t0 = time.perf_counter()
            frames = {o: reencode(repo, o, lvl, datas[o]) for o in sample}
            enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            for o, fr in frames.items():
                codecs.decode(fr, o, repo.odb.read_chunk)
            dec = time.perf_counter() - t0
            new = sum(min(len(fr), now[o]) for o, fr in frames.items())
            est = round(stored * new / sum(now.values())) if now else stored
            mb = ka.sample_bytes / 1e6
            ka.candidates.append(Candidate(lvl, est, 1 - est / stored if stored else 0.0,
                                           mb / enc if enc else 0.0, mb / dec if dec else 0.0))
            frames_at[lvl] = frames
        base = next(c for c in ka.candidates if c.level == cur)
        ok = [c for c in ka.candidates if c.level != cur and c.saving >= MIN_SAVING
              and c.encode_mbps >= MIN_ENCODE * base.encode_mbps and c.decode_mbps >= MIN_DECODE * base.decode_mbps]
        ka.best = max(ok, key=lambda c: (c.saving, -c.level)) if ok else None
        if ka.best:
            for o in sample:
                layer = layer_kind(names.get(o, "")) if kind == "tensor" else "files"
                a, b = ka.by_layer.get(layer, (0, 0))
                ka.by_layer[layer] = (a + now[o], b + min(now[o], len(frames_at[ka.best.level][o])))
        kinds.append(ka)
    notes = ["chunk size and max chain change how new commits are cut and chained; they are not re-encoded "
             "here (chunk ids are part of history), so they are not estimated",
             "similarity: storage.similarity is on/off; there is no threshold setting to tune"]
    return Analysis(kinds, store_bytes, unreachable, notes)


@dataclass
class ApplyReport:
    chunks: int = 0
    replaced: int = 0
    before: int = 0
    after: int = 0
    resumed: int = 0


def apply(repo: Repository, levels: dict[str, int], progress: Callable[[int], None] | None = None) -> ApplyReport:
    """Re-encode every reachable chunk of each kind at ``levels[kind]``, set the config
    keys, and report the bytes before and after. Runs under the exclusive session (no
    commit re-encodes a chunk meanwhile); an interrupted run resumes from its journal."""
    journal = os.path.join(repo.path, JOURNAL)
    want = ",".join(f"{k}={v}" for k, v in sorted(levels.items()))
    rep = ApplyReport()
    with repo.exclusive_session():
        m, problems = mark(repo)
        if problems or m.problems:
            raise CoralError(f"the repository has damage ({(problems + m.problems)[0]}): run `coralfs fsck` first")
        done: set[ObjectId] = set()
        if os.path.exists(journal):
            with open(journal, encoding="ascii", errors="replace") as f:
                lines = f.read().splitlines()
            if lines and lines[0] == want:
                done = {from_hex(x) for x in lines[1:] if len(x) == 64}
                rep.resumed = len(done)
        if not done:
            write_durable(journal, (want + "\n").encode())
        store = repo.odb.store
        for kind, oids in _chunk_kinds(repo, m.seen).items():
            if kind not in levels:
                continue
            for oid in sorted(oids):
                rep.chunks += 1
                old = store.size(oid)
                rep.before += old
                if oid not in done:
                    frame = reencode(repo, oid, levels[kind])
                    if len(frame) < old:
                        # Lossless or nothing: the new frame must decode to the chunk.
                        codecs.decode(frame, oid, repo.odb.read_chunk)
                        store.replace(oid, frame)
                        rep.replaced += 1
                    append_durable(journal, to_hex(oid).encode() + b"\n")
                rep.after += store.size(oid)
                if progress:
                    progress(1)
        store.sync()
        for kind, lvl in levels.items():
            repo.config.set(KINDS[kind], str(lvl))
        os.unlink(journal)
    return rep
