"""Hostile tensor bundles and DCP checkpoints: fuzzed indexes, entries, shards and
metadata never crash a reader (a FormatError or a layout inside the file), and a
malformed one through the CLI is one line naming the file, nothing committed."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.formats import FormatError, detect
from tests.conftest import run_cli
from tests.formats.test_malformed import _fuzz_bytes, _snapshot
from tests.formats.test_tf_bundle import FIX, _entry, _table

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def _check(shard: str) -> None:
    try:
        lay = detect.layout_of(shard, siblings=detect.disk_siblings(shard))
    except FormatError as e:
        assert "\n" not in str(e)
        return
    size = os.path.getsize(shard)
    for r in lay.regions:
        assert 0 <= r.offset and r.offset + r.length <= size


def _bundle_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("tf")
    for n in ("ckpt.index", "ckpt.data-00000-of-00001"):
        shutil.copy(os.path.join(FIX, "ckpt_v1", n), d / n)
    return str(d)


def _dcp_dir(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("dcp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.distributed.checkpoint as dcp
        dcp.save({"w": torch.arange(64, dtype=torch.float32).reshape(8, 8), "n": 3,
                  "h": torch.ones(4, dtype=torch.bfloat16)}, checkpoint_id=str(d / "ck"))
    return str(d / "ck")


# What is fuzzed: (directory maker, the file whose bytes mutate, the shard read).
TARGETS = {
    "bundle index": (_bundle_dir, "ckpt.index", "ckpt.data-00000-of-00001"),
    "bundle shard": (_bundle_dir, "ckpt.data-00000-of-00001", "ckpt.data-00000-of-00001"),
    "dcp metadata": (_dcp_dir, ".metadata", "__0_0.distcp"),
    "dcp shard": (_dcp_dir, "__0_0.distcp", "__0_0.distcp"),
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_sibling_formats(tmp_path_factory, target):
    make, victim, shard = TARGETS[target]
    d = make(tmp_path_factory)
    seed = open(os.path.join(d, victim), "rb").read()

    @FUZZ
    @given(data=_fuzz_bytes(seed))
    def run(data):
        with open(os.path.join(d, victim), "wb") as f:
            f.write(data)
        _check(os.path.join(d, shard))

    run()


def test_fuzz_bundle_entries_inside_a_valid_table(tmp_path_factory):
    """Entries behind a table whose checksums hold: the proto fields themselves lie."""
    d = tmp_path_factory.mktemp("crafted")
    data = np.arange(16, dtype=np.float32).tobytes()
    (d / "b.data-00000-of-00001").write_bytes(data)
    seed = _entry(1, [4, 4], 0, 64, 0)

    @FUZZ
    @given(entry=_fuzz_bytes(seed), header=st.binary(max_size=12))
    def run(entry, header):
        (d / "b.index").write_bytes(_table([(b"", header), (b"t", entry)]))
        _check(str(d / "b.data-00000-of-00001"))

    run()


def _flip(p, at: int) -> None:
    raw = bytearray(open(p, "rb").read())
    raw[at] ^= 0x20
    open(p, "wb").write(bytes(raw))


def _truncate(p, keep: float) -> None:
    raw = open(p, "rb").read()
    open(p, "wb").write(raw[: int(len(raw) * keep)])


CASES = {
    "bundle bad crc": ("tf", "ckpt.data-00000-of-00001", lambda p: _flip(p, 5000), "crc32c mismatch"),
    "bundle truncated shard": ("tf", "ckpt.data-00000-of-00001", lambda p: _truncate(p, 0.5), "outside the shard"),
    "bundle truncated index": ("tf", "ckpt.index", lambda p: _truncate(p, 0.9), "its index ckpt.index"),
    "dcp truncated shard": ("dcp", "__0_0.distcp", lambda p: _truncate(p, 0.5), "outside the shard"),
    "dcp truncated metadata": ("dcp", ".metadata", lambda p: _truncate(p, 0.6), "malformed DCP metadata"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_through_the_cli_one_line_nothing_committed(tmp_path, tmp_path_factory, case):
    kind, victim, spoil, pattern = CASES[case]
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", os.path.join(FIX, "ckpt_v1"), "-m", "good", repo=repo)
    before = _snapshot(repo)
    if kind == "tf":
        src = tmp_path / "src"
        shutil.copytree(os.path.join(FIX, "ckpt_v1"), src)
        shard = "ckpt.data-00000-of-00001"
    else:
        src = _dcp_dir(tmp_path_factory)
        shard = "__0_0.distcp"
    spoil(os.path.join(src, victim))
    p = run_cli("commit", str(src), "-m", "bad", repo=repo, check=False)
    err = p.stderr.strip()
    assert p.returncode != 0 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and shard in err and pattern in err and "nothing was committed" in err, err
    assert _snapshot(repo) == before
    assert "no problems" in run_cli("fsck", repo=repo).stdout
