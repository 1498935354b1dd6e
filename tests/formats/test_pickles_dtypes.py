"""Torch files whose pickles instantiate classes (TrainingArguments, nn.Module, Namespace,
dataclasses, plain objects, TorchScript, ExportedProgram) and safetensors files with newer
or unknown dtypes: each commits, keeps its storages as typed regions where the layout shows
them, exports byte-identical, and nothing of the file is ever imported or run."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from coralfs.formats import layout_of
from tests.conftest import PYTHON, run_cli, sha


@dataclasses.dataclass
class RunArgs:
    lr: float = 1e-4
    out: str = "x"
    betas: tuple = (0.9, 0.99)


class Plain:
    def __init__(self) -> None:
        self.a = 1
        self.t = torch.arange(5, dtype=torch.float64)


class TraceMe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.l(x) + torch.tensor([1.0, 2.0, 3.0])  # a TorchScript tensor constant


def _training_args(p):
    from transformers import TrainingArguments
    torch.save(TrainingArguments(output_dir=os.path.dirname(p), report_to=[]), p)
    return {}


def _module(p):
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)), p)
    return {"F32": 6, "I64": 1}  # 2 + 4 float tensors; num_batches_tracked


def _namespace(p):
    torch.save({"w": torch.ones(3), "args": argparse.Namespace(lr=1, name="run")}, p)
    return {"F32": 1}


def _dataclass(p):
    torch.save({"w": torch.ones(3, dtype=torch.bfloat16), "args": RunArgs()}, p)
    return {"BF16": 1}


def _plain(p):
    torch.save({"w": torch.ones(3), "p": Plain()}, p)
    return {"F32": 1, "F64": 1}


def _jit_script(p):
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU())), p)
    return {"F32": 2}


def _jit_trace(p):
    torch.manual_seed(0)
    torch.jit.save(torch.jit.trace(TraceMe(), torch.ones(1, 3)), p)
    return {"F32": 2, "U8": 1}  # the constant (constants/0) is kept as bytes


def _exported(p):
    ep = torch.export.export(torch.nn.Linear(4, 2), (torch.ones(1, 4),))
    torch.save(ep, p)
    return {"F32": 3}  # weight, bias and the example input


def _new_dtypes(p):
    torch.save({"e8m0": torch.ones(3, dtype=torch.float8_e8m0fnu),
                "fnuz": torch.ones(3, dtype=torch.float8_e4m3fnuz),
                "c64": torch.ones(2, dtype=torch.complex64), "u16": torch.ones(3, dtype=torch.uint16)}, p)
    return {"F8_E8M0": 1, "F8_E4M3FNUZ": 1, "C64": 1, "U16": 1}


KINDS = {"training_args.bin": _training_args, "module.pt": _module, "namespace.pt": _namespace,
         "dataclass.pt": _dataclass, "plain.pt": _plain, "scripted.pt": _jit_script,
         "traced.pt": _jit_trace, "exported.pt": _exported, "newdtypes.pt": _new_dtypes}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_class_pickles_commit_with_typed_storages(repo, tmp_path, name):
    src = tmp_path / "src"
    src.mkdir()
    path = str(src / name)
    want = KINDS[name](path)
    lay = layout_of(path)
    assert lay.format == "torch"
    got: dict[str, int] = {}
    for r in lay.regions:
        got[r.dtype] = got.get(r.dtype, 0) + 1
    assert got == want
    r = repo.commit_paths([str(src)], name)
    assert set(r.files) == {name}
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert sha(out / name) == sha(path)


def _zip_replacing(path: str, member: str, data: bytes) -> bytes:
    """The torch zip at ``path`` with ``member`` replaced (order and storage kept)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for i in zin.infolist():
            zout.writestr(i.filename, data if i.filename == member else zin.read(i))
    return buf.getvalue()


def _state_dict_file(tmp_path) -> str:
    p = str(tmp_path / "base.pt")
    # F32 and F16 are typed by their storage class, F8_E8M0 by the _rebuild_tensor_v3 call
    torch.save({"w": torch.arange(8, dtype=torch.float32), "h": torch.ones(4, dtype=torch.float16),
                "e": torch.ones(2, dtype=torch.float8_e8m0fnu)}, p)
    return p


def test_pickle_the_stand_ins_cannot_load_still_commits_with_dtypes(repo, tmp_path):
    # BUILD on a list (EMPTY_LIST EMPTY_DICT BUILD POP) makes any unpickler fail; the opcode
    # scan still finds both storages and their dtypes.
    base = _state_dict_file(tmp_path)
    with zipfile.ZipFile(base) as z:
        pkl = z.read("base/data.pkl")
    assert pkl[:2] == b"\x80\x02"
    odd = pkl[:2] + b"]}b0" + pkl[2:]
    src = tmp_path / "src"
    src.mkdir()
    (src / "odd.pt").write_bytes(_zip_replacing(base, "base/data.pkl", odd))
    lay = layout_of(str(src / "odd.pt"))
    assert lay.format == "torch"
    assert sorted((r.name, r.dtype, r.shape) for r in lay.regions) == [
        ("data/0", "F32", (8,)), ("data/1", "F16", (4,)), ("data/2", "F8_E8M0", (2,))]
    repo.commit_paths([str(src)], "odd")
    repo.export("main", str(tmp_path / "out"))
    assert sha(tmp_path / "out" / "odd.pt") == sha(src / "odd.pt")


def test_data_pkl_that_is_no_pickle_keeps_storages_as_bytes(repo, tmp_path):
    base = _state_dict_file(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "junk.pt").write_bytes(_zip_replacing(base, "base/data.pkl", b"this is not a pickle \xff\x00"))
    lay = layout_of(str(src / "junk.pt"))
    assert sorted((r.name, r.dtype, r.length) for r in lay.regions) == [("data/0", "U8", 32), ("data/1", "U8", 8), ("data/2", "U8", 2)]
    repo.commit_paths([str(src)], "junk")
    repo.export("main", str(tmp_path / "out"))
    assert sha(tmp_path / "out" / "junk.pt") == sha(src / "junk.pt")


def _pickle_naming(module: str) -> bytes:
    """Protocol-2 pickle: {'w': storage 0 as F32, 'obj': module.Thing.__new__(Thing) + BUILD,
    'call': module.run('x')} (NEWOBJ, BUILD and REDUCE on a global from ``module``)."""
    return (b"\x80\x02}q\x00(X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02("
            b"(X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05"
            b"X\x03\x00\x00\x00cpuq\x06K\x04tq\x07QK\x00K\x04\x85q\x08K\x01\x85q\x09\x89"
            b"ccollections\nOrderedDict\nq\x0a)Rq\x0btq\x0cRq\x0d"
            b"X\x03\x00\x00\x00objq\x0ec" + module.encode() + b"\nThing\nq\x0f)\x81q\x10}q\x11"
            b"X\x01\x00\x00\x00aK\x01sb"
            b"X\x04\x00\x00\x00callq\x12c" + module.encode() + b"\nrun\nq\x13X\x01\x00\x00\x00x\x85R"
            b"u.")


def test_reading_never_imports_or_runs_anything(repo, tmp_path, monkeypatch):
    # A module on sys.path whose import, class construction or call would leave a marker.
    lib = tmp_path / "lib"
    lib.mkdir()
    marker = tmp_path / "ran"
    (lib / "coral_canary_mod.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        "class Thing:\n"
        "    def __setstate__(self, s):\n"
        f"        open({str(marker)!r}, 'a').write('setstate\\n')\n"
        "def run(x):\n"
        f"    open({str(marker)!r}, 'a').write('called\\n')\n")
    monkeypatch.syspath_prepend(str(lib))
    src = tmp_path / "src"
    src.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("evil/data.pkl", _pickle_naming("coral_canary_mod"))
        z.writestr("evil/data/0", np.arange(4, dtype=np.float32).tobytes())
    (src / "evil.pt").write_bytes(buf.getvalue())
    lay = layout_of(str(src / "evil.pt"))
    assert [(r.name, r.dtype, r.shape) for r in lay.regions] == [("data/0", "F32", (4,))]
    run_cli("init", str(tmp_path / "r"))
    run_cli("commit", str(src), "-m", "evil", repo=str(tmp_path / "r"))
    assert not marker.exists()
    assert "coral_canary_mod" not in sys.modules


# -- safetensors dtypes ---------------------------------------------------------------------

def _st(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


# dtype, shape, data bytes, dtype recorded for the tensor
NEW_DTYPES = {
    "F8_E8M0": ([4], b"\x7f\x7f\x80\x81", "F8_E8M0"),
    "F8_E4M3FNUZ": ([4], b"\x00\x38\x80\xb8", "F8_E4M3FNUZ"),
    "F8_E5M2FNUZ": ([4], b"\x00\x3c\x80\xbc", "F8_E5M2FNUZ"),
    "F4": ([8], b"\x12\x34\x56\x78", "U8"),             # 4 bits each: 8 elements, 4 bytes
    "F6_E2M3": ([4], b"\x01\x02\x03", "U8"),            # 6 bits each: 4 elements, 3 bytes
    "C64": ([2], np.array([1 + 2j, -3j], np.complex64).tobytes(), "C64"),
    "Q9_FUTURE": ([3, 5], bytes(range(11)), "U8"),       # unknown: the header's 11 bytes
}


@pytest.mark.parametrize("dt", sorted(NEW_DTYPES))
def test_new_and_unknown_safetensors_dtypes_commit_as_exact_bytes(tmp_path, dt):
    shape, data, recorded = NEW_DTYPES[dt]
    src = tmp_path / "st"
    src.mkdir()
    f = src / "m.safetensors"
    f.write_bytes(_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "t": {"dtype": dt, "shape": shape, "data_offsets": [8, 8 + len(data)]}},
                      np.ones(2, np.float32).tobytes() + data))
    lay = layout_of(str(f))
    t = [r for r in lay.regions if r.name == "t"][0]
    assert (t.dtype, t.length) == (recorded, len(data))
    repo = str(tmp_path / "r")
    run_cli("init", repo)
    run_cli("commit", str(src), "-m", dt, repo=repo)
    p = run_cli("show", "main:m.safetensors", repo=repo)
    assert " t " in p.stdout and recorded in p.stdout
    run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    assert sha(tmp_path / "out" / "m.safetensors") == sha(f)
    run_cli("export", "main", str(tmp_path / "sub"), "--include", "t", repo=repo)
    with open(tmp_path / "sub" / "m.safetensors", "rb") as g:
        n = struct.unpack("<Q", g.read(8))[0]
        assert json.loads(g.read(n))["t"]["dtype"] == dt
        assert g.read() == data


def test_real_safetensors_files_of_new_torch_dtypes(repo, tmp_path):
    src = tmp_path / "st"
    src.mkdir()
    tensors = {"e8m0": torch.ones(4, dtype=torch.float8_e8m0fnu), "e4fnuz": torch.ones(4, dtype=torch.float8_e4m3fnuz),
               "e5fnuz": torch.ones(4, dtype=torch.float8_e5m2fnuz), "c64": torch.ones(3, dtype=torch.complex64),
               "f4": torch.zeros(6, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)}
    save_file(tensors, str(src / "new.safetensors"))
    lay = layout_of(str(src / "new.safetensors"))
    assert {r.name: r.dtype for r in lay.regions} == {"e8m0": "F8_E8M0", "e4fnuz": "F8_E4M3FNUZ",
                                                      "e5fnuz": "F8_E5M2FNUZ", "c64": "C64", "f4": "U8"}
    repo.commit_paths([str(src)], "new dtypes")
    # a second commit with changed values is stored against the first (same names)
    tensors["e8m0"] = torch.full((4,), 2.0).to(torch.float8_e8m0fnu)
    save_file(tensors, str(src / "new.safetensors"))
    repo.commit_paths([str(src)], "changed")
    repo.export("main", str(tmp_path / "out"))
    assert sha(tmp_path / "out" / "new.safetensors") == sha(src / "new.safetensors")
    diff = repo.diff("main~1", "main")
    assert [t.name for t in diff[0].tensors] == ["e8m0"]


def test_directory_of_class_pickles_from_a_script_commits_through_the_cli(tmp_path):
    # Classes defined in a script's __main__ (which no reader could import anyway).
    src = tmp_path / "ck"
    src.mkdir()
    code = f"""
import argparse, dataclasses, torch
@dataclasses.dataclass
class Args:
    lr: float = 1e-4
    out: str = 'x'
torch.save(Args(), {str(src / 'training_args.bin')!r})
torch.save({{'w': torch.ones(3), 'args': argparse.Namespace(lr=1)}}, {str(src / 'state.pt')!r})
torch.save(torch.nn.Linear(4, 2), {str(src / 'module.pt')!r})
"""
    import subprocess
    subprocess.run([sys.executable, "-c", code], check=True)
    save_file({"w": torch.randn(16, 16)}, str(src / "model.safetensors"))
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    p = run_cli("commit", str(src), "-m", "trainer-like", repo=repo)
    assert "4 files" in p.stdout
    run_cli("export", "main", str(tmp_path / "out"), repo=repo)
    for f in src.iterdir():
        assert sha(tmp_path / "out" / f.name) == sha(f)
    info = json.loads(run_cli("show", "main", "--json", repo=repo).stdout)
    assert {f["path"]: f["format"] for f in info["files"]} == {
        "training_args.bin": "torch", "state.pt": "torch", "module.pt": "torch", "model.safetensors": "safetensors"}
    assert {f["path"]: f["tensors"] for f in info["files"]}["module.pt"] == 2


MEMORY_PROBE = """
import resource, sys
from coralfs.formats.torchpickle import scan
op = sys.argv[1].encode("latin-1")
data = b"\\x80\\x02" + op * (int(sys.argv[2]) << 20) + b"."
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = scan("crafted", data)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, len(s.dtypes))
"""


@pytest.mark.parametrize("op", ["}", "]", "2"])
def test_a_pickle_that_would_take_too_much_memory_is_not_read(op):
    """A stream of one-byte builders (EMPTY_DICT, EMPTY_LIST, DUP) would make the stand-in
    load build millions of objects; it is left unread (storages untyped) at bounded memory."""
    big = "40" if op == "2" else "8"  # DUP costs ~10 bytes a byte, a dict or list ~75
    p = subprocess.run([PYTHON, "-c", MEMORY_PROBE, op, big], capture_output=True, text=True, check=True)
    grown_mb, typed = map(int, p.stdout.split())
    assert typed == 0 and grown_mb < 120, p.stdout


def test_a_real_checkpoint_pickle_is_far_inside_the_scan_bound():
    from coralfs.formats.torchpickle import SCAN_MEMORY, scan_memory
    buf = io.BytesIO()
    torch.save({f"layer{i}.weight": torch.zeros(2, 2) for i in range(20000)}, buf)
    with zipfile.ZipFile(buf) as zf:
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert scan_memory(pkl) * 10 < SCAN_MEMORY
