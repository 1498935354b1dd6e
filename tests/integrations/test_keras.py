"""The Keras 3 callback (torch backend, no TensorFlow): checkpoints committed during fit,
every N epochs or when a monitored metric improves, with the epoch's metrics in the
commit, into a repository branch or through a writable mount."""

from __future__ import annotations

import os
import subprocess

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from coralfs import Repository  # noqa: E402
from coralfs.integrations.keras import CoralCheckpoint  # noqa: E402
from tests.conftest import PYTHON, REPO_ROOT, run_cli  # noqa: E402
from tests.formats.test_keras_format import keras_model  # noqa: E402
from tests.mount.conftest import mounted  # noqa: E402


def _data(n: int = 64):
    g = np.random.default_rng(0)
    return g.random((n, 8), dtype=np.float32), g.random((n, 4), dtype=np.float32)


def _history(repo: str, branch: str) -> list[tuple[str, dict]]:
    r = Repository.open(repo)
    try:
        return [(oid.hex(), c.metadata) for oid, c in r.log(branch)][::-1]
    finally:
        r.close()


def _kernel_of(repo: str, commit: str, tmp_path) -> np.ndarray:
    out = tmp_path / f"x-{commit[:8]}"
    run_cli("export", commit, str(out), repo=repo)
    return keras.saving.load_model(str(out / "model.keras")).layers[0].get_weights()[0]


def test_fit_commits_every_epoch_with_its_metrics(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    m = keras_model()
    x, y = _data()
    kernels = []

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels.append(m.layers[0].get_weights()[0].copy())

    cb = CoralCheckpoint(repo, every_n_epochs=1, branch="keras")
    h = m.fit(x, y, epochs=3, verbose=0, callbacks=[Keep(), cb])
    hist = _history(repo, "keras")
    assert len(hist) == 3 == len(cb.commits) and [c for c, _ in hist] == cb.commits
    for i, (commit, meta) in enumerate(hist):
        assert meta["epoch"] == i + 1 and meta["metrics"]["loss"] == pytest.approx(h.history["loss"][i])
        assert meta["keras"]["backend"] == "torch"
        assert np.array_equal(_kernel_of(repo, commit, tmp_path), kernels[i])
    r = Repository.open(repo)
    f = r.read_file(r.tree_of("keras").entries["model.keras"].file)
    assert f.format == "keras" and "/layers/dense/vars/0" in f.tensors()
    assert r.read_commit(r.resolve("keras~2")).parents == []  # a new branch starts with the first checkpoint
    r.close()
    assert "epoch 3" in run_cli("log", "keras", "--oneline", repo=repo).stdout


def test_every_n_epochs_and_weights_only(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    m = keras_model()
    x, y = _data()
    cb = CoralCheckpoint(repo, every_n_epochs=2, save_weights_only=True, message="e{epoch} loss {loss:.3f}")
    m.fit(x, y, epochs=5, verbose=0, callbacks=[cb])
    hist = _history(repo, "main")
    assert [meta["epoch"] for _, meta in hist] == [2, 4]
    r = Repository.open(repo)
    f = r.read_file(r.tree_of("HEAD").entries["model.weights.h5"].file)
    msg = r.read_commit(r.resolve("HEAD")).message
    r.close()
    assert f.format == "hdf5" and f.tensors() and msg.startswith("e4 loss ")


def test_monitor_commits_only_improvements(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    m = keras_model()
    cb = CoralCheckpoint(repo, monitor="val_loss", mode="min")
    cb.set_model(m)
    for epoch, v in enumerate([1.0, 2.0, 0.5, 0.5, 0.4]):
        cb.on_epoch_end(epoch, {"val_loss": v, "loss": 9.0})
    assert [meta["metrics"]["val_loss"] for _, meta in _history(repo, "main")] == [1.0, 0.5, 0.4]
    up = CoralCheckpoint(repo, monitor="acc", mode="max", branch="acc")
    up.set_model(m)
    for epoch, v in enumerate([0.1, 0.3, 0.2]):
        up.on_epoch_end(epoch, {"acc": v})
    up.on_epoch_end(3, {"loss": 1.0})          # the monitored metric is missing: nothing committed
    assert [meta["epoch"] for _, meta in _history(repo, "acc")] == [1, 2]
    with pytest.raises(Exception, match="mode must be"):
        CoralCheckpoint(repo, mode="best")


def test_through_a_writable_mount(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    m = keras_model()
    src = tmp_path / "src"
    src.mkdir()
    m.save(str(src / "model.keras"))
    run_cli("commit", str(src), "-m", "start", repo=repo)
    mp = str(tmp_path / "mnt")
    x, y = _data()
    with mounted(repo, mp, None, "--write", "--branch", "main"):
        cb = CoralCheckpoint(mount=mp)
        m.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
        assert len(cb.commits) == 2 and all(cb.commits)
    hist = _history(repo, "main")
    assert [meta.get("epoch") for _, meta in hist] == [None, 1, 2]
    assert hist[-1][0] == cb.commits[-1] and "loss" in hist[-1][1]["metrics"]


def test_importing_the_module_does_not_import_keras():
    code = "import sys, coralfs.integrations.keras as k; assert 'keras' not in sys.modules; print('ok')"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert p.stdout.strip() == "ok", p.stderr
    # and without a backend chosen, the callback picks torch (TensorFlow is not installed)
    code = ("from coralfs.integrations.keras import CoralCheckpoint; import keras; "
            "print(keras.backend.backend(), CoralCheckpoint.__name__)")
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert p.stdout.strip() == "torch CoralCheckpoint", p.stderr
