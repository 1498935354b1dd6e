"""Keras 3: the ``CoralCheckpoint`` callback and `coralfs import keras FILE`.

``CoralCheckpoint`` is the Keras counterpart of saving a PyTorch checkpoint and committing
it: at the end of every N-th epoch (or only when a monitored metric improves) it saves the
model (``.keras``, or ``.weights.h5`` with ``save_weights_only``) and commits it, with the
epoch's logs as the commit's ``metrics`` (what `coralfs experiment` and `show` read). It
commits into the repository (a fixed file name in a fresh tree, so each version is a delta
of the last), or saves into a writable mount and commits the mount. Keras runs on the torch
backend, so no TensorFlow is needed: with no backend chosen and no TensorFlow installed,
KERAS_BACKEND=torch is set before Keras is first imported.

Importing this module does not import Keras: the callback class is made on first use
(`coralfs import keras` reads the file with coralfs's own readers only).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import zipfile

from ..formats import FormatError, hdf5
from ..formats import keras as keras_format
from ..objects.errors import CoralError
from . import ImportSource, need

log = logging.getLogger(__name__)

MAX_JSON = 16 << 20  # config.json / metadata.json are read only up to this


# -- import ---------------------------------------------------------------------------------

def prepare_import(path: str) -> ImportSource:
    """A ``.keras`` archive or a ``.weights.h5`` / ``.h5`` file, validated by coralfs's
    readers; the archive's Keras version and model class go into the commit's metadata."""
    if not os.path.isfile(path):
        raise CoralError(f"{path}: not a file (give the .keras or .weights.h5 file)")
    size = os.path.getsize(path)
    name = os.path.basename(path)
    if name.endswith(".keras"):
        keras_format.parse(path, size)
        info = _archive_info(path)
    elif name.endswith((".h5", ".hdf5")):
        with open(path, "rb") as f:
            if f.read(8) != hdf5.MAGIC:
                raise FormatError(path, "not an HDF5 file (bad signature)")
        lay = hdf5.parse(path, size)
        info = {"weights": len(lay.regions)}
    else:
        raise CoralError(f"{path}: a Keras import takes a .keras archive or a .weights.h5 file")
    return ImportSource([path], {"keras": info}, name)


def _archive_info(path: str) -> dict:
    out: dict = {}
    with zipfile.ZipFile(path) as zf:
        for member, keys in (("metadata.json", ("keras_version", "date_saved")),
                             ("config.json", ("class_name", "module"))):
            try:
                with zf.open(member) as m:
                    doc = json.loads(m.read(MAX_JSON + 1)[:MAX_JSON].decode("utf-8"))
            except (KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as e:
                raise FormatError(f"{path}:{member}", f"not readable JSON ({e})") from None
            if isinstance(doc, dict):
                out |= {k: doc[k] for k in keys if isinstance(doc.get(k), str)}
    return out


# -- the callback ---------------------------------------------------------------------------

def _import_keras():
    if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ:
        import importlib.util
        if importlib.util.find_spec("tensorflow") is None:
            os.environ["KERAS_BACKEND"] = "torch"  # Keras 3 on torch: no TensorFlow needed
    return need("keras", "Keras", "keras")


def _finite(logs: dict | None) -> dict[str, float]:
    out = {}
    for k, v in (logs or {}).items():
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out[str(k)] = x
    return out


def _make_callback():
    keras = _import_keras()

    class CoralCheckpoint(keras.callbacks.Callback):
        """Commit a checkpoint every ``every_n_epochs`` epochs (with ``monitor``: only when
        that metric improved, ``mode`` 'min' or 'max').

        ``repo``: the repository (default $CORALFS_REPO, else the one around the current
        directory); ``branch``: the branch to commit to (default HEAD's; one that does not
        exist yet starts with the first checkpoint); ``mount``: a writable mount to save
        into and commit instead (then ``repo`` and ``branch`` are the mount's).
        ``filename``: the checkpoint's name in the tree (``model.keras``, or
        ``model.weights.h5`` with ``save_weights_only``). ``message``: formatted with
        ``epoch`` and the logs. ``metadata``: added to every commit. ``commits`` lists the
        commits made (hex ids).
        """

        def __init__(self, repo: str | None = None, every_n_epochs: int = 1, monitor: str | None = None,
                     mode: str = "min", branch: str | None = None, mount: str | None = None, *,
                     filename: str | None = None, save_weights_only: bool = False,
                     message: str = "epoch {epoch}", metadata: dict | None = None) -> None:
            super().__init__()
            if every_n_epochs < 1:
                raise CoralError(f"every_n_epochs must be at least 1, not {every_n_epochs}")
            if mode not in ("min", "max"):
                raise CoralError(f"mode must be 'min' or 'max', not {mode!r}")
            if mount is not None and branch is not None:
                raise CoralError("a writable mount commits to the branch it was mounted with: drop branch=")
            self.filename = filename or ("model.weights.h5" if save_weights_only else "model.keras")
            suffix = ".weights.h5" if save_weights_only else ".keras"
            if not self.filename.endswith(suffix) or "/" in self.filename:
                raise CoralError(f"filename {self.filename!r} must be a plain name ending in {suffix}")
            if mount is None:
                from ..objects.repository import Repository
                repo = repo or os.environ.get("CORALFS_REPO") or Repository.discover(".")
            self.repo, self.every, self.monitor, self.mode = repo, every_n_epochs, monitor, mode
            self.branch, self.mount, self.weights_only = branch, mount, save_weights_only
            self.message, self.extra = message, dict(metadata or {})
            self.best: float | None = None
            self.commits: list[str] = []
            self._warned = False

        def _improved(self, logs: dict[str, float]) -> bool:
            if self.monitor is None:
                return True
            value = logs.get(self.monitor)
            if value is None:
                if not self._warned:
                    log.warning("CoralCheckpoint: metric %r is not in the epoch's logs (%s): nothing committed",
                                self.monitor, ", ".join(sorted(logs)) or "none")
                    self._warned = True
                return False
            if self.best is not None and (value >= self.best if self.mode == "min" else value <= self.best):
                return False
            self.best = value
            return True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            n = epoch + 1
            if n % self.every:
                return
            metrics = _finite(logs)
            if not self._improved(metrics):
                return
            self.commits.append(self.commit_now(n, metrics))

        def _save(self, path: str) -> None:
            if self.weights_only:
                self.model.save_weights(path)
            else:
                self.model.save(path)

        def commit_now(self, epoch: int, metrics: dict[str, float]) -> str:
            """Save the model and commit it; returns the commit (hex)."""
            from ..workflow.provenance import record
            meta = {**self.extra, "epoch": epoch, "metrics": metrics,
                    "keras": {"version": keras.__version__, "backend": keras.backend.backend()},
                    "provenance": record()}
            try:
                message = self.message.format(epoch=epoch, **metrics)
            except (KeyError, IndexError, ValueError):
                message = f"epoch {epoch}"
            if self.mount is not None:
                from ..api import commit_mount
                self._save(os.path.join(self.mount, self.filename))
                got = commit_mount(self.mount, message, metadata=meta)
                return got.get("commit") or ""
            from ..api import Repository
            stage = tempfile.mkdtemp(prefix="coralfs-keras-")
            try:
                self._save(os.path.join(stage, self.filename))
                r = Repository.open(self.repo)
                try:
                    res = r.commit_paths([stage], message, branch=self.branch, metadata=meta)
                finally:
                    r.close()
            finally:
                shutil.rmtree(stage, ignore_errors=True)
            log.info("CoralCheckpoint: epoch %d committed as %s", epoch, res.commit.hex()[:12])
            return res.commit.hex()

    return CoralCheckpoint


def __getattr__(name: str):
    if name == "CoralCheckpoint":
        cls = _make_callback()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


__all__ = ["CoralCheckpoint", "prepare_import"]  # noqa: F822 - CoralCheckpoint is made on first access
