"""A repository written by frame format v1 (before Compression v2) still reads bit-exactly.

tests/unit/golden/repo-v1.tar.gz was made once by tests/unit/golden/make_golden.py with the
code of that format; its manifest holds the sha256 of every file of every commit and the
codecs its frames use (raw, zstd, grouped, xor, sub).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile

import coralfs  # noqa: F401  (installs the format layer)
from coralfs import Repository
from coralfs.objects import codecs

HERE = os.path.join(os.path.dirname(__file__), "golden")


def _open(tmp_path) -> tuple[Repository, dict]:
    with tarfile.open(os.path.join(HERE, "repo-v1.tar.gz")) as t:
        t.extractall(tmp_path, filter="data")
    with open(os.path.join(HERE, "repo-v1.json")) as f:
        return Repository.open(str(tmp_path / "repo")), json.load(f)


def test_golden_v1_repository_reads_bit_exactly(tmp_path):
    repo, manifest = _open(tmp_path)
    used = {codecs.parse_header(repo.store.get(o), o).codec_name for o in repo.store}
    assert used == set(manifest["codecs"]) == {"raw", "zstd", "grouped", "xor", "sub"}
    for commit, files in manifest["commits"].items():
        dest = tmp_path / ("out-" + commit[:12])
        repo.export(commit, str(dest))
        got = {p: hashlib.sha256((dest / p).read_bytes()).hexdigest() for p in sorted(os.listdir(dest))}
        assert got == files, commit
    assert repo.fsck().ok


def test_golden_v1_repository_takes_new_commits(tmp_path):
    """New frames written into an old repository (deltas against v1 frames) read back."""
    repo, manifest = _open(tmp_path)
    head = repo.resolve("main")
    src = tmp_path / "src"
    src.mkdir()
    repo.export("main", str(src))
    data = bytearray((src / "model.safetensors").read_bytes())
    for i in range(len(data) - 4096, len(data) - 64, 97):
        data[i] ^= 1
    (src / "model.safetensors").write_bytes(bytes(data))
    res = repo.commit_paths([str(src)], "on top of v1")
    dest = tmp_path / "out"
    repo.export("main", str(dest))
    assert (dest / "model.safetensors").read_bytes() == bytes(data)
    prev = tmp_path / "prev"
    repo.export(head.hex(), str(prev))
    assert hashlib.sha256((prev / "model.safetensors").read_bytes()).hexdigest() == \
        manifest["commits"][head.hex()]["model.safetensors"]
    assert res.commit != head
    assert repo.fsck().ok
