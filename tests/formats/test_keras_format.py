"""Keras 3 ``.keras`` archives as a format: the weights h5 that Keras stores uncompressed
inside the zip is read in place, its datasets typed regions with the values Keras saved;
a re-zipped (deflated) archive is stored as it is; malformed archives get one line."""

from __future__ import annotations

import io
import os
import re
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from coralfs import Repository  # noqa: E402
from coralfs.api import Repository as ApiRepository  # noqa: E402
from coralfs.formats import layout_of  # noqa: E402
from tests.conftest import fails, run_cli, sha  # noqa: E402
from tests.formats.test_malformed import _snapshot, fuzz_layouts  # noqa: E402


def keras_model(seed: int = 0, width: int = 16, inputs: int = 8) -> keras.Model:
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(width, activation="relu"), keras.layers.Dense(4)])
    m.compile("adam", "mse")
    return m


def test_keras_stores_its_weights_uncompressed_and_they_are_regions(tmp_path):
    m = keras_model()
    path = tmp_path / "m.keras"
    m.save(str(path))
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("model.weights.h5").compress_type == zipfile.ZIP_STORED
    lay = layout_of(str(path))
    assert lay.format == "keras"
    data = path.read_bytes()
    got = {r.name: np.frombuffer(data[r.offset:r.offset + r.length], np.float32).reshape(r.shape)
           for r in lay.regions if r.dtype == "F32" and r.name.startswith("/layers/")}
    kernel, bias = m.layers[0].get_weights()
    assert np.array_equal(got["/layers/dense/vars/0"], kernel) and np.array_equal(got["/layers/dense/vars/1"], bias)


def test_a_deflated_archive_is_stored_whole_and_comes_back(tmp_path):
    keras_model().save(str(tmp_path / "m.keras"))
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(tmp_path / "m.keras") as zi, \
            zipfile.ZipFile(src / "z.keras", "w", compression=zipfile.ZIP_DEFLATED) as zo:
        for i in zi.infolist():
            zo.writestr(i.filename, zi.read(i))
    lay = layout_of(str(src / "z.keras"))
    assert lay.format == "keras" and lay.regions == []
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", str(src), "-m", "z", repo=repo)
    run_cli("export", "HEAD", str(tmp_path / "out"), repo=repo)
    assert sha(tmp_path / "out" / "z.keras") == sha(src / "z.keras")


def test_versions_of_a_keras_file_dedup_and_come_back_byte_identical(tmp_path):
    m = keras_model(width=512, inputs=256)  # a 512 KiB kernel: stored as a tensor, not packed
    src = tmp_path / "src"
    src.mkdir()
    m.save(str(src / "model.keras"))
    r = ApiRepository.init(str(tmp_path / "repo"))
    r.commit_paths([str(src)], "one")
    first = (src / "model.keras").read_bytes()
    w = m.layers[1].get_weights()
    m.layers[1].set_weights([w[0] + 0.01, w[1]])   # only the head changes
    m.save(str(src / "model.keras"))
    second = r.commit_paths([str(src)], "two")
    size = os.path.getsize(src / "model.keras")
    assert second.stats.stored < size // 10, (second.stats.stored, size)
    r.export("HEAD~1", str(tmp_path / "a"))
    r.export("HEAD", str(tmp_path / "b"))
    r.close()
    assert (tmp_path / "a" / "model.keras").read_bytes() == first
    assert sha(tmp_path / "b" / "model.keras") == sha(src / "model.keras")


def _archive(members: dict[str, bytes], stored: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


def _seed(tmp_path) -> bytes:
    keras_model(width=4).save(str(tmp_path / "seed.keras"))
    return (tmp_path / "seed.keras").read_bytes()


def _lying_size(seed: bytes) -> bytes:
    """The weights member's local header claims more bytes than the archive holds."""
    out = bytearray(seed)
    i = out.index(b"model.weights.h5") - 30
    out[i + 18:i + 26] = (1 << 30).to_bytes(4, "little") * 2
    j = out.index(b"model.weights.h5", i + 40) - 46
    out[j + 20:j + 28] = (1 << 30).to_bytes(4, "little") * 2
    return bytes(out)


MALFORMED = {
    "truncated.keras": (lambda s: s[: len(s) // 2], "not a readable zip"),
    "lying.keras": (_lying_size, "runs past the end|not a readable zip|malformed"),
    "noconfig.keras": (lambda s: _archive({"model.weights.h5": b"\x89HDF\r\n\x1a\n"}), "no config.json"),
    "badh5.keras": (lambda s: _archive({"config.json": b"{}", "model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 64}),
                    "model.weights.h5.*HDF5"),
    "traversal.keras": (lambda s: _archive({"config.json": b"{}", "../../x": b"1"}), "escapes the archive"),
    "notzip.keras": (lambda s: b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "not a readable zip"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_keras_one_line_error_nothing_committed(tmp_path, name):
    make, pattern = MALFORMED[name]
    seed = _seed(tmp_path)
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    good = tmp_path / "good"
    good.mkdir()
    (good / "ok.keras").write_bytes(seed)
    run_cli("commit", str(good), "-m", "good", repo=repo)
    before = _snapshot(repo)
    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_bytes(make(seed))
    err = fails(repo, "commit", str(src), "-m", "bad")
    assert name in err and "nothing was committed" in err and re.search(pattern, err), err
    err = fails(repo, "import", "keras", str(src / name))
    assert name in err and re.search(pattern, err), err
    assert _snapshot(repo) == before


def test_import_keras_records_its_version_and_class(tmp_path):
    keras_model().save(str(tmp_path / "m.keras"))
    keras_model().save_weights(str(tmp_path / "m.weights.h5"))
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("import", "keras", str(tmp_path / "m.keras"), repo=repo)
    run_cli("import", "keras", str(tmp_path / "m.weights.h5"), repo=repo)
    r = Repository.open(repo)
    one = r.read_commit(r.resolve("HEAD~1")).metadata
    two = r.read_commit(r.resolve("HEAD")).metadata
    f = r.read_file(r.tree_of("HEAD~1").entries["m.keras"].file)
    r.close()
    assert one["import"] == "keras" and one["keras"]["keras_version"] == keras.__version__
    assert one["keras"]["class_name"] == "Sequential" and f.format == "keras" and len(f.tensors()) >= 4
    assert two["keras"]["weights"] >= 4
    err = fails(repo, "import", "keras", str(tmp_path / "m.keras") + "x")
    assert "no such file" in err


def test_fuzz_keras_reader_never_crashes(tmp_path):
    seed = _seed(tmp_path)
    path = str(tmp_path / "f.keras")

    fuzz_layouts(path, seed)
