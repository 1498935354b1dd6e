"""Legacy (non-zip) torch files, torch.export archives (.pt2) and tensor names: storages as
typed regions, byte-identical round trips, second versions as deltas, and `show` / `diff`
naming torch storages by the state-dict keys the pickle gives them (never running it)."""

from __future__ import annotations

import json
import pickle
import struct
import sys
import zipfile

import numpy as np
import torch

from coralfs.formats import layout_of
from tests.conftest import DELTA_CODEC_NAMES, run_cli, sha, tree_sha
from tests.formats.test_pickles_dtypes import _pickle_naming, _state_dict_file, _zip_replacing


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 32))


def _checkpoint(path, steps: int, legacy: bool, optimizer: bool = True) -> torch.nn.Module:
    """A training checkpoint (model, AdamW state, step) after ``steps`` steps (AdamW's
    moments change wholesale from step to step: ``optimizer=False`` leaves them out)."""
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    torch.manual_seed(1)
    for _ in range(steps):
        loss = net(torch.randn(8, 256)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ck = {"model": net.state_dict(), "step": steps}
    if optimizer:
        ck["optimizer"] = opt.state_dict()
    torch.save(ck, path, _use_new_zipfile_serialization=not legacy)
    return net


# -- legacy torch files ---------------------------------------------------------------------

def test_legacy_storages_are_named_typed_regions(tmp_path):
    p = tmp_path / "ck.pt"
    sd = {"w": torch.randn(3, 4), "h": torch.randn(5).half(), "b": torch.randn(2, 2).bfloat16(),
          "i": torch.arange(6), "nested": {"x": torch.ones(2, 3, dtype=torch.int32)},
          "view": torch.randn(10)[2:5], "p": torch.nn.Parameter(torch.randn(4))}
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    lay = layout_of(str(p))
    assert lay.format == "torch-legacy"
    got = {r.name: (r.dtype, r.shape) for r in lay.regions}
    assert got == {"w": ("F32", (3, 4)), "h": ("F16", (5,)), "b": ("BF16", (2, 2)), "i": ("I64", (6,)),
                   "nested/x": ("I32", (2, 3)), "view": ("F32", (10,)), "p": ("F32", (4,))}
    raw = p.read_bytes()
    r = next(r for r in lay.regions if r.name == "w")
    assert raw[r.offset:r.offset + r.length] == sd["w"].numpy().tobytes()
    r = next(r for r in lay.regions if r.name == "view")  # the whole storage the view shares
    assert raw[r.offset:r.offset + r.length] == bytes(sd["view"].untyped_storage().tolist())


def test_legacy_checkpoint_round_trip_and_second_version_deltas(repo, tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    _checkpoint(d / "checkpoint.pt", 1, legacy=True, optimizer=False)
    first = repo.commit_paths([str(d)], "step 1").stats
    net = _checkpoint(d / "checkpoint.pt", 2, legacy=True, optimizer=False)
    second = repo.commit_paths([str(d)], "step 2").stats
    assert set(second.codecs) & DELTA_CODEC_NAMES, second.codecs
    assert second.stored < 0.75 * first.stored, (second.stored, first.stored)
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert tree_sha(out) == tree_sha(d)
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 2
    assert all(torch.equal(ck["model"][k], v) for k, v in net.state_dict().items())
    f = repo.read_file(repo.tree_of("HEAD").entries["checkpoint.pt"].file)
    assert f.format == "torch-legacy" and {"model/0.weight", "model/2.bias"} <= set(f.tensors())
    _checkpoint(d / "checkpoint.pt", 3, legacy=True)
    repo.commit_paths([str(d)], "step 3")
    f = repo.read_file(repo.tree_of("HEAD").entries["checkpoint.pt"].file)
    assert "optimizer/state/0/exp_avg" in f.tensors()


def _legacy_bytes(graph: bytes, keys: list[str], records: list[bytes]) -> bytes:
    head = b"".join(pickle.dumps(x, protocol=2) for x in
                    (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                   "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    return head + graph + pickle.dumps(keys, protocol=2) + b"".join(records)


def test_legacy_reading_never_imports_or_runs_anything(repo, tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    lib.mkdir()
    marker = tmp_path / "ran"
    (lib / "coral_canary_legacy.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        "class Thing:\n    pass\n"
        f"def run(x):\n    open({str(marker)!r}, 'a').write('called\\n')\n")
    monkeypatch.syspath_prepend(str(lib))
    src = tmp_path / "src"
    src.mkdir()
    data = np.arange(4, dtype=np.float32).tobytes()
    (src / "evil.pt").write_bytes(_legacy_bytes(_pickle_naming("coral_canary_legacy"), ["0"],
                                                [struct.pack("<q", 4) + data]))
    lay = layout_of(str(src / "evil.pt"))
    assert [(r.name, r.dtype, r.shape) for r in lay.regions] == [("w", "F32", (4,))]
    repo.commit_paths([str(src)], "evil")
    assert not marker.exists() and "coral_canary_legacy" not in sys.modules


# -- .pt2 -----------------------------------------------------------------------------------

class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(256, 256)
        self.b = torch.nn.Linear(256, 64)
        self.register_buffer("scale", torch.full((64,), 2.0))

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) * self.scale


def _pt2(path, seed: int, nudge: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = _Tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * nudge)
    torch.export.save(torch.export.export(m, (torch.randn(2, 256),)), str(path))
    return m


def test_pt2_weights_are_regions_named_by_fqn(repo, tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    _pt2(d / "model.pt2", 0)
    lay = layout_of(str(d / "model.pt2"))
    assert lay.format == "pt2"
    got = {r.name: (r.dtype, r.shape) for r in lay.regions}
    assert got["a.weight"] == ("F32", (256, 256)) and got["b.bias"] == ("F32", (64,))
    assert any(n.endswith("scale") for n in got), got
    first = repo.commit_paths([str(d)], "v1").stats
    m = _pt2(d / "model.pt2", 0, nudge=1e-5)
    second = repo.commit_paths([str(d)], "v2").stats
    assert set(second.codecs) & DELTA_CODEC_NAMES, second.codecs
    assert second.stored < 0.75 * first.stored, (second.stored, first.stored)
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert sha(out / "model.pt2") == sha(d / "model.pt2")
    x = torch.randn(2, 256)
    assert torch.equal(torch.export.load(str(out / "model.pt2")).module()(x), m(x))


def test_pt2_with_tied_weights_names_the_shared_member_once(repo, tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Linear(128, 128, bias=False)
            self.head = torch.nn.Linear(128, 128, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, x):
            return self.head(self.embed(x))

    d = tmp_path / "src"
    d.mkdir()
    torch.export.save(torch.export.export(Tied(), (torch.randn(2, 128),)), str(d / "tied.pt2"))
    with zipfile.ZipFile(d / "tied.pt2") as z:
        cfg = json.loads(z.read(next(n for n in z.namelist() if n.endswith("model_weights_config.json"))))["config"]
    lay = layout_of(str(d / "tied.pt2"))
    members = {e["path_name"] for e in cfg.values()}
    assert len(lay.regions) == len(members) and lay.regions[0].shape == (128, 128)
    repo.commit_paths([str(d)], "tied")
    repo.export("main", str(tmp_path / "out"))
    assert sha(tmp_path / "out" / "tied.pt2") == sha(d / "tied.pt2")


# -- names in show and diff -------------------------------------------------------------------

def test_show_and_diff_name_torch_storages_by_state_dict_key(tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    d = tmp_path / "src"
    d.mkdir()
    _checkpoint(d / "zip.pt", 1, legacy=False)
    _checkpoint(d / "legacy.pt", 1, legacy=True)
    tied = torch.randn(8, 4)
    torch.save({"embed.weight": tied, "head.weight": tied, "half": torch.randn(16, 16)[:4],
                "u16": torch.arange(6).to(torch.uint16).reshape(2, 3),
                "f8": torch.zeros(4, dtype=torch.float8_e4m3fn)}, d / "tied.pt")
    run_cli("commit", str(d), "-m", "one", repo=repo)
    out = run_cli("show", "HEAD:zip.pt", repo=repo).stdout
    assert "model/0.weight (data/0)" in out and "[512, 256]" in out
    assert "optimizer/state/0/exp_avg" in out
    rows = {r["name"]: r for r in json.loads(run_cli("show", "HEAD:tied.pt", "--json", repo=repo).stdout)["tensors"]}
    # stored names stay the member names; the views say which tensors read each storage
    tied_row = next(r for r in rows.values() if r.get("label", "").startswith("embed.weight"))
    assert tied_row["label"] == "embed.weight, head.weight" and tied_row["name"].startswith("data/")
    assert [v["shape"] for v in tied_row["views"]] == [[8, 4], [8, 4]]
    half = next(r for r in rows.values() if r.get("label") == "half")
    assert half["views"] == [{"name": "half", "dtype": "F32", "shape": [4, 16], "offset": 0}]
    assert half["shape"] == [256]  # the storage: the whole 16x16 the slice views
    u16 = next(r for r in rows.values() if r.get("label") == "u16")
    assert u16["dtype"] == "U16" and u16["views"][0]["shape"] == [2, 3]
    assert next(r for r in rows.values() if r.get("label") == "f8")["dtype"] == "F8_E4M3"
    leg = run_cli("show", "HEAD:legacy.pt", repo=repo).stdout
    assert "model/0.weight " in leg and "[512, 256]" in leg and "(model/0.weight)" not in leg

    _checkpoint(d / "zip.pt", 2, legacy=False)
    run_cli("commit", str(d), "-m", "two", repo=repo)
    diff = run_cli("diff", "HEAD~1", "HEAD", repo=repo).stdout
    assert "changed  model/2.bias (data/" in diff, diff
    js = json.loads(run_cli("diff", "HEAD~1", "HEAD", "--json", repo=repo).stdout)
    (zc,) = [c for c in js if c["path"] == "zip.pt"]
    t = next(t for t in zc["tensors"] if t["label"] == "model/0.weight")
    assert t["name"].startswith("data/") and t["views"][0]["shape"] == [512, 256]


def test_diff_knows_the_formats_that_have_names():
    from coralfs import diff
    from coralfs.formats import torchnames
    assert diff.TORCH_FORMATS == torchnames.FORMATS


def test_names_survive_a_pickle_the_stand_ins_cannot_load(tmp_path):
    """A data.pkl no unpickler loads (BUILD on a list): the file commits with its dtypes
    from the opcode scan, show prints the storage names without labels, nothing fails."""
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    d = tmp_path / "src"
    d.mkdir()
    base = _state_dict_file(tmp_path)
    with zipfile.ZipFile(base) as z:
        pkl = z.read("base/data.pkl")
    (d / "odd.pt").write_bytes(_zip_replacing(base, "base/data.pkl", pkl[:2] + b"]}b0" + pkl[2:]))
    run_cli("commit", str(d), "-m", "odd", repo=repo)
    out = run_cli("show", "HEAD:odd.pt", repo=repo).stdout
    assert "data/0" in out and "(data/0)" not in out and "F16" in out
