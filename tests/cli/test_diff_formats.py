"""`coralfs diff --format json|html|png`, layer grouping and `--textconv`: numbers checked
against numpy on synthetic changes (one row, a constant shift, NaNs), the HTML opened in
headless Chromium with the network cut off, PNGs decoded."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.cli.test_cli import cli
from tests.conftest import run_cli


def _save(d, tensors) -> str:
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    return str(d)


def _pair():
    rng = np.random.default_rng(3)
    a = {"enc.layer.0.q.weight": rng.standard_normal((64, 48)).astype(np.float32),
         "enc.layer.0.q.bias": rng.standard_normal(48).astype(np.float32),
         "enc.layer.1.q.weight": rng.standard_normal((64, 48)).astype(np.float32),
         "head.weight": rng.standard_normal((10, 48)).astype(np.float32)}
    b = {k: v.copy() for k, v in a.items()}
    b["enc.layer.0.q.weight"][5] += 2.0                 # one row changed
    b["enc.layer.1.q.weight"] += np.float32(0.5)       # a constant shift
    b["head.weight"][0, :3] = np.nan                    # NaNs appear
    return a, b


@pytest.fixture
def repo_pair(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    a, b = _pair()
    cli(repo, "commit", _save(tmp_path / "a", a), "-m", "a")
    cli(repo, "commit", _save(tmp_path / "b", b), "-m", "b")
    return repo, a, b


def _expect(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    d = y - x
    fin = np.isfinite(d)
    ad = np.where(fin, np.abs(d), 0.0)
    changed = np.count_nonzero((x != y) & ~(np.isnan(x) & np.isnan(y))) / x.size
    return float(np.linalg.norm(ad) / np.linalg.norm(x)), float(ad.max()), changed


def test_json_numbers_and_heatmap_cells_match_numpy(repo_pair):
    repo, a, b = repo_pair
    d = json.loads(cli(repo, "diff", "HEAD~1", "--format", "json").output)
    got = {t["name"]: t for t in d["tensors"]}
    assert set(got) == {"enc.layer.0.q.weight", "enc.layer.1.q.weight", "head.weight"}
    for name, t in got.items():
        rel, mx, ch = _expect(a[name], b[name])
        assert abs(t["rel_l2"] - rel) < 1e-9 and t["max_abs"] == mx and abs(t["changed_frac"] - ch) < 1e-12, name
    # one row changed: every block of that row band is hot, every other block exactly 0
    hm = np.array(got["enc.layer.0.q.weight"]["heatmap"])
    rows = hm.shape[0]
    hot = {r for r in range(rows) if hm[r].any()}
    assert hot == {5 * rows // 64}, hot
    band = hm[5 * rows // 64]
    assert np.allclose(band, 2.0 / (64 // rows), rtol=1e-6)   # mean |Δ| of a block holding 1 changed row
    # a constant shift: every block the same
    shift = np.array(got["enc.layer.1.q.weight"]["heatmap"])
    assert np.allclose(shift, 0.5, rtol=1e-6)
    # the histogram counts every changed element once, in its decade
    h = got["enc.layer.1.q.weight"]["histogram"]
    assert sum(h["counts"]) == 64 * 48 and h["counts"][h["log10_edges"].index(-1)] == 64 * 48
    groups = {g["prefix"]: g for g in d["groups"]}
    assert set(groups) == {"enc.layer.0", "enc.layer.1", "head"}
    assert groups["enc.layer.0"]["counts"] == {"changed": 1}


def test_grouped_text_collapses_layers(repo_pair):
    repo, a, b = repo_pair
    out = cli(repo, "diff", "HEAD~1", "--group", "--depth", "2").output
    lines = out.splitlines()
    assert lines[0] == "3 tensors in 3 layers (--depth 2; --no-group lists each tensor)"
    assert [ln.split()[0] for ln in lines[1:]] == ["enc.layer.0.*", "enc.layer.1.*", "head.*"]
    assert "relL2=" in lines[2]


def test_html_opens_offline_in_chromium_and_shows_its_images(repo_pair, tmp_path):
    repo, _, _ = repo_pair
    page_path = tmp_path / "diff.html"
    cli(repo, "diff", "HEAD~1", "--format", "html", "-o", str(page_path))
    text = page_path.read_text()
    assert "<img" in text and "https://" not in text and "http://" not in text.replace("http://www.w3.org", "")
    from playwright.sync_api import sync_playwright
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            ctx = browser.new_context(offline=True)
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri())
            imgs = page.eval_on_selector_all("img.hm", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
            assert len(imgs) == 3 and all(c and w > 0 and h > 0 for c, w, h in imgs), imgs
            assert page.locator("svg").count() == 3            # a histogram per changed tensor
            # sorting by relative L2 (click twice: descending) puts the constant shift first
            header = page.locator("#tensors th", has_text="rel. L2")
            header.click()
            header.click()
            first = page.locator("#tensors tbody tr").first.locator("td").nth(1).inner_text()
            assert first == "enc.layer.1.q.weight"
        finally:
            browser.close()
    assert all(u.startswith(("file://", "data:")) for u in requests), requests


def _png_size(path) -> tuple[int, int]:
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    zlib.decompress(b"".join(data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                             for i in _chunks(data, b"IDAT")))   # the pixel data inflates
    return w, h


def _chunks(data: bytes, kind: bytes):
    i = 8
    while i < len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        if data[i + 4:i + 8] == kind:
            yield i
        i += 12 + n


def test_png_images(repo_pair, tmp_path):
    from coralfs.render.plots import SIZE
    repo, _, _ = repo_pair
    out = tmp_path / "png"
    r = cli(repo, "diff", "HEAD~1", "--format", "png", "-o", str(out))
    names = sorted(os.listdir(out))
    assert names[-1] == "overview.png" and len(names) == 4, names
    assert "wrote 4 images" in r.output
    for n in names:
        assert _png_size(out / n) == SIZE


def test_textconv_is_stable_and_names_what_changed(repo_pair, tmp_path):
    a, b = _pair()
    pa, pb = _save(tmp_path / "ta", a), _save(tmp_path / "tb", b)
    one = run_cli("diff", "--textconv", os.path.join(pa, "model.safetensors")).stdout
    assert one == run_cli("diff", "--textconv", os.path.join(pa, "model.safetensors")).stdout
    two = run_cli("diff", "--textconv", os.path.join(pb, "model.safetensors")).stdout
    la, lb = one.splitlines(), two.splitlines()
    differ = {x.split()[1] for x, y in zip(la, lb, strict=True) if x != y and x.startswith("tensor")}
    assert differ == {"enc.layer.0.q.weight", "enc.layer.1.q.weight", "head.weight"}
    assert la[0].startswith("coralfs textconv: safetensors,")
    # as git uses it
    g = tmp_path / "g"
    g.mkdir()
    env = dict(os.environ, GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], ["git", "config", "diff.coralfs.textconv", f"{sys.executable} -m coralfs diff --textconv"]):
        subprocess.run(cmd, cwd=g, check=True, env=env)
    (g / ".gitattributes").write_text("*.safetensors diff=coralfs\n")
    (g / "m.safetensors").write_bytes(open(os.path.join(pa, "model.safetensors"), "rb").read())
    subprocess.run(["git", "add", "-A"], cwd=g, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "a"], cwd=g, check=True, env=env)
    (g / "m.safetensors").write_bytes(open(os.path.join(pb, "model.safetensors"), "rb").read())
    d = subprocess.run(["git", "diff"], cwd=g, capture_output=True, text=True, env=env, check=True).stdout
    assert "+tensor head.weight F32 [10, 48]" in d and "Binary files" not in d


def test_bad_input(repo_pair, tmp_path):
    repo, _, _ = repo_pair
    cases = ((["diff", "HEAD~1", "--format", "html"], "-o diff.html"),
             (["diff", "HEAD~1", "--format", "svg"], "--format"),
             (["diff", "HEAD~1", "--format", "html", "-o", str(tmp_path / "nodir" / "x.html")], "cannot write"),
             (["diff", "--textconv", str(tmp_path / "missing.safetensors")], "no such file"),
             (["diff"], "needs a revision"),
             (["diff", "nosuch", "--format", "json"], "nosuch"))
    for args, needle in cases:
        p = run_cli(*args, repo=repo, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode != 0 and len(lines) == 1 and needle in lines[0], (args, p.stderr)


def test_heatmap_of_a_tensor_whose_shape_changed_is_refused(tmp_path):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", _save(tmp_path / "a", {"w": np.zeros((4, 4), np.float32)}), "-m", "a")
    cli(repo, "commit", _save(tmp_path / "b", {"w": np.ones((4, 5), np.float32)}), "-m", "b")
    p = run_cli("diff", "HEAD~1", "--visual", "--tensor", "w", repo=repo, check=False)
    assert p.returncode != 0 and "shape or dtype differs" in p.stderr and len(p.stderr.strip().splitlines()) == 1
