"""Names from a repository (paths, tensor names, messages, authors) and error messages
never reach the terminal as raw control bytes: ESC, newline, CR, C1 controls and bytes
that are not UTF-8 are printed escaped; JSON output stays JSON with the real names."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from coralfs.cli.common import esc
from coralfs.cli.main import app
from coralfs.staging import StagingArea
from coralfs.objects.kinds import Tree, TreeEntry
from tests.conftest import PYTHON

runner = CliRunner()

NAMES = {"esc\x1b[2Jx.bin": "esc\\x1b[2Jx.bin", "nl\nx.bin": "nl\\nx.bin", "cr\rx.bin": "cr\\rx.bin",
         "c1\x9b31mx.bin": "c1\\x9b31mx.bin"}
TENSOR = "t\x1b[31m\n\r\x9bend"
TENSOR_SHOWN = "t\\x1b[31m\\n\\r\\x9bend"
MESSAGE = "step\x1b]0;owned\x07 \x9b2J done"
RAW = ("\x1b", "\r", "\x9b", "\x07")


def test_esc_helper():
    bad = os.fsdecode(b"w\xff\xfe.bin")  # not UTF-8: surrogateescape'd bytes
    assert esc(bad) == "w\\xff\\xfe.bin"
    assert esc("a\x1bb\nc\rd\x85e\x9bf\x7fg\u202eh\u2028i\tj") == \
        "a\\x1bb\\nc\\rd\\x85e\\x9bf\\x7fg\\u202eh\\u2028i\\tj"
    assert esc("plain name-1.bin ü 日本 \\x") == "plain name-1.bin ü 日本 \\x"
    assert esc(None) == "None"


@pytest.fixture
def hostile(repo, tmp_path):
    entries = {}
    for i, name in enumerate(NAMES):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x" * (i + 1))
        entries[name] = TreeEntry(repo.write_file(str(p))[0])
    first = repo.commit(Tree(dict(entries)), "first", author="ok")
    st_path = tmp_path / "m.safetensors"
    save_file({TENSOR: np.arange(4, dtype=np.float32)}, str(st_path))
    from coralfs.formats import layout_of
    lay = layout_of(str(st_path))
    entries["m.safetensors"] = TreeEntry(repo.write_file(str(st_path), lay.regions, lay.format)[0])
    entries["nl\nx.bin"] = TreeEntry(repo.write_file(str(tmp_path / "f3"))[0])  # modified
    repo.commit(Tree(entries), MESSAGE, author="mal\x1b[8mlory")
    st = StagingArea.open(repo, "main")
    st.create("stashed\x1b[5m.bin", 0o644)
    st.stash("aside\x1b[5m\x9b")
    st.create("staged\x1b[1m\x9b.bin", 0o644)
    st.close()
    return repo, first


def _run(repo, *args, code=0) -> str:
    r = runner.invoke(app, list(args), env={"CORALFS_REPO": repo.path})
    assert r.exit_code == code, (args, r.output, r.exception)
    for c in RAW:
        assert c not in r.output, (args, c, r.output)
    return r.output


def test_show_log_diff_status_escape_names(hostile):
    repo, first = hostile
    out = _run(repo, "show")
    for shown in NAMES.values():
        assert f"  {shown}\n" in out
    assert "step\\x1b]0;owned\\x07 \\x9b2J done" in out and "Author: mal\\x1b[8mlory" in out
    out = _run(repo, "show", "HEAD:m.safetensors")
    assert TENSOR_SHOWN in out
    out = _run(repo, "log")
    assert "    step\\x1b]0;owned\\x07 \\x9b2J done\n" in out
    out = _run(repo, "log", "--oneline")
    assert len(out.splitlines()) == 2
    out = _run(repo, "branch")
    assert "step\\x1b]0;owned" in out
    out = _run(repo, "diff", first.hex(), "HEAD")
    assert "modified nl\\nx.bin" in out and "added m.safetensors" in out and TENSOR_SHOWN in out
    out = _run(repo, "diff", first.hex(), "HEAD", "--stat")
    assert len(out.splitlines()) == 3
    out = _run(repo, "status")
    assert "A staged\\x1b[1m\\x9b.bin" in out and "step\\x1b]0;owned" in out
    out = _run(repo, "stash", "list")
    assert "aside\\x1b[5m\\x9b" in out


def test_json_keeps_the_real_names(hostile):
    repo, _ = hostile
    got = json.loads(_run(repo, "show", "--json"))
    assert {f["path"] for f in got["files"]} == set(NAMES) | {"m.safetensors"}
    assert got["message"] == MESSAGE
    got = json.loads(_run(repo, "show", "HEAD:m.safetensors", "--json"))
    assert got["tensors"][0]["name"] == TENSOR
    got = json.loads(_run(repo, "status", "--json"))
    assert got["staged"]["main"][0]["path"] == "staged\x1b[1m\x9b.bin"


def test_errors_escape_names(hostile):
    repo, _ = hostile
    out = _run(repo, "show", "HEAD:nope\x1b[2J\n.bin", code=1)
    assert out.count("\n") == 1 and "nope\\x1b[2J\\n.bin" in out
    out = _run(repo, "show", "HEAD:" + os.fsdecode(b"bad\xff"), code=1)
    assert "bad\\xff" in out


def test_not_utf8_names_in_a_real_process(hostile, tmp_path):
    """Bytes that are not UTF-8 (a file name, a destination) are printed as \\xNN, on one
    line, exit 1 and no traceback where they are refused."""
    repo, _ = hostile
    src = tmp_path / "src"
    src.mkdir()
    (src / os.fsdecode(b"w\xff\x1b.bin")).write_bytes(b"1")
    env = dict(os.environ, CORALFS_REPO=repo.path)
    p = subprocess.run([PYTHON, "-m", "coralfs", "commit", str(src), "-m", "m"], capture_output=True, env=env)
    assert p.returncode == 1 and p.stderr.count(b"\n") == 1, p.stderr
    assert b"w\\xff\\x1b.bin" in p.stderr and b"\xff" not in p.stderr and b"\x1b" not in p.stderr
    dest = os.fsencode(str(tmp_path)) + b"/out\xff\x1b[2J"
    p = subprocess.run([PYTHON, "-m", "coralfs", "export", "HEAD", dest], capture_output=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith(b"/out\\xff\\x1b[2J\n") and b"\xff" not in p.stdout
    assert os.path.isfile(os.path.join(dest, b"m.safetensors"))
    p = subprocess.run([PYTHON, "-m", "coralfs", b"no\x1bcommand\xff"], capture_output=True, env=env)
    assert p.returncode == 2 and b"\x1b" not in p.stderr and b"\xff" not in p.stderr and b"no\\x1bcommand" in p.stderr
