"""PyTorch distributed checkpoints (torch.distributed.checkpoint): real dcp.save / dcp.load,
no process group (a single process), real FUSE mounts."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp

from coralfs import Repository
from coralfs.formats import FormatError, dcp as dcp_format, detect
from tests.conftest import fails, run_cli
from tests.mount.conftest import mounted, stats


LAYERS = 5


def _state(step: int) -> dict:
    """Big layers (4 MiB, one tensor chunk each) with 512 KiB gaps between them, a 300 KiB
    weight and small tensors; each step touches a few rows of each."""
    g = torch.Generator().manual_seed(0)
    model = {"w": torch.randn(300, 256, generator=g)}
    for i in range(LAYERS):
        model[f"l{i}"] = torch.randn(1024, 1024, generator=g)
        if i < LAYERS - 1:
            model[f"g{i}"] = torch.randn(128, 1024, generator=g)
    for k, v in model.items():
        v[: step * 3] += 0.01 * step
    model["b"] = torch.full((10,), float(step), dtype=torch.float16)
    model["ids"] = torch.arange(6, dtype=torch.int64) + step
    return {"model": model, "step": step}


def _save(state: dict, d) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group": a single process saves alone
        dcp.save(state, checkpoint_id=str(d))


def _load(state: dict, d) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, checkpoint_id=str(d))


def _empty_like(state: dict) -> dict:
    return {"model": {k: torch.zeros_like(v) for k, v in state["model"].items()}, "step": 0}


def test_shard_regions_come_from_the_metadata(tmp_path):
    _save(_state(1), tmp_path / "s1")
    shard = str(tmp_path / "s1" / "__0_0.distcp")
    lay = detect.layout_of(shard, siblings=detect.disk_siblings(shard))
    got = {r.name: (r.dtype, r.shape) for r in lay.regions}
    assert lay.format == "dcp"
    assert got == {"model.w": ("F32", (300, 256)), "model.b": ("F16", (10,)), "model.ids": ("I64", (6,)),
                   **{f"model.l{i}": ("F32", (1024, 1024)) for i in range(LAYERS)},
                   **{f"model.g{i}": ("F32", (128, 1024)) for i in range(LAYERS - 1)}}
    raw = open(shard, "rb").read()
    want = _state(1)["model"]
    for r in lay.regions:
        arr = np.frombuffer(raw[r.offset:r.offset + r.length], {"F32": np.float32, "F16": np.float16,
                                                                "I64": np.int64}[r.dtype]).reshape(r.shape)
        assert np.array_equal(arr, want[r.name.split(".", 1)[1]].numpy())
    assert detect.layout_of(shard).format != "dcp"  # no .metadata beside it: read by its magic


def test_two_steps_second_stores_far_less(tmp_path, monkeypatch):
    for s in (1, 2):
        _save(_state(s), tmp_path / f"s{s}")

    def stored(name: str) -> tuple[int, int]:
        r = Repository.init(str(tmp_path / name))
        try:
            r.commit_paths([str(tmp_path / "s1")], "step 1")
            st = r.commit_paths([str(tmp_path / "s2")], "step 2").stats
            fmt = r.read_file(r.tree_of("HEAD").entries["__0_0.distcp"].file).format
            assert (fmt == "dcp") == (name == "dcp"), fmt
            return st.stored, st.logical
        finally:
            r.close()

    as_dcp, logical = stored("dcp")
    monkeypatch.setattr(detect, "BY_NAME", [])
    as_bytes, _ = stored("bytes")
    # measured: 92 KB of 23.4 MB with the reader, 8.6 MB as plain content-defined chunks
    assert as_dcp < 0.05 * logical, (as_dcp, logical)
    assert as_dcp < 0.1 * as_bytes, (as_dcp, as_bytes)


def test_saved_into_a_writable_mount_loads_back_and_partial_load_reads_little(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    mp = str(tmp_path / "mnt")
    with mounted(repo, mp, None, "--write"):
        _save(_state(1), os.path.join(mp, "ckpt"))
        run_cli("commit", "--mount", mp, "-m", "step 1", repo=repo)
        _save(_state(2), os.path.join(mp, "ckpt"))  # the next step over the same files
        run_cli("commit", "--mount", mp, "-m", "step 2", repo=repo)
        back = _empty_like(_state(2))
        _load(back, os.path.join(mp, "ckpt"))
    want = _state(2)
    for k, v in want["model"].items():
        assert torch.equal(back["model"][k], v), k
    assert back["step"] == 2
    with Repository.open(repo) as r:
        f = r.read_file(r.tree_of("HEAD").entries["ckpt/__0_0.distcp"].file)
        assert f.format == "dcp" and "model.l1" in f.tensors()
    ro = str(tmp_path / "ro")
    with mounted(repo, ro, "main"):
        before = stats(ro)["decoded_bytes"]
        only = {"model": {"l2": torch.zeros(1024, 1024)}}
        _load(only, os.path.join(ro, "ckpt"))
        decoded = stats(ro)["decoded_bytes"] - before
        assert torch.equal(only["model"]["l2"], want["model"]["l2"])
    total = sum(v.numel() * v.element_size() for v in want["model"].values())
    # l2 is 4 MiB of a 22.3 MiB checkpoint. The load reads l2's item alone; the mount
    # decodes whole 4 MiB chunks, and the kernel's readahead reaches the gap tensors
    # beside l2 and at most an edge chunk of a neighbour (measured: 9.4 MB).
    assert decoded <= 2.5 * (4 << 20) and decoded < 0.5 * total, (decoded, total)


# --- malformed -------------------------------------------------------------------------

def test_lying_offsets_and_truncation_are_named(tmp_path, repo):
    d = tmp_path / "s"
    _save(_state(1), d)
    shard = d / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100_000])
    with pytest.raises(FormatError, match=r"__0_0\.distcp: 'model\.\w+': bytes .* outside the shard") as ei:
        repo.commit_paths([str(d)], "x")
    assert "\n" not in str(ei.value) and "nothing was committed" in str(ei.value)
    assert repo.head() is None


def test_broken_metadata_is_refused_without_unpickling(tmp_path):
    d = tmp_path / "s"
    _save(_state(1), d)
    r = str(tmp_path / "r")
    run_cli("init", r)
    meta = d / ".metadata"
    good = meta.read_bytes()
    meta.write_bytes(good[: len(good) // 2])
    line = fails(r, "commit", str(d), "-m", "x")
    assert "__0_0.distcp" in line and "malformed DCP metadata" in line

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    meta.write_bytes(pickle.dumps(Boom()))
    line = fails(r, "commit", str(d), "-m", "x")
    assert "not a torch.distributed.checkpoint Metadata" in line
    assert not (tmp_path / "pwned").exists()  # os.system was never called


def test_metadata_reader_never_imports_torch_classes(tmp_path):
    d = tmp_path / "s"
    _save(_state(1), d)
    chunks = dcp_format.parse_metadata(".metadata", (d / ".metadata").read_bytes())
    by = {c.fqn: c for c in chunks}
    assert by["model.w"].dtype == "F32" and by["model.w"].sizes == (300, 256)
    assert by["step"].dtype is None  # a Python value: bytes, never a region
