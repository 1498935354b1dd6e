"""Generate the TensorFlow tensor-bundle fixtures under tests/fixtures/tf/ with real TensorFlow.

TensorFlow is not a coralfs dependency and the tests never import it: they read the files
this script wrote once, which are committed. Run it in a throwaway virtualenv:

    python3.11 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu
    /tmp/tfvenv/bin/python scripts/make_tf_fixtures.py [OUT_DIR]

It writes, each in two versions (v2 = v1 with a few rows of one weight, a bias and the
step changed): a SavedModel (``savedmodel_v1``/``savedmodel_v2``), a plain checkpoint
(``ckpt_v1``/``ckpt_v2``: tf.train.Checkpoint) and a checkpoint split over several data
shards (``sharded_v1``/``sharded_v2``), plus ``expected.npz``: every numeric tensor's value in
``ckpt_*``, keyed ``ckpt_<version>/<bundle key>``, for the tests to compare against.
"""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import tensorflow as tf

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tf")


class Net(tf.Module):
    def __init__(self, rng: np.random.Generator, width: int = 128) -> None:
        super().__init__()
        # The SavedModel's w1 is 128 KiB: tensors under 64 KiB are packed, not delta-encoded.
        self.w1 = tf.Variable(rng.standard_normal((64, width)).astype(np.float32), name="w1")
        self.b1 = tf.Variable(np.zeros(width, np.float32), name="b1")
        self.w2 = tf.Variable(rng.standard_normal((width, 32)).astype(np.float16), name="w2")
        self.emb = tf.Variable(rng.standard_normal((100, 16)).astype(np.float64), name="emb")
        self.step = tf.Variable(np.int64(7), name="step")
        self.ids = tf.Variable(np.arange(24, dtype=np.int32).reshape(4, 6), name="ids")
        self.mask = tf.Variable(rng.random(10) > 0.5, name="mask")
        self.bw = tf.Variable(tf.cast(rng.standard_normal((8, 8)).astype(np.float32), tf.bfloat16), name="bw")
        self.label = tf.Variable("coralfs fixture", name="label")

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
    def __call__(self, x):
        h = tf.nn.relu(x @ self.w1 + self.b1)
        return tf.cast(h, tf.float16) @ self.w2


def changed(net: Net) -> None:
    """The second version: a fine-tuning step touched a few rows and the step count."""
    w1 = net.w1.numpy()
    w1[:4] += 0.01
    net.w1.assign(w1)
    net.b1.assign(net.b1.numpy() + 0.5)
    net.step.assign(8)


def bundle_values(prefix: str) -> dict[str, np.ndarray]:
    """Every numeric tensor of the bundle at ``prefix``, by its key, as TensorFlow reads it
    (bfloat16 widened to float32: numpy has no bfloat16)."""
    out = {}
    for name, dtype in tf.train.load_checkpoint(prefix).get_variable_to_dtype_map().items():
        if dtype == tf.string:
            continue
        (t,) = tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=[name], shape_and_slices=[""], dtypes=[dtype])
        v = t.numpy()
        out[name] = v.astype(np.float32) if v.dtype.name == "bfloat16" else v
    return out


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    for d in os.listdir(OUT):
        p = os.path.join(OUT, d)
        if os.path.isdir(p):
            shutil.rmtree(p)
    expected: dict[str, np.ndarray] = {}
    net, big = Net(np.random.default_rng(17)), Net(np.random.default_rng(17), width=512)
    for version in ("v1", "v2"):
        if version == "v2":
            changed(net)
            changed(big)
        tf.saved_model.save(big, os.path.join(OUT, f"savedmodel_{version}"))
        ck = tf.train.Checkpoint(model=net)
        ck.write(os.path.join(OUT, f"ckpt_{version}", "ckpt"))
        opts = tf.train.CheckpointOptions(
            experimental_sharding_callback=tf.train.experimental.MaxShardSizePolicy(max_shard_size=20_000))
        ck.write(os.path.join(OUT, f"sharded_{version}", "ckpt"), options=opts)
        # sharded_* holds the same keys and values as ckpt_* (TensorFlow 2.21's RestoreV2
        # refuses its float16 tensor there): the tests compare it with ckpt_*.
        for k, v in bundle_values(os.path.join(OUT, f"ckpt_{version}", "ckpt")).items():
            expected[f"ckpt_{version}/{k}"] = v
    np.savez(os.path.join(OUT, "expected.npz"), **expected)
    for root, _dirs, files in os.walk(OUT):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"{os.path.getsize(p):8d} {os.path.relpath(p, OUT)}")


if __name__ == "__main__":
    main()
