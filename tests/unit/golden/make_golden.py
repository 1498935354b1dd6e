#!/usr/bin/env python3
"""Build the golden repository of frame format v1 (the codecs raw, zstd, grouped, xor, sub).

Run ONCE with the code that wrote format v1 (main before Compression v2), never again:
the point of the tarball is that it was written by old code. tests/unit/test_golden_repo.py
reads it with today's code and checks every file comes back bit-exactly.

    PYTHONPATH=$PWD python tests/unit/golden/make_golden.py tests/unit/golden
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

import coralfs  # noqa: F401  (installs the format layer)
from coralfs import Repository
from coralfs.objects import codecs


def checkpoint(d: str, step: int, rng: np.random.Generator, state: dict) -> None:
    os.makedirs(d, exist_ok=True)
    if not state:
        state["w"] = (rng.standard_normal((32, 1024)) * 0.05).astype(np.float32)
        state["e"] = (rng.standard_normal((128, 512)) * 0.05).astype(ml_dtypes.bfloat16)
        state["ids"] = np.arange(16384, dtype=np.int64) * 3
        state["noise"] = rng.integers(0, 256, 20000, dtype=np.uint8)
        state["h"] = (rng.standard_normal(32768) * 0.05).astype(np.float16)
        state["flags"] = (np.arange(32768) % 251).astype(np.uint16)
        for i in range(6):
            state[f"ln{i}"] = (1 + rng.standard_normal(64) * 0.01).astype(np.float32)
    else:
        w = state["w"]
        moved = rng.random(w.shape) < 0.05
        state["w"] = np.where(moved, w * np.float32(1.001), w).astype(np.float32)
        e = state["e"].astype(np.float32)
        moved = rng.random(e.shape) < 0.1
        state["e"] = np.where(moved, e * 1.01, e).astype(ml_dtypes.bfloat16)
        state["ids"] = state["ids"] + (np.arange(16384) % 97 == step)
        h = state["h"].astype(np.float32)
        state["h"] = np.where(rng.random(h.shape) < 0.05, h * 1.01, h).astype(np.float16)
        # High bits flipped: XOR beats SUB here.
        state["flags"] = state["flags"] ^ np.where(rng.random(32768) < 0.02, 0x8000, 0).astype(np.uint16)
    save_file(dict(state), os.path.join(d, "model.safetensors"), metadata={"step": str(step)})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"step": step, "hidden": 1024}, f)


def sha(p: str) -> str:
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    out = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp()
    repo_dir = os.path.join(work, "repo")
    repo = Repository.init(repo_dir)
    repo.config.set("storage.chunk_size", str(64 << 10))
    repo = Repository.open(repo_dir)
    rng = np.random.default_rng(13)
    state: dict = {}
    manifest: dict = {"commits": {}}
    for step in range(4):
        d = os.path.join(work, f"ck{step}")
        checkpoint(d, step, rng, state)
        res = repo.commit_paths([d], f"step {step}")
        manifest["commits"][res.commit.hex()] = {p: sha(os.path.join(d, p)) for p in sorted(os.listdir(d))}
        if step == 1:
            fork_at = res.commit
    # A fork from an older commit: forward deltas.
    repo.create_branch("fork", fork_at.hex())
    fstate = dict(state)
    d = os.path.join(work, "fork")
    checkpoint(d, 9, np.random.default_rng(99), fstate)
    res = repo.commit_paths([d], "fork", branch="fork")
    manifest["commits"][res.commit.hex()] = {p: sha(os.path.join(d, p)) for p in sorted(os.listdir(d))}
    seen = set()
    for oid in repo.store:
        seen.add(codecs.parse_header(repo.store.get(oid), oid).codec_name)
    manifest["codecs"] = sorted(seen)
    repo.close()
    for junk in ("index", "staging"):
        shutil.rmtree(os.path.join(repo_dir, junk), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    with tarfile.open(os.path.join(out, "repo-v1.tar.gz"), "w:gz") as t:
        t.add(repo_dir, arcname="repo")
    with open(os.path.join(out, "repo-v1.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    shutil.rmtree(work)
    print(manifest["codecs"], os.path.getsize(os.path.join(out, "repo-v1.tar.gz")))


if __name__ == "__main__":
    main()
