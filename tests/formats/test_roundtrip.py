"""Real checkpoints, committed and exported byte-for-byte, loaded back by their libraries."""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import h5py
import numpy as np
import torch
from safetensors.torch import load_file

from coralfs.formats import layout_of
from tests.conftest import sha, tree_sha


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def _train_checkpoint(path, steps=3):
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    for _ in range(steps):
        loss = net(torch.randn(8, 64)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": steps, "bf16": torch.randn(16, 16).to(torch.bfloat16)}, path)
    return net


def _h5(path, scale=1.0):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["framework"] = "keras"
        g = f.create_group("model_weights/dense")
        g.create_dataset("kernel", data=(rng.standard_normal((256, 128)) * 0.05 * scale).astype(np.float32))
        g.create_dataset("bias", data=np.arange(128, dtype=np.float64))
        g["kernel"].attrs["units"] = 128
        f.create_dataset("chunked", data=rng.standard_normal((64, 64)).astype(np.float32), chunks=(16, 16),
                         compression="gzip")
        f.create_dataset("ints", data=np.arange(1000, dtype=np.int16))
        f.create_dataset("scalar", data=3.5)


def test_minilm_directory_roundtrip(repo, minilm, tmp_path):
    r = repo.commit_paths([minilm], "MiniLM")
    assert len(r.files) >= 10
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert tree_sha(out) == tree_sha(minilm)
    a = load_file(os.path.join(minilm, "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lay = layout_of(os.path.join(minilm, "model.safetensors"))
    assert lay.format == "safetensors" and len(lay.regions) == 104


def test_torch_state_dict_and_training_checkpoint(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    net = _net()
    torch.save(net.state_dict(), src / "pytorch_model.bin")
    _train_checkpoint(src / "checkpoint.pt")
    lay = layout_of(str(src / "checkpoint.pt"))
    assert lay.format == "torch"
    dts = {r.dtype for r in lay.regions}
    assert {"F32", "BF16"} <= dts, dts
    repo.commit_paths([str(src)], "torch")
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert tree_sha(out) == tree_sha(src)
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    ck0 = torch.load(src / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 3 and ck["scheduler"] == ck0["scheduler"]
    for k in ck0["model"]:
        assert torch.equal(ck["model"][k], ck0["model"][k])
    for s, s0 in zip(ck["optimizer"]["state"].values(), ck0["optimizer"]["state"].values()):
        assert torch.equal(s["exp_avg"], s0["exp_avg"]) and torch.equal(s["exp_avg_sq"], s0["exp_avg_sq"])
    m = torch.load(out / "checkpoint.pt", weights_only=True, mmap=True)
    assert torch.equal(m["bf16"], ck0["bf16"])


def test_h5py_roundtrip(repo, tmp_path):
    src = tmp_path / "h5"
    src.mkdir()
    _h5(src / "weights.h5")
    lay = layout_of(str(src / "weights.h5"))
    names = {r.name for r in lay.regions}
    assert {"/model_weights/dense/kernel", "/model_weights/dense/bias", "/ints"} <= names
    assert "/chunked" not in names  # compressed: literal bytes
    repo.commit_paths([str(src)], "h5")
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert sha(out / "weights.h5") == sha(src / "weights.h5")
    with h5py.File(out / "weights.h5") as f, h5py.File(src / "weights.h5") as g:
        assert f.attrs["framework"] == "keras"
        assert f["model_weights/dense/kernel"].attrs["units"] == 128
        for k in ("model_weights/dense/kernel", "model_weights/dense/bias", "chunked", "ints", "scalar"):
            np.testing.assert_array_equal(f[k][()], g[k][()])


def test_npy_npz_roundtrip(repo, tmp_path):
    src = tmp_path / "np"
    src.mkdir()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((100, 50)).astype(np.float32)
    np.save(src / "a.npy", a)
    np.save(src / "fortran.npy", np.asfortranarray(a.astype(np.float64)))
    np.save(src / "big_endian.npy", a.astype(">f4"))
    np.save(src / "objects.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    np.savez(src / "bundle.npz", w=a, i=np.arange(10), b=np.array([True, False]))
    np.savez_compressed(src / "small.npz", w=a)
    assert layout_of(str(src / "a.npy")).regions[0].dtype == "F32"
    lay = layout_of(str(src / "bundle.npz"))
    assert lay.format == "npz" and {r.name for r in lay.regions} == {"w", "i", "b"}
    repo.commit_paths([str(src)], "numpy")
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert tree_sha(out) == tree_sha(src)
    np.testing.assert_array_equal(np.load(out / "a.npy", mmap_mode="r"), a)
    np.testing.assert_array_equal(np.load(out / "big_endian.npy"), a)
    with np.load(out / "bundle.npz") as z:
        np.testing.assert_array_equal(z["w"], a)


def test_delta_encoding_on_pt_series(repo, tmp_path):
    d = tmp_path / "pt"
    d.mkdir()
    torch.manual_seed(0)
    sd = {f"layer{i}.weight": torch.randn(256, 256) * 0.05 for i in range(8)}
    torch.save(sd, d / "model.pt")
    first = repo.commit_paths([str(d)], "v1").stats
    sd2 = {k: v + torch.randn_like(v) * 1e-5 for k, v in sd.items()}
    torch.save(sd2, d / "model.pt")
    second = repo.commit_paths([str(d)], "v2").stats
    assert set(second.codecs) & {"xor", "sub", "subs", "sparse"}, second.codecs
    assert second.stored < 0.6 * first.stored, (second.stored, first.stored)
    out = tmp_path / "out"
    repo.export("main", str(out))
    got = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(got[k], sd2[k]) for k in sd2)


def test_delta_encoding_on_h5_series(repo, tmp_path):
    d = tmp_path / "h5s"
    d.mkdir()
    _h5(d / "w.h5", 1.0)
    first = repo.commit_paths([str(d)], "v1").stats
    with h5py.File(d / "w.h5", "r+") as f:  # a training step updates the weights in place
        k = f["model_weights/dense/kernel"]
        k[...] = k[()] + np.float32(1e-6)
    second = repo.commit_paths([str(d)], "v2").stats
    assert set(second.codecs) & {"xor", "sub", "subs", "sparse"}, second.codecs
    assert second.stored < 0.6 * first.stored, (second.stored, first.stored)
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert sha(out / "w.h5") == sha(d / "w.h5")


def test_export_include_rewrites_safetensors(repo, minilm, tmp_path):
    repo.commit_paths([minilm], "MiniLM")
    out = tmp_path / "sub"
    repo.export("main", str(out), include=["encoder.layer.0.*"])
    sub = load_file(str(out / "model.safetensors"))
    full = load_file(os.path.join(minilm, "model.safetensors"))
    assert sub and all(k.startswith("encoder.layer.0.") for k in sub)
    assert len(sub) == sum(1 for k in full if k.startswith("encoder.layer.0."))
    assert all(torch.equal(sub[k], full[k]) for k in sub)
    assert os.path.getsize(out / "model.safetensors") < os.path.getsize(os.path.join(minilm, "model.safetensors")) / 4
    # other files are unchanged
    assert sha(out / "config.json") == sha(os.path.join(minilm, "config.json"))


def test_generic_large_file_dedups_shifted_content(repo, tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    blob = np.random.default_rng(0).integers(0, 256, 12 << 20, dtype=np.uint8).tobytes()
    (d / "optimizer.state").write_bytes(blob)
    repo.commit_paths([str(d)], "v1")
    (d / "optimizer.state").write_bytes(b"inserted header" + blob)
    st = repo.commit_paths([str(d)], "v2").stats
    assert st.chunks_dedup >= 5, st  # content-defined chunks survive an insertion
    out = tmp_path / "o"
    repo.export("main", str(out))
    assert (out / "optimizer.state").read_bytes() == b"inserted header" + blob


def test_zip_without_pickle_or_npy_is_kept_exactly(repo, tmp_path):
    d = tmp_path / "z"
    d.mkdir()
    with zipfile.ZipFile(d / "misc.zip", "w") as z:
        z.writestr("a.txt", "hello")
    repo.commit_paths([str(d)], "zip")
    out = tmp_path / "o"
    repo.export("main", str(out))
    assert sha(out / "misc.zip") == sha(d / "misc.zip")
    shutil.rmtree(out)


def test_byte_order_and_fortran_order_never_mislabel_views(repo, tmp_path):
    from coralfs.fs.readonly.vfs import npy_header
    src = tmp_path / "bo"
    src.mkdir()
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(src / "big.npy", a.astype(">f4"))
    np.save(src / "fortran.npy", np.asfortranarray(a))
    with h5py.File(src / "be.h5", "w") as f:
        f.create_dataset("w", data=a.astype(">f8"))
    big = layout_of(str(src / "big.npy")).regions[0]
    assert big.dtype == "B4"  # opaque: never read as little-endian floats
    fort = layout_of(str(src / "fortran.npy")).regions[0]
    assert fort.dtype == "F32" and fort.shape == (12,)  # flat: no transposed view
    be = layout_of(str(src / "be.h5")).regions[0]
    assert be.dtype == "B8"
    repo.commit_paths([str(src)], "byte orders")
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert tree_sha(out) == tree_sha(src)
    # a flat view of the Fortran array holds its column-major elements, correctly typed
    hdr = npy_header(fort.dtype, fort.shape)
    raw = (src / "fortran.npy").read_bytes()[fort.offset:fort.offset + fort.length]
    view = np.load(io.BytesIO(hdr + raw))
    np.testing.assert_array_equal(view, a.flatten(order="F"))
