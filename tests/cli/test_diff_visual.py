"""`coralfs diff --visual`: magnitude bars per changed tensor and |Δ| heatmaps, on real
safetensors commits whose changes are known."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.cli.test_cli import cli

ROWS, COLS = 48, 40


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"embed": rng.standard_normal((64, 32)).astype(np.float32),
            "w": rng.standard_normal((ROWS, COLS)).astype(np.float32),
            "bias": rng.standard_normal(100).astype(np.float32)}


def _save(d, tensors) -> str:
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    return str(d)


@pytest.fixture
def two(tmp_path):
    """Commit 1 -> 2: the first 8 rows of w move by 1.0 (large), bias[50:60] by 0.1 (small),
    embed stays."""
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    a = _tensors()
    cli(repo, "commit", _save(tmp_path / "c0", a), "-m", "base")
    b = {k: v.copy() for k, v in a.items()}
    b["w"][:8] += 1.0
    b["bias"][50:60] += 0.1
    cli(repo, "commit", _save(tmp_path / "c1", b), "-m", "tuned")
    return repo, a, b


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    d = b.astype(np.float64) - a.astype(np.float64)
    return float(np.linalg.norm(d) / np.linalg.norm(a.astype(np.float64)))


def _bars(output: str) -> list[tuple[str, int, float, str]]:
    """(name, bar length, relL2, changed) of each bar line."""
    out = []
    for line in output.splitlines():
        m = re.match(r"^(\S+)\s+(#*)\s*relL2=(\S+)\s+max\|d\|=\S+\s+changed=(\S+)$", line)
        if m:
            out.append((m[1], len(m[2]), float(m[3]), m[4]))
    return out


def test_bars_name_exactly_the_changed_tensors_in_model_order(two):
    repo, a, b = two
    out = cli(repo, "diff", "HEAD~1", "HEAD", "--visual").output
    bars = _bars(out)
    # The file's order (safetensors stores names sorted): bias before w; embed is unchanged.
    assert [n for n, *_ in bars] == ["bias", "w"], out
    (_, len_bias, rel_bias, frac_bias), (_, len_w, rel_w, frac_w) = bars
    assert rel_w == pytest.approx(_rel(a["w"], b["w"]), rel=1e-2)
    assert rel_bias == pytest.approx(_rel(a["bias"], b["bias"]), rel=1e-2)
    assert rel_w > rel_bias and len_w > len_bias > 0
    assert (frac_w, frac_bias) == (f"{8 / ROWS * 100:.1f}%", "10.0%")
    assert "embed" not in out and "legend" not in out  # no heatmap without --tensor


def test_sort_puts_the_largest_change_first(two):
    repo, _, _ = two
    out = cli(repo, "diff", "HEAD~1", "--visual", "--sort").output
    assert [n for n, *_ in _bars(out)] == ["w", "bias"], out


def _heatmap(output: str, title_start: str) -> list[str]:
    lines = output.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(title_start))
    grid = []
    for line in lines[i + 1:]:
        if not line.startswith("|"):
            assert line.startswith("legend:")
            break
        grid.append(line[1:-1])
    return grid


def test_heatmap_hot_blocks_are_where_the_matrix_changed(two):
    repo, _, _ = two
    out = cli(repo, "diff", "HEAD~1", "HEAD", "--visual", "--tensor", "w").output
    grid = _heatmap(out, "w [48, 40]")
    gr = len(grid)
    assert gr > 1 and {len(r) for r in grid} == {COLS}  # one block per column at this width
    # Grid row k covers matrix rows [k*48/gr, (k+1)*48/gr): hot exactly when it meets rows 0..7.
    hot = [k for k, r in enumerate(grid) if r.strip()]
    assert hot == [k for k in range(gr) if k * ROWS // gr < 8], grid
    assert all(grid[k] == "@" * COLS for k in hot)  # the same change everywhere: full shade
    assert "bias [100]" not in out  # only the chosen tensor gets a heatmap


def test_a_1d_tensor_is_a_strip_hot_where_it_changed(two):
    repo, _, _ = two
    out = cli(repo, "diff", "HEAD~1", "--visual", "--tensor", "b*").output
    (strip,) = _heatmap(out, "bias [100]")
    n = len(strip)
    hot = [k for k, ch in enumerate(strip) if ch != " "]
    # Block k covers elements [k*100/n, (k+1)*100/n).
    expected = [k for k in range(n) if any(50 <= e < 60 for e in range(100) if e * n // 100 == k)]
    assert hot == expected, strip


def _run_in_terminal(repo: str, *args: str) -> bytes:
    """The CLI with stdout on a real pseudo-terminal, as a user sees it."""
    main, sub = pty.openpty()
    env = dict(os.environ, CORALFS_REPO=repo, COLUMNS="100")
    env.pop("NO_COLOR", None)
    p = subprocess.Popen([sys.executable, "-m", "coralfs", *args], stdout=sub, stderr=subprocess.PIPE, env=env)
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    return b"".join(chunks)


def test_ascii_has_no_escape_bytes_even_on_a_terminal_and_colour_only_there(two):
    repo, _, _ = two
    coloured = _run_in_terminal(repo, "diff", "HEAD~1", "--visual", "--tensor", "*")
    assert b"\x1b[" in coloured and "█".encode() in coloured
    plain = _run_in_terminal(repo, "diff", "HEAD~1", "--visual", "--tensor", "*", "--ascii")
    assert b"\x1b" not in plain and plain.isascii() and b"legend:" in plain
    # Not a terminal (a pipe into a file): plain as well, without asking.
    piped = cli(repo, "diff", "HEAD~1", "--visual", "--tensor", "*").output
    assert "\x1b" not in piped and piped.isascii()


def test_unchanged_models_say_nothing_changed(two):
    repo, _, _ = two
    out = cli(repo, "diff", "HEAD", "HEAD", "--visual", "--tensor", "*").output
    assert out.strip() == "no tensor changed between HEAD and HEAD"


def test_a_glob_matching_no_changed_tensor_is_a_one_line_error(two):
    repo, _, _ = two
    r = cli(repo, "diff", "HEAD~1", "--visual", "--tensor", "decoder.*", code=1)
    assert r.output.strip().count("\n") == 0, r.output
    assert "no changed tensor matches --tensor 'decoder.*'" in r.output and "Traceback" not in r.output
    # embed exists but did not change: no heatmap of zeros, the same message.
    r = cli(repo, "diff", "HEAD~1", "--visual", "--tensor", "embed", code=1)
    assert "no changed tensor matches --tensor 'embed'" in r.output
