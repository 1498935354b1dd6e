"""The sibling hook: a reader sees other files of the commit, never outside its tree."""

from __future__ import annotations

import os

from coralfs.formats import detect
from coralfs.formats.base import Layout
from coralfs.objects.regions import Region


def test_resolve_stays_inside_the_tree():
    s = detect.Siblings("a/b/x.data", ["a/b/x.index", "a/top.bin", "x.index", "a/b/x.data"], lambda p: p)
    assert s.path("x.index") == "a/b/x.index"
    assert s.path("../top.bin") == "a/top.bin"
    assert s.path("../../x.index") == "x.index"
    assert s.path("../../../x.index") is None          # past the root
    assert s.path("/etc/passwd") is None                # absolute
    assert s.path("x.data") is None                     # itself
    assert s.path("missing") is None
    assert s.names() == ["a/b/x.index", "a/top.bin", "x.index"]


def test_a_reader_reads_its_sibling_in_commit_and_in_a_writable_mount_commit(repo, tmp_path, monkeypatch):
    """A toy reader whose layout is told by a sibling ``.len`` file: its regions exist
    only if the sibling was seen, in a plain commit and when the sibling is already
    stored and only the data file is ingested again (the staging area's case)."""
    seen = []

    def read(path: str, size: int, sib: detect.Siblings) -> Layout | None:
        p = sib.path(os.path.splitext(os.path.basename(sib.here))[0] + ".len")
        if p is None:
            return None
        n = int(open(p).read())
        seen.append(n)
        return Layout("toy", [Region(0, n, "t", "F32", (n // 4,))])

    monkeypatch.setattr(detect, "BY_NAME", [(lambda n: n.endswith(".toy"), read)])
    d = tmp_path / "ck"
    d.mkdir()
    (d / "w.toy").write_bytes(b"\0" * 64)
    (d / "w.len").write_text("32")
    repo.commit_paths([str(d)], "one")
    f = repo.read_file(repo.tree_of("HEAD").entries["w.toy"].file)
    assert f.format == "toy" and seen == [32]
    from coralfs.ingest import DiskFile, ingest_files
    (tmp_path / "spool").write_bytes(b"\1" * 64)
    tree = repo.tree_of("HEAD").entries
    with repo.write_session():
        entries, _ = ingest_files(repo, [DiskFile("w.toy", str(tmp_path / "spool"), 0o644)], tree,
                                  kept={"w.len": tree["w.len"]})
    assert repo.read_file(entries["w.toy"].file).format == "toy" and seen == [32, 32]
