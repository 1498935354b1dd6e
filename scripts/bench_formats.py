"""Formats benchmark: the newly stored fraction of a second version of a checkpoint
(every weight moved a little, as by one training step), for the formats that used to be
stored as opaque bytes, with their readers ("after") and with the file forced to be
opaque bytes ("before", what coralfs did without a reader), side by side in one run.

    flock /work/notes/bench.lock .venv/bin/python scripts/bench_formats.py [--mb 16]

Prints a table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable

import numpy as np

import coralfs.ingest
from coralfs.api import Repository
from coralfs.formats import Layout, layout_of


def _weights(mb: int, seed: int = 0) -> dict[str, np.ndarray]:
    """~mb MiB of fp32 weights in 1 MiB-ish layers."""
    rng = np.random.default_rng(seed)
    n = max(1, mb)
    return {f"layers.{i}.weight": (rng.standard_normal((512, 512)) * 0.02).astype(np.float32) for i in range(n)}


def _step(sd: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    """One training step: every weight moved by ~1e-3 of its scale."""
    rng = np.random.default_rng(seed)
    return {k: (v + (rng.standard_normal(v.shape) * 2e-5).astype(np.float32)) for k, v in sd.items()}


def write_gguf(path: str, sd: dict[str, np.ndarray]) -> None:
    import gguf
    from gguf.quants import quantize
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(len(sd))
    for i, (k, v) in enumerate(sd.items()):
        if i % 3 == 0:
            w.add_tensor(k, v)
        elif i % 3 == 1:
            w.add_tensor(k, v.astype(np.float16))
        else:
            q = quantize(v, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(k, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_h5(path: str, sd: dict[str, np.ndarray], compression: str | None = None) -> None:
    import h5py
    with h5py.File(path, "w") as f:
        for k, v in sd.items():
            f.create_dataset(k, data=v, chunks=(128, 128), compression=compression)


def _torch_sd(sd: dict[str, np.ndarray]):
    import torch
    return {k: torch.from_numpy(v.copy()) for k, v in sd.items()}


def write_legacy(path: str, sd: dict[str, np.ndarray]) -> None:
    import torch
    torch.save(_torch_sd(sd), path, _use_new_zipfile_serialization=False)


def write_torch_zip(path: str, sd: dict[str, np.ndarray]) -> None:
    import torch
    torch.save(_torch_sd(sd), path)


def write_pt2(path: str, sd: dict[str, np.ndarray]) -> None:
    import torch

    class M(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(torch.nn.Linear(512, 512, bias=False) for _ in sd)

        def forward(self, x):
            for m in self.layers:
                x = m(x)
            return x

    m = M()
    with torch.no_grad():
        for layer, v in zip(m.layers, sd.values(), strict=True):
            layer.weight.copy_(torch.from_numpy(v))
    torch.export.save(torch.export.export(m, (torch.randn(2, 512),)), path)


def write_npz(path: str, sd: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **sd)


FORMATS: list[tuple[str, str, Callable[[str, dict], None]]] = [
    ("GGUF (F32/F16/Q8_0)", "model.gguf", write_gguf),
    ("HDF5 chunked", "weights.h5", write_h5),
    ("HDF5 chunked gzip", "gz.h5", lambda p, sd: write_h5(p, sd, "gzip")),
    ("legacy torch", "legacy.pt", write_legacy),
    (".pt2 (torch.export)", "model.pt2", write_pt2),
    ("torch zip (reference)", "model.pt", write_torch_zip),
    ("compressed .npz", "weights.npz", write_npz),
]


def _bytes_layout(path: str, name: str | None = None) -> Layout:
    return Layout("bytes")


def second_version(work: str, name: str, write, opaque: bool, mb: int) -> tuple[float, int, float]:
    """(newly stored fraction of the second version, its size, seconds to commit it)."""
    d = os.path.join(work, "src")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    repo_path = os.path.join(work, "repo")
    shutil.rmtree(repo_path, ignore_errors=True)
    real = coralfs.ingest.layout_of
    if opaque:
        coralfs.ingest.layout_of = _bytes_layout
    try:
        r = Repository.init(repo_path)
        sd = _weights(mb)
        write(os.path.join(d, name), sd)
        r.commit_paths([d], "v1")
        write(os.path.join(d, name), _step(sd))
        t0 = time.perf_counter()
        st = r.commit_paths([d], "v2").stats
        secs = time.perf_counter() - t0
        r.close()
    finally:
        coralfs.ingest.layout_of = real
    return st.stored / st.logical, st.logical, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=16, help="MiB of fp32 weights per checkpoint")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="coralfs-bench-formats-")
    try:
        print(f"load: {os.getloadavg()[0]:.2f}; {args.mb} MiB of fp32 weights per checkpoint, second version "
              f"= every weight + N(0, 2e-5)")
        print("| format | file | regions | newly stored, before | after | commit s (after) |")
        print("|---|---|---|---|---|---|")
        for label, name, write in FORMATS:
            before, size, _ = second_version(work, name, write, True, args.mb)
            after, _, secs = second_version(work, name, write, False, args.mb)
            probe = os.path.join(work, "probe-" + name)
            write(probe, _weights(args.mb))
            lay = layout_of(probe)
            note = ""
            if name.endswith(".npz"):
                with zipfile.ZipFile(probe) as z:
                    note = f" ({sum(i.compress_type != zipfile.ZIP_STORED for i in z.infolist())} deflated members)"
            print(f"| {label} | {size / 2**20:.1f} MiB | {len(lay.regions)} ({lay.format}){note} | "
                  f"{before:.1%} | {after:.1%} | {secs:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
