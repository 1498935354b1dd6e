"""Newly stored bytes of the second version of an .onnx and a .keras model: read as their
format (tensor regions, delta-encoded) vs the same bytes stored as a plain file (what
coralfs did before these readers). Two kinds of second version: one SGD step on every
weight (a fine-tune step), and a change of the last layer only (head fine-tuning).

    flock /work/notes/bench.lock PYTHONPATH=$PWD .venv/bin/python scripts/bench_onnx_keras.py [--width 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore")


def _stored(work: str, name: str, versions: list[bytes]) -> list[int]:
    """Newly stored bytes of each version committed at ``name`` in a fresh repository."""
    from coralfs.api import Repository
    repo = os.path.join(work, f"repo-{name}")
    src = os.path.join(work, f"src-{name}")
    os.makedirs(src)
    r = Repository.init(repo)
    out = []
    try:
        for data in versions:
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
            out.append(r.commit_paths([src], "v").stats.stored)
    finally:
        r.close()
    return out


def onnx_versions(work: str, width: int, head_only: bool) -> list[bytes]:
    import torch
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                            torch.nn.ReLU(), torch.nn.Linear(width, 16))
    x = torch.randn(8, width)
    out = []
    for step in range(2):
        p = os.path.join(work, f"m{step}.onnx")
        torch.onnx.export(m, (x,), p, input_names=["x"], output_names=["y"], dynamo=False)
        out.append(open(p, "rb").read())
        params = m[4].parameters() if head_only else m.parameters()
        opt = torch.optim.SGD(params, lr=1e-3)
        m(x).square().mean().backward()
        opt.step()
        m.zero_grad()
    return out


def keras_versions(work: str, width: int, head_only: bool) -> list[bytes]:
    import keras
    import numpy as np
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width, activation="relu"),
                          keras.layers.Dense(width, activation="relu"), keras.layers.Dense(16)])
    if head_only:
        for layer in m.layers[:-1]:
            layer.trainable = False
    m.compile(keras.optimizers.SGD(1e-3), "mse")
    g = np.random.default_rng(0)
    x, y = g.random((32, width), dtype=np.float32), g.random((32, 16), dtype=np.float32)
    out = []
    for step in range(2):
        p = os.path.join(work, f"k{step}-{head_only}.keras")
        m.save(p)
        out.append(open(p, "rb").read())
        m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1024)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-onnx-keras-")
    try:
        print(f"{'model':<8} {'second version':<16} {'size':>9} {'as format':>10} {'as plain file':>14}")
        for kind, make, ext in (("onnx", onnx_versions, ".onnx"), ("keras", keras_versions, ".keras")):
            for head in (False, True):
                vs = make(work, args.width, head)
                fmt = _stored(work, f"{kind}-{head}{ext}", vs)[1]
                plain = _stored(work, f"{kind}-{head}{ext}.raw", vs)[1]
                size = len(vs[1])
                label = "head only" if head else "all weights"
                print(f"{kind:<8} {label:<16} {size / 2**20:>7.1f}MiB {fmt / size:>9.1%} {plain / size:>13.1%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
