#!/usr/bin/env python3
"""Storage benchmark: checkpoint series, coralfs beside the alternatives, in one run.

Series (each checkpoint a directory committed on main at the same paths, in order):

- fp32, bf16: the shared MiniLM series of the acceptance checks (all-MiniLM-L6-v2, then 7
  checkpoints 20 AdamW steps apart, lr 2e-5; /work/shared/acceptance/make_series.py, cached
  under $TMPDIR/coralfs-acceptance/series, built here with the same script if missing).
- rl-bf16: an RL-style post-training series built from the bf16 MiniLM weights: 8 steps,
  step 0 the weights themselves, each next step moving a random 1% of the elements of
  every tensor by 1 ulp (3 in 4) or 2 ulps (1 in 4), up or down: what RL with lr ~3e-6
  does to bf16 weights (the fp32 master moves ~3e-6 a step; a bf16 value changes only
  when that crosses a rounding boundary). Seeded; written under --work.
- trainer: a Hugging Face Trainer run (transformers + accelerate, CPU) of a BERT built
  locally (hidden 256, 4 layers, vocab 4000, ~5M parameters), 8 steps saved every 2: four
  checkpoint directories (model.safetensors, optimizer.pt with AdamW state, scheduler.pt,
  rng_state.pth, trainer_state.json, training_args.bin), committed one after the other at
  the same paths. optimizer.pt's own ratio is reported.

Peers per series: full copies (what Git LFS or DVC store), zstd-3 per file, byte-grouped
zstd-3 per file (tensors only; ZipNN-style without its Huffman stage), ZipNN per file,
ZipNN on the XOR delta against the previous checkpoint's file, z4ai (PyPI)
``compress_delta`` against the previous checkpoint's file (``compress`` for the first),
and coralfs. Also: every checkpoint exported back and compared (sha256), commit ingest
and head reconstruction throughput, and the entropy gap: stored delta payload bytes over
the order-0 entropy of the streams coralfs entropy-codes (each byte plane and bitmap on
its own). ``--codecs`` adds a table of keyframe and delta codecs on the series' chunks
(pcodec among them) with their CPU time.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_storage.py [--series fp32,bf16,rl-bf16,trainer]
        [--codecs] [--markdown] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import zstandard

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import coralfs  # noqa: E402,F401  (installs the format layer)
from coralfs import Repository  # noqa: E402
from coralfs.formats import layout_of  # noqa: E402
from coralfs.objects import codecs, dtypes, planes  # noqa: E402
from coralfs.objects.ids import hash_bytes  # noqa: E402
from coralfs.objects.kinds import File, PackSegment, Tensor, TensorSegment  # noqa: E402

SHARED = "/work/shared/acceptance/make_series.py"
ZIPNN_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def files_of(d: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def read(p: str) -> bytes:
    with open(p, "rb") as f:
        return f.read()


# -- series ------------------------------------------------------------------------------

def shared_series(work: str) -> str:
    d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "coralfs-acceptance", "series")
    if not os.path.exists(os.path.join(d, "bf16_07.safetensors")):
        subprocess.run([sys.executable, SHARED, d, "8", "20", "2e-5"], check=True)
    return d


def file_series(work: str, name: str, sources: list[str]) -> list[str]:
    """Checkpoint directories holding model.safetensors (hard links to the sources)."""
    out = []
    for i, src in enumerate(sources):
        d = os.path.join(work, name, f"{i:02d}")
        os.makedirs(d, exist_ok=True)
        dst = os.path.join(d, "model.safetensors")
        if not os.path.exists(dst):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy(src, dst)
        out.append(d)
    return out


def rl_series(work: str, first: str, steps: int = 8) -> list[str]:
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy before safetensors reads it)
    from safetensors.numpy import load_file, save_file
    root = os.path.join(work, "rl-bf16")
    dirs = [os.path.join(root, f"{i:02d}") for i in range(steps)]
    if all(os.path.exists(os.path.join(d, "model.safetensors")) for d in dirs):
        return dirs
    rng = np.random.default_rng(2602)
    tensors = {k: v.view(np.uint16).copy() for k, v in load_file(first).items()}
    for i, d in enumerate(dirs):
        if i:
            for u in tensors.values():
                if u.dtype != np.uint16:
                    continue
                moved = np.flatnonzero(rng.random(u.size) < 0.01)
                ulps = np.where(rng.random(len(moved)) < 0.75, 1, 2) * np.where(rng.random(len(moved)) < 0.5, 1, -1)
                # move in value order (sign-magnitude bits): toward/away from zero per sign
                flat = u.reshape(-1)
                k_ = planes._keys(flat[moved].view(np.uint8), 2, dtypes.KEY_FLOAT)
                flat[moved] = planes._unkeys((k_.astype(np.int64) + ulps).astype(np.uint16), 2, dtypes.KEY_FLOAT)
        os.makedirs(d, exist_ok=True)
        save_file({k: u.view(ml_dtypes.bfloat16) for k, u in tensors.items()}, os.path.join(d, "model.safetensors"))
    return dirs


TRAINER_CHILD = r"""
import sys, torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
torch.manual_seed(0)
cfg = BertConfig(vocab_size=4000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=1024, max_position_embeddings=64, num_labels=2)
model = BertForSequenceClassification(cfg)
g = torch.Generator().manual_seed(0)
data = [{"input_ids": torch.randint(0, 4000, (32,), generator=g), "attention_mask": torch.ones(32, dtype=torch.long),
         "labels": torch.tensor(i % 2)} for i in range(64)]
args = TrainingArguments(output_dir=sys.argv[1], max_steps=8, save_steps=2, per_device_train_batch_size=8,
                         learning_rate=5e-5, report_to=[], use_cpu=True, disable_tqdm=True,
                         logging_strategy="no", seed=0)
Trainer(model=model, args=args, train_dataset=data).train()
"""


def trainer_series(work: str) -> list[str]:
    root = os.path.join(work, "trainer")
    names = [f"checkpoint-{s}" for s in (2, 4, 6, 8)]
    if not all(os.path.exists(os.path.join(root, n, "optimizer.pt")) for n in names):
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-c", TRAINER_CHILD, root], check=True, capture_output=True)
    return [os.path.join(root, n) for n in names]


# -- peers -------------------------------------------------------------------------------

def tensor_regions(path: str):
    try:
        return sorted((r for r in layout_of(path).regions if r.name is not None), key=lambda r: r.offset)
    except Exception:
        return []


def grouped_size(path: str, data: bytes) -> int:
    """Byte-grouped zstd-3 of each tensor plus zstd-3 of the bytes between them."""
    c = zstandard.ZstdCompressor(level=3)
    total, pos = 0, 0
    for r in tensor_regions(path):
        total += len(c.compress(data[pos:r.offset]))
        w = dtypes.lookup(r.dtype or "U8").width
        buf = np.frombuffer(data, np.uint8, count=r.length, offset=r.offset)
        total += min(r.length, len(c.compress(planes.group(buf, w))))
        pos = r.offset + r.length
    return total + len(c.compress(data[pos:]))


def main_dtype(path: str) -> str:
    sizes: dict[str, int] = {}
    for r in tensor_regions(path):
        sizes[r.dtype] = sizes.get(r.dtype, 0) + r.length
    return ZIPNN_DTYPE.get(max(sizes, key=sizes.get) if sizes else "", "float32")


def zipnn_size(data: bytes, dtype: str) -> int:
    from zipnn import ZipNN
    # ZipNN 0.5 reorders the bytes of the buffer it is given in place (measured: the
    # sha256 of a bytes object changes): give it a copy, or every later peer, XOR
    # deltas included, would read scrambled data.
    return len(ZipNN(bytearray_dtype=dtype, threads=2).compress(bytearray(data)))


def z4ai_size(data: bytes, prev: bytes | None, dtype: str) -> int:
    import z4ai
    dtype = {"bfloat16": "bf16"}.get(dtype, dtype)
    if prev is not None and len(prev) == len(data):
        return len(z4ai.compress_delta(data, prev, dtype=dtype))
    return len(z4ai.compress(data, dtype=dtype))


def peers(dirs: list[str]) -> dict[str, int]:
    z = zstandard.ZstdCompressor(level=3)
    out = dict.fromkeys(["full copies (Git LFS / DVC)", "zstd-3 per file", "byte-grouped zstd per file",
                         "ZipNN per file", "ZipNN on XOR deltas", "z4ai compress_delta"], 0)
    prev: dict[str, bytes] = {}
    for d in dirs:
        cur = {}
        for rel in files_of(d):
            p = os.path.join(d, rel)
            data = read(p)
            cur[rel] = data
            out["full copies (Git LFS / DVC)"] += len(data)
            out["zstd-3 per file"] += len(z.compress(data))
            out["byte-grouped zstd per file"] += grouped_size(p, data)
            if tensor_regions(p):
                dt = main_dtype(p)
                out["ZipNN per file"] += zipnn_size(data, dt)
                old = prev.get(rel)
                if old is not None and len(old) == len(data):
                    x = (np.frombuffer(data, np.uint8) ^ np.frombuffer(old, np.uint8)).tobytes()
                    out["ZipNN on XOR deltas"] += zipnn_size(x, dt)
                else:
                    out["ZipNN on XOR deltas"] += zipnn_size(data, dt)
                out["z4ai compress_delta"] += z4ai_size(data, old, dt)
            else:
                for k in ("ZipNN per file", "ZipNN on XOR deltas", "z4ai compress_delta"):
                    out[k] += len(z.compress(data))
        prev = cur
    return out


# -- coralfs -----------------------------------------------------------------------------

def stored_of(repo: Repository) -> int:
    return sum(repo.store.size(o) for o in repo.store)


def file_chunks(repo: Repository, fid) -> set:
    f = repo.odb.get_object(fid, File)
    out = set()
    for s in f.segments:
        if isinstance(s, TensorSegment):
            out.update(repo.odb.get_object(s.tensor, Tensor).chunks)
        elif isinstance(s, PackSegment):
            out.update(c for c, _ in s.chunks)
        else:
            out.update(c for c, _ in s.chunks)
    return out


def entropy_gap(repo: Repository) -> tuple[float, float, int]:
    """(stored payload bytes, order-0 entropy bytes, frames) over every delta frame: each
    entropy-coded stream (byte plane, bitmap) counted on its own."""
    stored = ent = 0.0
    n = 0
    for oid in repo.store:
        frame = repo.store.get(oid)
        h = codecs.parse_header(frame, oid)
        if h.codec not in codecs.DELTA_CODECS:
            continue
        n += 1
        stored += len(frame) - codecs.HEADER_SIZE
        for s in codecs.transformed(frame, oid):
            c = np.bincount(np.frombuffer(s, np.uint8), minlength=256)
            c = c[c > 0]
            ent += float(-(c * np.log2(c / c.sum())).sum()) / 8
    return stored, ent, n


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (a figure the other work on a
    shared machine changes far less than wall time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reconstruct(repo_path: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, bytes) of decoding every file of main."""
    r = Repository.open(repo_path)
    t0, c0 = time.perf_counter(), cpu_seconds()
    n = 0
    for e in r.tree_of("main").entries.values():
        for b in r.open_file(e.file).iter_bytes():
            n += len(b)
    return time.perf_counter() - t0, cpu_seconds() - c0, n


def run_series(name: str, dirs: list[str], work: str, report) -> dict:
    repo_path = os.path.join(work, f"repo-{name}")
    shutil.rmtree(repo_path, ignore_errors=True)
    repo = Repository.init(repo_path)
    src = os.path.join(work, f"src-{name}")
    secs = cpu = 0.0
    logical = 0
    after_first = 0
    for i, d in enumerate(dirs):
        # Each checkpoint at the same paths, as a training loop committing its output would.
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(d, src)
        t0, c0 = time.perf_counter(), cpu_seconds()
        res = repo.commit_paths([src], f"{name} {i}")
        secs += time.perf_counter() - t0
        cpu += cpu_seconds() - c0
        logical += res.stats.logical
        if i == 0:
            after_first = stored_of(repo)
    stored = stored_of(repo)
    opt_stored = opt_full = 0
    opt_chunks: set = set()
    for i in range(len(dirs)):
        e = repo.tree_of(f"main~{len(dirs) - 1 - i}").entries.get("optimizer.pt")
        if e is not None:
            opt_chunks |= file_chunks(repo, e.file)
            opt_full += os.path.getsize(os.path.join(dirs[i], "optimizer.pt"))
    opt_stored = sum(repo.store.size(c) for c in opt_chunks)
    opt_delta = sum(repo.odb.chunk_header(c).codec in codecs.DELTA_CODECS for c in opt_chunks)
    gap_stored, gap_ent, ndelta = entropy_gap(repo)
    rt, rc, rn = reconstruct(repo_path)
    ok = True
    out = tempfile.mkdtemp(dir=work)
    for i, d in enumerate(dirs):
        dest = os.path.join(out, str(i))
        repo.export(f"main~{len(dirs) - 1 - i}", dest)
        for rel in files_of(d):
            if hashlib.sha256(read(os.path.join(d, rel))).digest() != hashlib.sha256(read(os.path.join(dest, rel))).digest():
                ok = False
    shutil.rmtree(out)
    repo.close()
    shutil.rmtree(src, ignore_errors=True)
    full_one = sum(os.path.getsize(os.path.join(dirs[-1], rel)) for rel in files_of(dirs[-1]))
    res = {"stored": stored, "per_step": (stored - after_first) / (full_one * (len(dirs) - 1)),
           "ingest": logical / secs / 1e6, "reconstruct": rn / rt / 1e6, "ok": ok,
           "ingest_cpu": logical / cpu / 1e6, "reconstruct_cpu": rn / rc / 1e6,
           "gap": gap_stored / gap_ent - 1 if gap_ent else float("nan"), "ndelta": ndelta,
           "opt": (opt_stored / opt_full, opt_delta, len(opt_chunks)) if opt_full else None}
    shutil.rmtree(repo_path, ignore_errors=True)
    return res


# -- codec table (--codecs) -----------------------------------------------------------------

def codec_table(pairs: list[tuple[str, str, str]], report) -> list[tuple]:
    """Keyframe and delta codecs on the big tensors of checkpoint pairs: ratio and MB per
    CPU-second (this thread) to encode and to decode."""
    from pcodec import ChunkConfig, standalone
    rows = []
    for label, old_p, new_p in pairs:
        old, new = read(old_p), read(new_p)
        chunks = []
        for r in tensor_regions(new_p):
            if r.length < (1 << 20):
                continue
            for o in range(r.offset, r.offset + r.length, 4 << 20):
                n = min(4 << 20, r.offset + r.length - o)
                chunks.append((dtypes.lookup(r.dtype), new[o:o + n], old[o:o + n]))
        total = sum(len(c[1]) for c in chunks)

        def measure(name, enc, dec):
            # Best of 2 encodes and 3 decodes (CPU time of this thread): other work on
            # the shared machine slows single passes by up to 2x.
            te = td = float("inf")
            for _ in range(2):
                t = time.thread_time()
                outs = [enc(dt, a, b) for dt, a, b in chunks]
                te = min(te, time.thread_time() - t)
            for _ in range(3):
                t = time.thread_time()
                for (dt, a, b), o in zip(chunks, outs):
                    dec(dt, o, a, b)
                td = min(td, time.thread_time() - t)
            size = sum(len(o) if isinstance(o, bytes) else len(o[0]) for o in outs)
            rows.append((label, name, size / total, total / te / 1e6, total / td / 1e6))
            report(f"    [{label}] {name:<34} {size / total:6.4f}  encode {total / te / 1e6:5.0f} MB/s"
                   f"  decode {total / td / 1e6:5.0f} MB/s (CPU, one thread)")

        def frame(codec):
            def enc(dt, a, b):
                return codecs.encode_as(codec, a, hash_bytes(a), width=dt.width, key=dt.key, level=1,
                                        base=codecs.Base(hash_bytes(b), b, 0))

            def dec(dt, f, a, b):
                assert codecs.decode(f, hash_bytes(a), lambda o: b) == a
            return enc, dec

        for c in (codecs.GROUPED, codecs.FGROUPED):
            measure(f"keyframe {codecs.CODEC_NAMES[c]} (zstd-1)", *frame(c))
        uint = {2: np.uint16, 4: np.uint32}
        sint = {2: np.int16, 4: np.int32}

        def pco_key(dt, a, b):
            u = np.frombuffer(a, uint[dt.width])
            rot = (u << uint[dt.width](1)) | (u >> uint[dt.width](8 * dt.width - 1))
            return standalone.simple_compress(rot, ChunkConfig(compression_level=8))

        def pco_key_dec(dt, f, a, b):
            standalone.simple_decompress(f)
        measure("keyframe pcodec level 8 (sign rotated)", pco_key, pco_key_dec)

        def zipnn_key(dt, a, b):
            return zipnn_bytes(a, dt)
        # (ZipNN works in its own threads: its CPU time is not this thread's; size only)
        measure("keyframe ZipNN (size only)", zipnn_key, lambda dt, f, a, b: None)
        for c in (codecs.SUB, codecs.SUBS, codecs.SPARSE):
            measure(f"delta {codecs.CODEC_NAMES[c]}", *frame(c))

        def pco_sub(dt, a, b):
            d = (planes._keys(np.frombuffer(a, np.uint8), dt.width, dt.key)
                 - planes._keys(np.frombuffer(b, np.uint8), dt.width, dt.key)).view(sint[dt.width])
            return standalone.simple_compress(d, ChunkConfig(compression_level=8))

        def pco_sub_dec(dt, f, a, b):
            d = standalone.simple_decompress(f).view(uint[dt.width])
            k = planes._keys(np.frombuffer(b, np.uint8), dt.width, dt.key) + d
            assert planes._unkeys(k, dt.width, dt.key).tobytes() == a
        measure("delta pcodec level 8 on SUB", pco_sub, pco_sub_dec)
    return rows


def zipnn_bytes(a: bytes, dt) -> bytes:
    from zipnn import ZipNN
    return ZipNN(bytearray_dtype=ZIPNN_DTYPE.get(dt.name, "float32"), threads=1).compress(bytearray(a))


# -- main --------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "coralfs-bench-storage"))
    ap.add_argument("--series", default="fp32,bf16,rl-bf16,trainer")
    ap.add_argument("--codecs", action="store_true", help="also the keyframe/delta codec table")
    ap.add_argument("--markdown", action="store_true", help="also print markdown tables")
    ap.add_argument("--no-peers", action="store_true", help="coralfs only (speed runs)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    shared = shared_series(args.work)
    builders = {
        "fp32": lambda: file_series(args.work, "fp32", [os.path.join(shared, f"ckpt_{i:02d}.safetensors") for i in range(8)]),
        "bf16": lambda: file_series(args.work, "bf16", [os.path.join(shared, f"bf16_{i:02d}.safetensors") for i in range(8)]),
        "rl-bf16": lambda: rl_series(args.work, os.path.join(shared, "bf16_00.safetensors")),
        "trainer": lambda: trainer_series(args.work),
    }
    results = {}
    for name in args.series.split(","):
        dirs = builders[name]()
        print(f"[{name}] {len(dirs)} checkpoints")
        p = peers(dirs) if not args.no_peers else {"full copies (Git LFS / DVC)": sum(
            os.path.getsize(os.path.join(d, rel)) for d in dirs for rel in files_of(d))}
        r = run_series(name, dirs, args.work, print)
        full = p["full copies (Git LFS / DVC)"]
        for k, v in p.items():
            print(f"    {k:<30} {v / full:7.4f}")
        print(f"    {'coralfs':<30} {r['stored'] / full:7.4f}")
        print(f"    coralfs per step after the first: {r['per_step']:.4f} of a full copy")
        if r["opt"]:
            print(f"    optimizer.pt alone: {r['opt'][0]:.4f} of its full copies; {r['opt'][1]} of its "
                  f"{r['opt'][2]} chunks stored as deltas")
        print(f"    entropy gap of the {r['ndelta']} delta frames: stored {r['gap'] * 100:+.1f}% over order-0")
        print(f"    ingest {r['ingest']:.0f} MB/s ({r['ingest_cpu']:.0f} MB per CPU-second); reconstruction "
              f"of main {r['reconstruct']:.0f} MB/s ({r['reconstruct_cpu']:.0f} MB per CPU-second); "
              f"bit-identical: {r['ok']}")
        results[name] = (p, r)
    table = []
    if args.codecs:
        print("[codecs] 4 MiB chunks of the tensors >= 1 MiB; delta = checkpoint 7 against 6")
        pairs = []
        if "fp32" in results or "fp32" in args.series:
            pairs.append(("fp32", os.path.join(shared, "ckpt_06.safetensors"), os.path.join(shared, "ckpt_07.safetensors")))
        pairs.append(("bf16", os.path.join(shared, "bf16_06.safetensors"), os.path.join(shared, "bf16_07.safetensors")))
        table = codec_table(pairs, print)
    if args.markdown:
        names = list(results)
        print("\n| stored / full copies | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        for k in results[names[0]][0]:
            print(f"| {k} | " + " | ".join(f"{results[n][0][k] / results[n][0]['full copies (Git LFS / DVC)']:.3f}"
                                          for n in names) + " |")
        print("| **coralfs** | " + " | ".join(
            f"**{results[n][1]['stored'] / results[n][0]['full copies (Git LFS / DVC)']:.3f}**" for n in names) + " |")
        print("| coralfs per step after the first | " + " | ".join(f"{results[n][1]['per_step']:.4f}" for n in names) + " |")
        print("| optimizer.pt alone | " + " | ".join(
            f"{results[n][1]['opt'][0]:.3f}" if results[n][1]["opt"] else "—" for n in names) + " |")
        print("| stored delta bytes over their order-0 entropy | " + " | ".join(
            f"{results[n][1]['gap'] * 100:+.1f}%" for n in names) + " |")
        print("| commit ingest MB/s (MB per CPU-second) | " + " | ".join(
            f"{results[n][1]['ingest']:.0f} ({results[n][1]['ingest_cpu']:.0f})" for n in names) + " |")
        print("| reconstruction of the head MB/s (MB per CPU-second) | " + " | ".join(
            f"{results[n][1]['reconstruct']:.0f} ({results[n][1]['reconstruct_cpu']:.0f})" for n in names) + " |")
        print("| every checkpoint bit-identical | " + " | ".join(str(results[n][1]["ok"]) for n in names) + " |")
        if table:
            print("\n| series | codec | stored / raw | encode MB/s | decode MB/s |\n|---|---|---|---|---|")
            for row in table:
                print(f"| {row[0]} | {row[1]} | {row[2]:.4f} | {row[3]:.0f} | {row[4]:.0f} |")


if __name__ == "__main__":
    main()
