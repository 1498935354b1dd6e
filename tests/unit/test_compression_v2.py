"""Compression v2 in a repository: sibling bases, optimizer state as deltas, the new
codecs chosen where they pay, and everything back bit-exactly."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import torch
from safetensors.numpy import save_file

import coralfs  # noqa: F401  (installs the format layer)
from coralfs import Repository
from coralfs.objects import codecs
from coralfs.objects.kinds import File, Tensor, TensorSegment


def _chunks(repo: Repository, rev: str, path: str) -> dict[str, list[bytes]]:
    f = repo.odb.get_object(repo.tree_of(rev).entries[path].file, File)
    return {s.name: repo.odb.get_object(s.tensor, Tensor).chunks
            for s in f.segments if isinstance(s, TensorSegment)}


def _same_files(repo: Repository, rev: str, src, tmp_path) -> None:
    out = tmp_path / f"out-{rev.replace('/', '_')}"
    repo.export(rev, str(out))
    for root, _, files in os.walk(src):
        for name in files:
            p = os.path.join(root, name)
            assert (out / os.path.relpath(p, src)).read_bytes() == open(p, "rb").read(), p


def test_variants_in_one_commit_delta_against_their_sibling(tmp_path):
    """Three variants at three paths, no parent: the fine-tune is a delta against the
    variant written before it, the exact copy costs no chunk at all."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((256, 1024)) * 0.05).astype(np.float32)
    variants = {"a": w, "b": (w + rng.standard_normal(w.shape).astype(np.float32) * 1e-5), "c": w.copy()}
    src = tmp_path / "src"
    for k, v in variants.items():
        (src / k).mkdir(parents=True)
        save_file({"w": v.astype(np.float32)}, str(src / k / "model.safetensors"))
    alone = Repository.init(str(tmp_path / "alone"))
    one = alone.commit_paths([str(src / "a")], "a alone").stats.stored
    repo = Repository.init(str(tmp_path / "repo"))
    st = repo.commit_paths([str(src)], "variants").stats
    assert st.stored < 1.7 * one, (st.stored, one)
    a, b, c = (_chunks(repo, "main", f"{k}/model.safetensors")["w"] for k in "abc")
    assert c == a  # the copy: the very same chunks
    for cb, ca in zip(b, a):
        h = repo.odb.chunk_header(cb)
        assert h.codec in codecs.DELTA_CODECS and h.base == ca
    _same_files(repo, "main", src, tmp_path)


def _adam_checkpoint(d, model, opt) -> None:
    d.mkdir(parents=True)
    torch.save(opt.state_dict(), str(d / "optimizer.pt"))
    torch.save(model.state_dict(), str(d / "pytorch_model.bin"))


def _train(model, opt, steps: int) -> None:
    for _ in range(steps):
        x = torch.randn(16, 256)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_optimizer_state_deltas_against_the_previous_checkpoint_at_the_same_key(tmp_path):
    """A run directory holding checkpoint-8 and checkpoint-10 (new paths, one commit), then
    checkpoint-12 in the next commit: the large Adam moments of an older checkpoint are
    deltas whose base is the same key of the next checkpoint (reverse deltas)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    run = tmp_path / "run"
    _train(model, opt, 8)
    _adam_checkpoint(run / "checkpoint-8", model, opt)
    _train(model, opt, 2)
    _adam_checkpoint(run / "checkpoint-10", model, opt)
    repo = Repository.init(str(tmp_path / "repo"))
    repo.commit_paths([str(tmp_path / "run")], "two checkpoints")
    _train(model, opt, 2)
    _adam_checkpoint(run / "checkpoint-12", model, opt)
    repo.commit_paths([str(tmp_path / "run")], "third")
    for older, newer in (("8", "10"), ("10", "12")):
        old = _chunks(repo, "main", f"checkpoint-{older}/optimizer.pt")
        new = _chunks(repo, "main", f"checkpoint-{newer}/optimizer.pt")
        big = [k for k, ch in old.items() if repo.odb.chunk_header(ch[0]).decoded_len >= 64 << 10]
        assert len(big) >= 4  # exp_avg and exp_avg_sq of both weight matrices
        heads = {k: repo.odb.chunk_header(old[k][0]) for k in big}
        deltas = [k for k, h in heads.items() if h.codec in codecs.DELTA_CODECS]
        # exp_avg_sq moves slowly (beta2 0.999) and is always a delta; exp_avg may be a
        # keyframe when the delta does not pay. A delta's base is always the same key.
        assert len(deltas) >= len(big) // 2, {k: h.codec_name for k, h in heads.items()}
        for k in deltas:
            assert heads[k].base == new[k][0], (older, k)
    _same_files(repo, "main", tmp_path / "run", tmp_path)


def test_bf16_steps_moving_few_elements_are_sparse_deltas(tmp_path):
    """An RL-like step (1% of bf16 elements moved by one ulp) stores as SPARSE, far below
    a dense delta's size, and reads back exactly, the keyframe too."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal(1 << 20) * 0.05).astype(ml_dtypes.bfloat16)
    repo = Repository.init(str(tmp_path / "repo"))
    src = tmp_path / "src"
    src.mkdir()
    versions = []
    for step in range(3):
        u = w.view(np.uint16).copy()
        moved = rng.random(len(u)) < 0.01
        u[moved] += 1
        w = u.view(ml_dtypes.bfloat16)
        save_file({"w": w}, str(src / "model.safetensors"))
        versions.append((src / "model.safetensors").read_bytes())
        repo.commit_paths([str(src)], f"step {step}")
    for rev in ("main~2", "main~1"):
        for ch in _chunks(repo, rev, "model.safetensors")["w"]:
            h = repo.odb.chunk_header(ch)
            assert h.codec == codecs.SPARSE
            assert repo.store.size(ch) < 0.03 * h.decoded_len
    head = _chunks(repo, "main", "model.safetensors")["w"]
    assert {repo.odb.chunk_header(c).codec for c in head} == {codecs.FGROUPED}
    for i, rev in enumerate(("main~2", "main~1", "main")):
        out = tmp_path / f"out{i}"
        repo.export(rev, str(out))
        assert (out / "model.safetensors").read_bytes() == versions[i]
