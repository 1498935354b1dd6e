"""`coralfs export onnx`: a torch model exported with torch.onnx is imported, its weights
changed in coralfs and written back into the template; onnxruntime's outputs match
torch's. Mismatches are named one by one and nothing is written."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import torch
from safetensors.torch import save_file

from coralfs import Repository
from coralfs.analysis.bump import tensor_signatures
from tests.conftest import PYTHON, fails, head_of, run_cli
from tests.formats.test_onnx import export_torch, torch_model, with_external


def _run(path, x: torch.Tensor) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]


def _props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _imported(tmp_path):
    """A torch model, its input, and a repository with the model imported as m.onnx."""
    m = torch_model()
    x = export_torch(m, tmp_path / "m.onnx")
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("import", "onnx", str(tmp_path / "m.onnx"), repo=repo)
    return m, x, repo


def test_weights_changed_in_coralfs_run_in_onnxruntime(tmp_path):
    m, x, repo = _imported(tmp_path)
    run_cli("tag", "v1.0.0", repo=repo)
    run_cli("export", "onnx", "v1.0.0", str(tmp_path / "same.onnx"), "--graph", str(tmp_path / "m.onnx"), repo=repo)
    assert np.allclose(_run(tmp_path / "same.onnx", x), m(x).detach().numpy(), atol=1e-5)
    # a training step in torch, its state dict committed as safetensors (the same names)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m(x).square().mean().backward()
    opt.step()
    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(ck / "model.safetensors"))
    run_cli("commit", str(ck), "-m", "step 1", repo=repo)
    p = run_cli("export", "onnx", "HEAD", str(tmp_path / "new.onnx"), "--graph", str(tmp_path / "m.onnx"), repo=repo)
    assert "exported 4 initializers of HEAD" in p.stdout
    want = m(x).detach().numpy()
    got = _run(tmp_path / "new.onnx", x)
    assert np.allclose(got, want, atol=1e-5) and not np.allclose(got, _run(tmp_path / "m.onnx", x), atol=1e-3)
    props = _props(tmp_path / "new.onnx")
    assert props["coralfs.commit"] == head_of(repo) and props["coralfs.release"] == "after v1.0.0"
    assert json.loads(props["coralfs.lineage"])["parents"] == [head_of(repo, "v1.0.0")]
    assert _props(tmp_path / "same.onnx")["coralfs.release"] == "v1.0.0"
    onnx.checker.check_model(str(tmp_path / "new.onnx"))
    # --external-data: the weights in OUT.onnx.<digest>.data, aligned, and the same outputs
    p = run_cli("export", "onnx", "HEAD", str(tmp_path / "ext.onnx"), "--graph", str(tmp_path / "m.onnx"),
                "--external-data", repo=repo)
    (data_name,) = _data_files(tmp_path, "ext.onnx")
    assert f"(weights in {tmp_path / data_name})" in p.stdout
    assert os.path.getsize(tmp_path / "ext.onnx") < 2048 < os.path.getsize(tmp_path / data_name)
    assert np.allclose(_run(tmp_path / "ext.onnx", x), want, atol=1e-5)
    onnx.checker.check_model(str(tmp_path / "ext.onnx"))
    # and the exported model committed again is an onnx file whose tensors are the commit's
    r = Repository.open(repo)
    st = tensor_signatures(r, r.read_file(r.tree_of("HEAD").entries["model.safetensors"].file))
    r.close()
    run_cli("import", "onnx", str(tmp_path / "ext.onnx"), repo=repo)
    r = Repository.open(repo)
    data = tensor_signatures(r, r.read_file(r.tree_of("HEAD").entries[data_name].file))
    r.close()
    assert data == st  # the same names, dtypes, shapes and values


def _data_files(d, model: str) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.startswith(model + ".") and n.endswith(".data"))


def test_a_re_export_with_external_data_never_pairs_a_model_with_other_data(tmp_path, monkeypatch):
    """A model names its data file and two files cannot be renamed at once: a re-export
    writes its data under a new name, so a crash between the two renames leaves the earlier
    model with its own data; once the new model is in place the earlier data is removed."""
    from coralfs.integrations import onnx as onnx_export
    from coralfs.objects import durable

    m, x, repo = _imported(tmp_path)
    out = tmp_path / "ext.onnx"
    args = ("export", "onnx", "HEAD", str(out), "--graph", str(tmp_path / "m.onnx"), "--external-data")
    run_cli(*args, repo=repo)
    first = _run(out, x)
    (first_data,) = _data_files(tmp_path, "ext.onnx")
    run_cli(*args, repo=repo)  # the same export again: the same name, the same bytes
    assert _data_files(tmp_path, "ext.onnx") == [first_data]
    ck = tmp_path / "ck"
    ck.mkdir()
    save_file({k: v.contiguous() * 2 for k, v in m.state_dict().items()}, str(ck / "model.safetensors"))
    run_cli("commit", str(ck), "-m", "doubled", repo=repo)
    # the new data is in place, then the process dies before the model's rename
    real = durable.write_durable

    def dies_at_the_model(path, *a, **k):
        if str(path).endswith(".onnx"):
            raise KeyboardInterrupt("killed")
        return real(path, *a, **k)

    monkeypatch.setattr(durable, "write_durable", dies_at_the_model)
    r = Repository.open(repo)
    try:
        onnx_export.export(r, "HEAD", str(out), str(tmp_path / "m.onnx"), external_data=True)
    except KeyboardInterrupt:
        pass
    finally:
        r.close()
    monkeypatch.setattr(durable, "write_durable", real)
    assert len(_data_files(tmp_path, "ext.onnx")) == 2
    assert np.array_equal(_run(out, x), first)  # the earlier model still runs on its own data
    p = run_cli(*args, repo=repo)
    (data_name,) = _data_files(tmp_path, "ext.onnx")
    assert data_name != first_data and data_name in p.stdout
    assert not np.allclose(_run(out, x), first, atol=1e-3)
    # exporting the first commit again takes its name back; other files beside the model stay
    (tmp_path / "keep.data").write_bytes(b"x")
    run_cli("export", "onnx", "HEAD~1", str(out), "--graph", str(tmp_path / "m.onnx"), "--external-data",
            repo=repo)
    assert _data_files(tmp_path, "ext.onnx") == [first_data] and (tmp_path / "keep.data").exists()


def test_a_template_with_external_data_takes_the_weights(tmp_path):
    m, x, repo = _imported(tmp_path)
    t = tmp_path / "t"
    t.mkdir()
    with_external(tmp_path / "m.onnx", t / "template.onnx")
    os.unlink(t / "template.onnx.data")  # the graph alone is enough: every initializer is replaced
    run_cli("export", "onnx", "HEAD", str(tmp_path / "out.onnx"), "--graph", str(t / "template.onnx"), repo=repo)
    assert np.allclose(_run(tmp_path / "out.onnx", x), m(x).detach().numpy(), atol=1e-5)


def test_each_mismatch_is_named_and_nothing_is_written(tmp_path):
    export_torch(torch_model(), tmp_path / "m.onnx")
    export_torch(torch_model(width=8), tmp_path / "narrow.onnx")
    ck = tmp_path / "ck"
    ck.mkdir()
    sd = {k: v.contiguous() for k, v in torch_model().state_dict().items()}
    sd["2.bias"] = sd["2.bias"].double()
    del sd["0.bias"]
    save_file(sd, str(ck / "model.safetensors"))
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", str(ck), "-m", "partial", repo=repo)
    out = tmp_path / "o.onnx"
    err = fails(repo, "export", "onnx", "HEAD", str(out), "--graph", str(tmp_path / "m.onnx"))
    assert "2 initializer(s)" in err
    assert "'0.bias' (FLOAT [32]) is not in the commit" in err
    assert "'2.bias' is FLOAT in the template, F64 in model.safetensors" in err
    err = fails(repo, "export", "onnx", "HEAD", str(out), "--graph", str(tmp_path / "narrow.onnx"))
    assert "'0.weight' has shape [8, 16] in the template, [32, 16] in model.safetensors" in err
    assert not out.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []
    # usage errors
    assert "add --graph" in fails(repo, "export", "onnx", "HEAD", str(out))
    assert "export takes REF DEST" in fails(repo, "export", "tflite", "HEAD", str(out))
    assert "no such file" in fails(repo, "export", "onnx", "HEAD", str(out), "--graph", str(tmp_path / "nope.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"\xff" * 10)
    assert "not a readable ONNX model" in fails(repo, "export", "onnx", "HEAD", str(out), "--graph",
                                                str(tmp_path / "bad.onnx"))
    assert not out.exists()


def test_a_name_in_two_files_with_different_values_needs_path(tmp_path):
    export_torch(torch_model(), tmp_path / "m.onnx")
    ck = tmp_path / "ck"
    ck.mkdir()
    os.link(tmp_path / "m.onnx", ck / "m.onnx")
    save_file({k: v.contiguous() + 1 for k, v in torch_model().state_dict().items()}, str(ck / "model.safetensors"))
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    run_cli("commit", str(ck), "-m", "both", repo=repo)
    out = str(tmp_path / "o.onnx")
    err = fails(repo, "export", "onnx", "HEAD", out, "--graph", str(tmp_path / "m.onnx"))
    assert "is in both m.onnx and model.safetensors" in err and "--path" in err
    run_cli("export", "onnx", "HEAD", out, "--graph", str(tmp_path / "m.onnx"), "--path", "model.safetensors",
            repo=repo)
    got = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    assert np.array_equal(got["0.bias"], torch_model().state_dict()["0.bias"].numpy() + 1)


BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'onnx':
            raise ImportError('blocked')
sys.meta_path.insert(0, Block())
from coralfs.cli.main import main
sys.exit(main({argv!r}))
"""


def test_without_the_onnx_package_import_works_and_export_names_the_extra(tmp_path):
    export_torch(torch_model(), tmp_path / "m.onnx")
    repo = str(tmp_path / "repo")
    run_cli("init", repo)
    argv = ["--repo", repo, "import", "onnx", str(tmp_path / "m.onnx")]
    p = subprocess.run([PYTHON, "-c", BLOCKED.format(argv=argv)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    argv = ["--repo", repo, "export", "onnx", "HEAD", str(tmp_path / "o.onnx"), "--graph", str(tmp_path / "m.onnx")]
    p = subprocess.run([PYTHON, "-c", BLOCKED.format(argv=argv)], capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip() == "coralfs: error: ONNX export support needs its library: pip install 'coralfs[onnx]'"
