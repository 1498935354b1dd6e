"""GGUF files written by the real `gguf` package: tensors as typed (or block) regions at the
offsets gguf's own reader finds, byte-identical round trips, second versions as deltas."""

from __future__ import annotations

import gguf
import numpy as np
from gguf.quants import quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coralfs.formats import layout_of
from tests.conftest import DELTA_CODEC_NAMES, sha

Q = gguf.GGMLQuantizationType


def write(path, tensors: dict[str, tuple[np.ndarray, Q]], alignment: int | None = None) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_block_count(len(tensors))
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "bc", "def"])
    w.add_array("tokenizer.ggml.scores", [0.5, 0.25, 0.125])
    for name, (a, kind) in tensors.items():
        if kind in (Q.F32, Q.F16):
            w.add_tensor(name, a.astype(np.float32 if kind == Q.F32 else np.float16))
        else:
            q = quantize(a.astype(np.float32), kind)
            w.add_tensor(name, q, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def model(scale: float = 1.0, seed: int = 0) -> dict[str, tuple[np.ndarray, Q]]:
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal((256, 512)) * 0.02).astype(np.float32)
    w = base + scale * np.float32(1e-4) * rng.standard_normal(base.shape).astype(np.float32)
    return {"token_embd.weight": (w, Q.F32), "blk.0.attn_q.weight": (w, Q.F16),
            "blk.0.ffn_up.weight": (w, Q.BF16), "blk.0.ffn_down.weight": (w, Q.Q8_0),
            "blk.0.attn_k.weight": (w, Q.Q4_0), "output_norm.weight": (w[0], Q.F32)}


def test_regions_are_the_tensors_gguf_reads(tmp_path):
    p = tmp_path / "m.gguf"
    write(p, model())
    lay = layout_of(str(p))
    assert lay.format == "gguf"
    got = {r.name: r for r in lay.regions}
    for t in gguf.GGUFReader(str(p)).tensors:
        r = got[t.name]
        assert (r.offset, r.length) == (t.data_offset, t.n_bytes), t.name
    assert got["token_embd.weight"].dtype == "F32" and got["token_embd.weight"].shape == (256, 512)
    assert got["blk.0.attn_q.weight"].dtype == "F16"
    assert got["blk.0.ffn_up.weight"].dtype == "BF16"
    # quantized: one B<bytes> element per block (Q8_0: 32 weights in 34 bytes)
    assert got["blk.0.ffn_down.weight"].dtype == "B34" and got["blk.0.ffn_down.weight"].shape == (256, 16)
    assert got["blk.0.attn_k.weight"].dtype == "B18" and got["blk.0.attn_k.weight"].shape == (256, 16)
    raw = p.read_bytes()
    r = got["token_embd.weight"]
    np.testing.assert_array_equal(np.frombuffer(raw[r.offset:r.offset + r.length], np.float32).reshape(r.shape),
                                  model()["token_embd.weight"][0])


KINDS = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=5),
       alignment=st.sampled_from([None, 32, 64, 256]))
def test_any_mix_of_types_matches_gguf_reader(tmp_path_factory, spec, alignment):
    p = tmp_path_factory.mktemp("g") / "m.gguf"
    rng = np.random.default_rng(len(spec))
    tensors = {f"t{i}": (rng.standard_normal((rows, 32 * blocks)).astype(np.float32), kind)
               for i, (kind, rows, blocks) in enumerate(spec)}
    write(p, tensors, alignment)
    lay = layout_of(str(p))
    want = {t.name: (t.data_offset, t.n_bytes) for t in gguf.GGUFReader(str(p)).tensors}
    assert {r.name: (r.offset, r.length) for r in lay.regions} == want


def test_commit_export_byte_identical_and_second_version_deltas(repo, tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    write(d / "model.gguf", model(0.0))
    first = repo.commit_paths([str(d)], "v1").stats
    write(d / "model.gguf", model(1.0))  # every weight moved a little
    second = repo.commit_paths([str(d)], "v2").stats
    assert set(second.codecs) & DELTA_CODEC_NAMES, second.codecs
    assert second.stored < 0.75 * first.stored, (second.stored, first.stored)
    out = tmp_path / "out"
    repo.export("main", str(out))
    assert sha(out / "model.gguf") == sha(d / "model.gguf")
    back = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(out / "model.gguf")).tensors}
    orig = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(d / "model.gguf")).tensors}
    assert back.keys() == orig.keys() and all(np.array_equal(back[k], orig[k]) for k in orig)
    f = repo.read_file(repo.tree_of("HEAD").entries["model.gguf"].file)
    assert f.format == "gguf" and "blk.0.ffn_down.weight" in f.tensors()
