"""Malformed inputs: a one-line error naming the file and the problem, a non-zero exit,
and a repository left exactly as it was. Readers are fuzzed for crashes."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from coralfs.formats import FormatError, layout_of
from tests.conftest import run_cli


def _st_bytes(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _good_st() -> bytes:
    buf = io.BytesIO()
    from safetensors.numpy import save
    buf.write(save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.int8)}))
    return buf.getvalue()


def _zip_with(name: str, payload: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr(name, payload)
    return buf.getvalue()


def _non_utf8_zip() -> bytes:
    raw = bytearray(_zip_with("archive/data/caf\u00e9"))
    # Clear the UTF-8 flag (bit 11) in every local and central header: the name is then
    # read as cp437, which is not UTF-8.
    for sig, flag_off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.find(sig)
        while i != -1:
            flags = struct.unpack_from("<H", raw, i + flag_off)[0]
            struct.pack_into("<H", raw, i + flag_off, flags & ~0x800)
            i = raw.find(sig, i + 4)
    return bytes(raw)


def _gguf() -> bytes:
    import tempfile

    import gguf
    with tempfile.TemporaryDirectory() as d:
        w = gguf.GGUFWriter(os.path.join(d, "m.gguf"), "llama")
        w.add_string("general.name", "t")
        w.add_tensor("a", np.arange(64, dtype=np.float32).reshape(2, 32))
        w.add_tensor("b", np.ones(32, np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(os.path.join(d, "m.gguf"), "rb") as f:
            return f.read()


def _gguf_lying_offset() -> bytes:
    raw = bytearray(_gguf())
    # tensor "b"'s info ends with its u64 offset: make it point far past the end
    i = raw.index(b"\x01\x00\x00\x00\x00\x00\x00\x00b") + 9  # name length 1, "b"
    i += 4 + 8 + 4  # n_dims, one dim, ggml type
    struct.pack_into("<Q", raw, i, 1 << 40)
    return bytes(raw)


def _gguf_huge_array() -> bytes:
    # one key whose array claims 2**60 u32 items
    key = b"k"
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<IIQ", 9, 4, 1 << 60))


def _chunked_h5() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("k", data=np.ones((64, 64), np.float32), chunks=(16, 16))
    return buf.getvalue()


def _pt2_seed() -> bytes:
    import tempfile

    import torch
    with tempfile.TemporaryDirectory() as d:
        m = torch.nn.Linear(8, 4)
        torch.export.save(torch.export.export(m, (torch.randn(2, 8),)), os.path.join(d, "m.pt2"))
        with open(os.path.join(d, "m.pt2"), "rb") as f:
            return f.read()


def _legacy() -> bytes:
    import torch
    buf = io.BytesIO()
    # Both storages are 16 bytes: the records' order (by storage key, a memory address)
    # varies from run to run, the last record's place does not.
    torch.save({"w": torch.arange(4, dtype=torch.float32), "h": torch.ones(8, dtype=torch.float16)}, buf,
               _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _legacy_lying_count() -> bytes:
    raw = bytearray(_legacy())
    # the last record: 16 bytes after its count; claim 2**40 elements
    struct.pack_into("<q", raw, len(raw) - 16 - 8, 1 << 40)
    return bytes(raw)


MALFORMED = {
    "truncated.safetensors": (lambda: _good_st()[:-5], "past the end|outside the data area|not indexed"),
    "truncated-header.safetensors": (lambda: _good_st()[:20], "truncated safetensors header"),
    "tiny.safetensors": (lambda: b"\x01\x02", "no 8-byte header length"),
    "lying.safetensors": (lambda: _st_bytes({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1600]}}, b"\0" * 16),
                          "outside the data area"),
    "huge-header.safetensors": (lambda: struct.pack("<Q", 1 << 40) + b"{}", "over the"),
    "overlap.safetensors": (lambda: _st_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
                            "overlaps"),
    "hole.safetensors": (lambda: _st_bytes({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
                         "hole"),
    "absurd-shape.safetensors": (lambda: _st_bytes({"a": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 8]}}, b"\0" * 8),
                                 "needs"),
    # An unknown dtype *name* is stored as opaque bytes (tests/formats/test_pickles_dtypes.py);
    # a dtype that is not a name at all is a broken header.
    "bad-dtype.safetensors": (lambda: _st_bytes({"a": {"dtype": 33, "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
                              "not a dtype name"),
    "short-f4.safetensors": (lambda: _st_bytes({"a": {"dtype": "F4", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 8),
                             "needs 4"),
    "not-utf8.safetensors": (lambda: struct.pack("<Q", 4) + b"\xff\xfe{}" + b"", "not UTF-8 JSON"),
    "bad.npy": (lambda: b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n", "descr|needs exactly"),
    "short.npy": (lambda: np.lib.format.header_data_from_array_1_0(np.zeros(10)) and
                  _npy_prefix(np.zeros(100)) + b"\0" * 10, "needs more than"),
    "traversal.pt": (lambda: _zip_with("archive/../../etc/passwd"), "escapes the archive"),
    "absolute.pt": (lambda: _zip_with("/etc/passwd"), "absolute path"),
    "names.pt": (_non_utf8_zip, "not UTF-8"),
    "broken.npz": (lambda: b"PK\x03\x04" + b"\0" * 40, "not a readable zip"),
    "bad.h5": (lambda: b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "HDF5"),
    "fake.h5": (lambda: b"not hdf5 at all", "not an HDF5 file"),
    "truncated.gguf": (lambda: _gguf()[:-40], "past the end"),
    "truncated-header.gguf": (lambda: _gguf()[:60], "truncated"),
    "lying.gguf": (_gguf_lying_offset, "past the end"),
    "bomb.gguf": (_gguf_huge_array, "truncated or over the cap"),
    "fake.gguf": (lambda: b"GGUX" + b"\0" * 40, "not a GGUF file"),
    "truncated-legacy.pt": (lambda: _legacy()[:-5], "runs past the end"),
    "lying-legacy.pt": (_legacy_lying_count, "runs past the end"),
    "header-legacy.pt": (lambda: _legacy()[:300], "legacy torch"),
    "truncated.pt2": (lambda: _pt2_seed()[:2000], "not a readable zip"),
    "truncated-chunked.h5": (lambda: _chunked_h5()[:3000], "HDF5"),
}


def _npy_prefix(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    return buf.getvalue()


def _snapshot(repo_path):
    objs = sorted(os.path.relpath(os.path.join(d, f), repo_path)
                  for d, _, fs in os.walk(os.path.join(repo_path, "objects")) for f in fs)
    with open(os.path.join(repo_path, "refs", "heads", "main")) as f:
        return objs, f.read()


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_one_line_error_nothing_committed(tmp_path, name):
    make, pattern = MALFORMED[name]
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    good = tmp_path / "good"
    good.mkdir()
    save_file({"x": np.ones(3, np.float32)}, str(good / "ok.safetensors"))
    run_cli("commit", str(good), "-m", "good", repo=repo)
    before = _snapshot(repo)
    src = tmp_path / "src"
    src.mkdir()
    (src / "fine.safetensors").write_bytes(_good_st())  # a valid file beside the bad one
    (src / name).write_bytes(make())
    p = run_cli("commit", str(src), "-m", "bad", repo=repo, check=False)
    assert p.returncode != 0
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and name in err and "nothing was committed" in err
    import re
    assert re.search(pattern, err), err
    assert _snapshot(repo) == before
    assert "no problems" in run_cli("fsck", repo=repo).stdout


# -- fuzzing ------------------------------------------------------------------------------

def _check(path):
    try:
        lay = layout_of(path)
    except FormatError:
        return
    size = os.path.getsize(path)
    for r in lay.regions:
        assert 0 <= r.offset and r.offset + r.length <= size


def _fuzz_bytes(seed_bytes: bytes):
    return st.lists(st.tuples(st.integers(0, max(0, len(seed_bytes) - 1)), st.integers(0, 255)),
                    max_size=8).map(lambda edits: _apply(seed_bytes, edits)) | \
        st.integers(0, len(seed_bytes)).map(lambda n: seed_bytes[:n])


def _apply(b: bytes, edits) -> bytes:
    out = bytearray(b)
    for i, v in edits:
        if i < len(out):
            out[i] = v
    return bytes(out)


def _npz_seed() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, a=np.arange(20, dtype=np.float32), b=np.ones((3, 3)))
    return buf.getvalue()


def _pt_seed() -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.arange(12, dtype=torch.float32), "h": torch.ones(4, dtype=torch.bfloat16)}, buf)
    return buf.getvalue()


SEEDS = {".safetensors": _good_st(), ".npy": _npy_prefix(np.zeros(8)) + np.zeros(8).tobytes(),
         ".npz": _npz_seed(), ".pt": _pt_seed(), ".gguf": _gguf(), ".pth": _legacy(), ".pt2": _pt2_seed()}

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def fuzz_layouts(path: str, seed_bytes: bytes) -> None:
    """Mutations and truncations of ``seed_bytes`` written to ``path``: each is refused
    with a FormatError or gives regions inside the file (see _check)."""

    @FUZZ
    @given(data=_fuzz_bytes(seed_bytes))
    def run(data):
        with open(path, "wb") as f:
            f.write(data)
        _check(path)

    run()


@pytest.mark.parametrize("ext", sorted(SEEDS))
def test_fuzz_readers_never_crash(tmp_path_factory, ext):
    d = tmp_path_factory.mktemp("fuzz")
    path = str(d / f"f{ext}")

    fuzz_layouts(path, SEEDS[ext])


def _h5_seed() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("w", data=np.ones((32, 32), np.float32))
        f.attrs["a"] = 1
        f.create_dataset("c", data=np.arange(100), chunks=(10,), compression="gzip")
    return buf.getvalue()


def test_fuzz_hdf5_byte_mutations(tmp_path):
    path = str(tmp_path / "f.h5")

    fuzz_layouts(path, _h5_seed())


def test_fuzz_hdf5_truncations(tmp_path):
    p = tmp_path / "seed.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("w", data=np.ones((32, 32), np.float32))
    full = p.read_bytes()
    for n in list(range(0, len(full), max(1, len(full) // 40))) + [len(full) - 1]:
        q = tmp_path / f"t{n}.h5"
        q.write_bytes(full[:n])
        _check(str(q))


def test_fuzz_hdf5_chunked(tmp_path):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("k", data=np.ones((40, 40), np.float32), chunks=(16, 16))
    path = str(tmp_path / "f.h5")

    fuzz_layouts(path, buf.getvalue())
