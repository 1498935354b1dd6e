"""ONNX models as a format: initializers (in the file or in external data) are typed
regions read from the protobuf wire format, so versions dedup and delta; files come back
byte-identical; malformed models get one line naming the file, nothing committed."""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from coralfs import Repository
from coralfs.api import Repository as ApiRepository
from coralfs.formats import FormatError, layout_of
from tests.conftest import fails, run_cli, sha
from tests.formats.test_malformed import _snapshot, fuzz_layouts
from tests.formats.wire import varint


def torch_model(width: int = 32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Linear(width, 4))


def export_torch(model: torch.nn.Module, path, x: torch.Tensor | None = None) -> torch.Tensor:
    """``model`` exported with torch.onnx (TorchScript exporter); returns the input used."""
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1)) if x is None else x
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    return x


def with_external(src, dst, location: str | None = None) -> None:
    """``src`` saved again with every tensor in one external data file."""
    m = onnx.load(str(src))
    onnx.save_model(m, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location or os.path.basename(str(dst)) + ".data", size_threshold=0)


def region_arrays(path, lay=None) -> dict[str, np.ndarray]:
    lay = lay or layout_of(str(path))
    data = open(path, "rb").read()
    return {r.name: np.frombuffer(data[r.offset:r.offset + r.length], {"F32": np.float32, "I64": np.int64}[r.dtype])
            .reshape(r.shape) for r in lay.regions}


def test_initializers_are_typed_regions_with_the_values_onnx_reads(tmp_path):
    m = torch_model()
    export_torch(m, tmp_path / "m.onnx")
    lay = layout_of(str(tmp_path / "m.onnx"))
    assert lay.format == "onnx"
    got = region_arrays(tmp_path / "m.onnx", lay)
    want = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    assert set(got) == set(want) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for k in want:
        assert got[k].shape == want[k].shape and np.array_equal(got[k], want[k])
    assert np.array_equal(got["0.weight"], m[0].weight.detach().numpy())


def test_constant_nodes_and_packed_float_data_are_regions(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    idx = np.array([2, 0], dtype=np.int64)
    init = helper.make_tensor("w", onnx.TensorProto.FLOAT, w.shape, w.ravel().tolist())  # float_data, packed
    const = helper.make_node("Constant", [], ["idx"], value=numpy_helper.from_array(idx, "c"))
    gather = helper.make_node("Gather", ["w", "idx"], ["y"])
    graph = helper.make_graph([const, gather], "g", [], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              initializer=[init])
    onnx.save(helper.make_model(graph), str(tmp_path / "c.onnx"))
    got = region_arrays(tmp_path / "c.onnx")
    assert np.array_equal(got["w"], w) and np.array_equal(got["idx"], idx)


def test_import_and_export_give_the_file_back_byte_identical(tmp_path):
    export_torch(torch_model(), tmp_path / "m.onnx")
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("import", "onnx", str(tmp_path / "m.onnx"), repo=repo)
    r = Repository.open(repo)
    f = r.read_file(r.tree_of("HEAD").entries["m.onnx"].file)
    assert f.format == "onnx" and set(f.tensors()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    meta = r.read_commit(r.resolve("HEAD")).metadata
    r.close()
    assert meta["import"] == "onnx" and meta["onnx"]["tensors"] == 4 and meta["onnx"]["producer"] == "pytorch"
    run_cli("export", "HEAD", str(tmp_path / "out"), repo=repo)
    assert sha(tmp_path / "out" / "m.onnx") == sha(tmp_path / "m.onnx")


def test_a_second_version_stores_only_what_changed(tmp_path):
    """Fine-tuning the head only: the next .onnx of the same model stores a small delta."""
    m = torch.nn.Sequential(torch.nn.Linear(16, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                            torch.nn.Linear(256, 4))
    src = tmp_path / "src"
    src.mkdir()
    x = export_torch(m, src / "model.onnx")
    r = ApiRepository.init(str(tmp_path / "repo"))
    first = r.commit_paths([str(src)], "v1")
    with torch.no_grad():
        m[4].weight.add_(0.01)
    export_torch(m, src / "model.onnx", x)
    second = r.commit_paths([str(src)], "v2")
    r.close()
    size = os.path.getsize(src / "model.onnx")
    assert first.stats.stored > size // 2            # the first version is stored whole (compressed)
    assert second.stats.logical == size
    assert second.stats.stored < size // 10, (second.stats.stored, size)


def test_a_directory_with_external_data_gives_the_data_file_regions(tmp_path):
    export_torch(torch_model(), tmp_path / "m.onnx")
    d = tmp_path / "d"
    d.mkdir()
    with_external(tmp_path / "m.onnx", d / "model.onnx")
    lay = layout_of(str(d / "model.onnx"))
    assert lay.regions == [] and list(lay.siblings) == ["model.onnx.data"]
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", str(d), "-m", "external", repo=repo)
    r = Repository.open(repo)
    entries = r.tree_of("HEAD").entries
    data = r.read_file(entries["model.onnx.data"].file)
    r.close()
    assert data.format == "onnx-data" and set(data.tensors()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    run_cli("export", "HEAD", str(tmp_path / "out"), repo=repo)
    for name in ("model.onnx", "model.onnx.data"):
        assert sha(tmp_path / "out" / name) == sha(d / name)
    # coralfs import onnx of a model whose data sits in a subdirectory keeps it there
    sub = tmp_path / "sub"
    (sub / "weights").mkdir(parents=True)
    with_external(tmp_path / "m.onnx", sub / "net.onnx", "weights/net.bin")
    run_cli("import", "onnx", str(sub / "net.onnx"), repo=repo)
    r = Repository.open(repo)
    entries = r.tree_of("HEAD").entries
    assert set(entries) == {"net.onnx", "weights/net.bin"}
    assert r.read_file(entries["weights/net.bin"].file).format == "onnx-data"
    r.close()


def test_a_data_file_committed_without_its_model_is_plain_bytes(tmp_path):
    export_torch(torch_model(), tmp_path / "m.onnx")
    with_external(tmp_path / "m.onnx", tmp_path / "e.onnx")
    assert layout_of(str(tmp_path / "e.onnx.data")).format == "bytes"


# -- malformed models -----------------------------------------------------------------------



def _model_with(tensor: onnx.TensorProto) -> bytes:
    graph = helper.make_graph([], "g", [], [], initializer=[tensor])
    return helper.make_model(graph).SerializeToString()


def _raw(name="w", dims=(4,), data=b"\0" * 16) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(dims))
    t.raw_data = data
    return t


def _external(location: str, offset: int = 0, length: int = 16) -> onnx.TensorProto:
    t = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[4])
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=k, value=v)
    return t


def _good() -> bytes:
    return _model_with(_raw())


def _lying_length() -> bytes:
    """A raw_data field whose length prefix claims more bytes than the file holds."""
    good = _good()
    i = good.index(b"\x4a\x10")  # field 9 (raw_data), 16 bytes
    return good[:i] + b"\x4a" + varint(1 << 30) + good[i + 2:]


MALFORMED = {
    "truncated.onnx": (lambda: _good()[:-9], "malformed ONNX|claims"),
    "lying-length.onnx": (_lying_length, "claims 1073741824 bytes"),
    "short-raw.onnx": (lambda: _model_with(_raw(data=b"\0" * 12)), "12 bytes of data for dims \\[4\\].*needs 16"),
    "negative-dim.onnx": (lambda: _model_with(_raw(dims=(-1,))), "bad dim -1"),
    "escape.onnx": (lambda: _model_with(_external("../../etc/passwd")), "escapes the model's directory"),
    "absolute.onnx": (lambda: _model_with(_external("/etc/passwd")), "escapes the model's directory"),
    "ext-length.onnx": (lambda: _model_with(_external("w.bin", length=8)), "external data length 8.*needs 16"),
    "twice.onnx": (lambda: helper.make_model(helper.make_graph([], "g", [], [], initializer=[_raw(), _raw()]))
                   .SerializeToString(), "appears twice"),
    "empty.onnx": (lambda: b"", "empty file"),
    "nograph.onnx": (lambda: b"\x08\x07", "no graph"),
    "junk.onnx": (lambda: b"\xff" * 40, "malformed ONNX"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_onnx_one_line_error_nothing_committed(tmp_path, name):
    make, pattern = MALFORMED[name]
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    good = tmp_path / "good"
    good.mkdir()
    (good / "ok.onnx").write_bytes(_good())
    run_cli("commit", str(good), "-m", "good", repo=repo)
    before = _snapshot(repo)
    src = tmp_path / "src"
    src.mkdir()
    (src / "fine.onnx").write_bytes(_good())
    (src / name).write_bytes(make())
    err = fails(repo, "commit", str(src), "-m", "bad")
    assert name in err and "nothing was committed" in err and re.search(pattern, err), err
    err = fails(repo, "import", "onnx", str(src / name))
    assert name in err and re.search(pattern, err), err
    assert _snapshot(repo) == before


def test_external_data_that_lies_about_its_file(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "m.onnx").write_bytes(_model_with(_external("w.bin", offset=8)))
    (d / "w.bin").write_bytes(b"\0" * 16)  # offset 8 + 16 bytes runs past its end
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    err = fails(repo, "commit", str(d), "-m", "bad")
    assert "m.onnx (external data w.bin)" in err and "past the end" in err and "nothing was committed" in err
    err = fails(repo, "import", "onnx", str(d / "m.onnx"))
    assert "m.onnx" in err and "past its end" in err
    os.unlink(d / "w.bin")
    err = fails(repo, "import", "onnx", str(d / "m.onnx"))
    assert "external data file 'w.bin'" in err and "missing" in err
    assert not os.path.exists(os.path.join(repo, "refs", "heads", "main"))


def test_fuzz_onnx_reader_never_crashes(tmp_path):
    export_torch(torch_model(8), tmp_path / "seed.onnx")
    seed = (tmp_path / "seed.onnx").read_bytes()
    path = str(tmp_path / "f.onnx")

    fuzz_layouts(path, seed)


def test_onnx_truncations_are_errors_or_valid_layouts(tmp_path):
    export_torch(torch_model(8), tmp_path / "seed.onnx")
    full = (tmp_path / "seed.onnx").read_bytes()
    for n in list(range(0, len(full), max(1, len(full) // 60))) + [len(full) - 1]:
        q = tmp_path / f"t{n}.onnx"
        q.write_bytes(full[:n])
        try:
            lay = layout_of(str(q))
        except FormatError as e:
            assert f"t{n}.onnx" in str(e) and "\n" not in str(e)
            continue
        for r in lay.regions:
            assert r.offset + r.length <= n


def test_long_varints_and_groups_are_refused(tmp_path):
    p = tmp_path / "v.onnx"
    p.write_bytes(b"\x08" + b"\xff" * 11)  # a varint of 11 bytes
    with pytest.raises(FormatError, match="varint longer than 10 bytes"):
        layout_of(str(p))
    p.write_bytes(struct.pack("B", 3 << 3 | 3) + b"\0")  # wire type 3 (groups)
    with pytest.raises(FormatError, match="wire type 3"):
        layout_of(str(p))


def test_a_model_of_many_tiny_initializers_packs_into_few_objects(tmp_path):
    """30,000 initializers of 4 floats: read in one pass, stored as a few packed chunks, and
    a diff names the one that changed."""
    src = tmp_path / "ck"
    src.mkdir()
    vals = np.arange(30_000 * 4, dtype=np.float32).reshape(30_000, 4)

    def save(v) -> None:
        inits = [numpy_helper.from_array(v[i], f"t.{i}") for i in range(len(v))]
        onnx.save(helper.make_model(helper.make_graph([], "g", [], [], initializer=inits)), str(src / "m.onnx"))

    save(vals)
    r = ApiRepository.init(str(tmp_path / "repo"))
    r.commit_paths([str(src)], "one")
    objects = sum(len(fs) for _, _, fs in os.walk(os.path.join(r.path, "objects")))
    assert objects < 40
    f = r.read_file(r.tree_of("HEAD").entries["m.onnx"].file)
    assert len(f.tensors()) == 30_000
    vals[123] += 1
    save(vals)
    r.commit_paths([str(src)], "two")
    (ch,) = r.diff("HEAD~1", "HEAD")
    assert [(t.name, t.status, t.dtype, t.shape) for t in ch.tensors] == [("t.123", "changed", "F32", (4,))]
    r.export("HEAD", str(tmp_path / "out"))
    r.close()
    assert sha(tmp_path / "out" / "m.onnx") == sha(src / "m.onnx")


def test_import_does_not_follow_a_data_file_that_is_a_link(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"\0" * 16)
    (d / "m.onnx").write_bytes(_model_with(_external("w.bin")))
    os.symlink(secret, d / "w.bin")
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    err = fails(repo, "import", "onnx", str(d / "m.onnx"))
    assert "'w.bin' is a symbolic link" in err and "nothing was committed" in err
    assert not os.path.exists(os.path.join(repo, "refs", "heads", "main"))
