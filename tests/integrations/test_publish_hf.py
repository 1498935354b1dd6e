"""publish huggingface: the Hub layout (loaded back with sentence-transformers and
transformers), the model card (parsed by huggingface_hub's ModelCard), change detection
against the registry mapping, --dry-run, and the uploader seam. The Hub itself cannot be
reached from here: uploads go to a folder that plays the Hub repo (the seam), and the real
uploader is driven against a small local server speaking the Hub's commit API."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from coralfs import Repository
from coralfs.integrations import huggingface as hf
from coralfs.integrations import published as pub
from coralfs.workflow.releases import create_release
from tests.cli.test_cli import _ckpt, cli
from tests.conftest import fails, run_cli

SENTENCES = ["coralfs versions weights", "a mount serves them"]
TENSOR = "encoder.layer.0.attention.self.query.weight"


class HubFolder:
    """The seam's stand-in for the Hub: applies each upload's operations to a folder."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.calls: list[dict] = []
        os.makedirs(self.path, exist_ok=True)

    def __call__(self, repo_id, ops, message, private, tag, parent) -> str:
        for o in ops:
            dst = os.path.join(self.path, o.path)
            if o.op == "add":
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(o.local, dst)
            else:
                os.unlink(dst)
        rev = hashlib.sha1(f"{repo_id}{len(self.calls)}".encode()).hexdigest()
        self.calls.append({"repo_id": repo_id, "ops": [(o.op, o.path) for o in ops], "message": message,
                           "private": private, "tag": tag, "parent": parent, "revision": rev})
        return rev


def _encode(path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(path), device="cpu").encode(SENTENCES)


def _hidden(path) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    with torch.no_grad():
        return model(**tok(SENTENCES, return_tensors="pt", padding=True)).last_hidden_state.numpy()


def _finetuned(src: str, dst) -> str:
    """A copy of the model with one tensor changed (what a training step does)."""
    shutil.copytree(src, dst)
    sd = load_file(os.path.join(src, "model.safetensors"))
    sd[TENSOR] = sd[TENSOR] * 1.05
    save_file(sd, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return str(dst)


@pytest.fixture
def published_base(tmp_path, minilm):
    """MiniLM committed (metric loss=0.5), released v0.1.0 and published to me/base."""
    r = Repository.init(str(tmp_path / "repo"))
    r.commit_paths([minilm], "minilm", metadata={"metrics": {"loss": 0.5}})
    create_release(r, "minor")
    hub = HubFolder(tmp_path / "hub-base")
    res = hf.publish(r, "me/base", "HEAD", uploader=hub)
    yield r, hub, res
    r.close()


def test_the_published_folder_loads_with_sentence_transformers_and_transformers(published_base, minilm):
    r, hub, res = published_base
    assert hub.calls[0]["ops"] == [("add", p) for p in sorted(os.listdir(minilm) + ["1_Pooling/config.json"])
                                   if p != "1_Pooling" and os.path.isfile(os.path.join(minilm, p))]
    assert hub.calls[0]["tag"] == "v0.1.0" and hub.calls[0]["parent"] is None
    np.testing.assert_array_equal(_encode(hub.path), _encode(minilm))
    np.testing.assert_array_equal(_hidden(hub.path), _hidden(minilm))
    for name in ("model.safetensors", "tokenizer.json", "1_Pooling/config.json"):
        with open(os.path.join(hub.path, name), "rb") as a, open(os.path.join(minilm, name), "rb") as b:
            assert a.read() == b.read(), name
    # the mapping records the revision the upload made
    [e] = pub.load(r)
    assert (e.system, e.target, e.commit, e.version, e.release) == ("huggingface", "me/base", r.resolve("HEAD").hex(),
                                                                    res.revision, "v0.1.0")
    # show and releases name it
    assert f"Published: huggingface me/base {res.revision[:12]}" in cli(r.path, "show").output
    [rel] = json.loads(cli(r.path, "releases", "--json").output)
    assert [(p["system"], p["version"]) for p in rel["published"]] == [("huggingface", res.revision)]
    assert f"published: huggingface me/base {res.revision[:12]}" in cli(r.path, "releases").output
    # a damaged record is named, never read as "nothing published"
    with open(os.path.join(r.path, pub.FILE), "a") as f:
        f.write("{")
    assert "published.json is damaged" in fails(r.path, "publish", "huggingface", "me/base", "--dry-run")


def test_the_card_parses_with_model_card_and_names_commit_release_metrics(published_base):
    r, hub, _ = published_base
    card = ModelCard.load(os.path.join(hub.path, "README.md"))
    d = card.data.to_dict()
    assert d["coralfs"]["commit"] == r.resolve("HEAD").hex() and d["coralfs"]["release"] == "v0.1.0"
    assert d["coralfs"]["metrics"] == {"loss": 0.5} and d["metrics"] == ["loss"]
    assert "coralfs" in d["tags"] and "sentence-transformers" in d["tags"]   # the committed README's tags kept
    assert d["library_name"] == "sentence-transformers" and d["license"] == "apache-2.0"
    assert "base_model" not in d     # nothing recorded it came from anything
    assert "| loss | 0.5 |" in card.text and r.resolve("HEAD").hex() in card.text


def test_base_model_comes_from_the_recorded_ancestry(published_base, minilm, tmp_path):
    r, _, _ = published_base
    base = r.resolve("HEAD").hex()
    ft = _finetuned(minilm, tmp_path / "ft")
    r.create_branch("ft", "HEAD")
    r.commit_paths([ft], "fine-tuned", branch="ft",
                   metadata={"derived_from": {"commit": base, "relation": "fine-tune"}, "metrics": {"loss": 0.4}})
    r.commit_paths([ft], "one more step", branch="ft")     # the record is on its parent
    hub = HubFolder(tmp_path / "hub-ft")
    hf.publish(r, "me/ft", "ft", uploader=hub)
    d = ModelCard.load(os.path.join(hub.path, "README.md")).data.to_dict()
    # the base commit went to me/base: that is the Hub's base_model
    assert d["base_model"] == "me/base" and d["base_model_relation"] == "finetune"
    np.testing.assert_array_equal(_encode(hub.path), _encode(ft))

    # a source outside the repository, by its Hub id; coralfs's "quantized" is the Hub's too
    r.commit_paths([ft], "quantized copy", branch="ft",
                   metadata={"derived_from": {"model": "sentence-transformers/all-MiniLM-L6-v2", "relation": "quantized"}})
    assert hf.base_models(r, r.resolve("ft")) == (["sentence-transformers/all-MiniLM-L6-v2"], "quantized")
    # a path is no Hub id: left out of base_model
    r.commit_paths([ft], "from a path", branch="ft", metadata={"derived_from": {"source": "/data/model.bin"}})
    assert hf.base_models(r, r.resolve("ft")) == ([], None)


def test_a_second_publish_uploads_only_the_changed_file(published_base, minilm, tmp_path):
    r, hub, first = published_base
    again = hf.publish(r, "me/base", "HEAD", uploader=hub)
    assert again.revision is None and len(hub.calls) == 1      # same commit: nothing uploaded
    ft = _finetuned(minilm, tmp_path / "ft")
    r.commit_paths([ft], "one step")
    res = hf.publish(r, "me/base", "HEAD", uploader=hub)
    # model.safetensors changed; the card names the new commit, so it is new too
    assert hub.calls[1]["ops"] == [("add", "README.md"), ("add", "model.safetensors")]
    assert hub.calls[1]["parent"] == first.revision and hub.calls[1]["tag"] is None
    assert len(res.plan.unchanged) == 11   # of 13
    np.testing.assert_array_equal(_encode(hub.path), _encode(ft))
    assert [e.version for e in pub.load(r)] == [first.revision, res.revision]

    # a file removed from the commit is deleted from the Hub repo
    src = tmp_path / "smaller"
    shutil.copytree(ft, src)
    os.unlink(src / "data_config.json")
    r.commit_paths([str(src)], "drop data_config.json")
    hf.publish(r, "me/base", "HEAD", uploader=hub)
    assert hub.calls[2]["ops"] == [("add", "README.md"), ("delete", "data_config.json")]
    assert not os.path.exists(os.path.join(hub.path, "data_config.json"))


def test_dry_run_prints_exactly_what_publish_uploads(published_base, minilm, tmp_path):
    r, hub, _ = published_base
    r.commit_paths([_finetuned(minilm, tmp_path / "ft")], "one step")
    out = json.loads(cli(r.path, "publish", "huggingface", "me/base", "--dry-run", "--json").output)
    text = cli(r.path, "publish", "huggingface", "me/base", "--dry-run").output
    assert len(hub.calls) == 1 and len(pub.load(r)) == 1        # nothing uploaded, nothing recorded
    assert "upload model.safetensors (90868376 bytes)" in text and "11 unchanged files not uploaded" in text
    assert out["card"] in text
    hf.publish(r, "me/base", "HEAD", uploader=hub)
    assert [(o["op"], o["path"]) for o in out["operations"]] == hub.calls[1]["ops"]
    with open(os.path.join(hub.path, "README.md")) as f:
        assert f.read() == out["card"]


def test_links_inside_the_tree_are_published_as_their_file(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x01" * 100)
    os.symlink("weights.bin", src / "pytorch_model.bin")
    r = Repository.init(str(tmp_path / "repo"))
    r.commit_paths([str(src)], "with a link")
    hub = HubFolder(tmp_path / "hub")
    hf.publish(r, "me/links", "HEAD", uploader=hub)
    assert (tmp_path / "hub" / "pytorch_model.bin").read_bytes() == b"\x01" * 100
    os.unlink(src / "pytorch_model.bin")
    os.symlink("/etc/passwd", src / "pytorch_model.bin")
    r.commit_paths([str(src)], "link out of the tree")
    with pytest.raises(Exception, match="not a file of the commit: registries store no links"):
        hf.publish(r, "me/links", "HEAD", uploader=hub)
    r.close()


def test_bad_input_is_one_line_and_records_nothing(tmp_path, minilm):
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", minilm, "-m", "minilm")
    assert "is not a Hub repo id" in fails(repo, "publish", "huggingface", "bad id!!")
    assert "nope" in fails(repo, "publish", "huggingface", "me/x", "nope")
    hidden = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "0"}
    assert fails(repo, "publish", "huggingface", "me/x", env=hidden) == \
        "coralfs: error: no Hugging Face token: set HF_TOKEN or run `hf auth login`, then publish again"
    down = {**hidden, "HF_TOKEN": "hf_test", "HF_ENDPOINT": "http://127.0.0.1:9"}
    assert "Hugging Face Hub at http://127.0.0.1:9 is unreachable" in fails(repo, "publish", "huggingface", "me/x", env=down)
    assert not os.path.exists(os.path.join(repo, pub.FILE))


class FakeHub:
    """The Hub's HTTP API as huggingface_hub's create_repo, create_commit (files inline,
    "regular" upload mode) and create_tag use it; each repo a folder under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.requests: list[tuple[str, str, str]] = []     # method, path, Authorization
        self.heads: dict[str, str] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.validated: list[ModelCard] = []
        self.created: list[dict] = []
        hub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                hub.requests.append(("POST", self.path.split("?")[0], self.headers.get("Authorization", "")))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["api", "validate-yaml"]:   # the Hub checks a README's metadata before a commit
                    card = ModelCard(json.loads(data)["content"])
                    hub.validated.append(card)
                    rel = card.data.to_dict().get("base_model_relation")
                    if rel is not None and rel not in ("adapter", "merge", "quantized", "finetune"):
                        return self._send(400, {"errors": [{"message": f"base_model_relation {rel!r}"}]})
                    return self._send(200, {"errors": [], "warnings": []})
                if parts[:3] == ["api", "repos", "create"]:
                    doc = json.loads(data)
                    hub.created.append(doc)
                    rid = f"{doc.get('organization') or 'me'}/{doc['name']}" if "/" not in doc["name"] else doc["name"]
                    return self._send(200, {"url": f"{hub.url}/{rid}", "name": rid})
                if parts[0] == "api" and parts[1] == "models" and parts[4] == "preupload":
                    files = json.loads(data)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                      for f in files]})
                if parts[0] == "api" and parts[1] == "models" and parts[4] == "commit":
                    rid = f"{parts[2]}/{parts[3]}"
                    lines = [json.loads(ln) for ln in data.splitlines() if ln.strip()]
                    header = lines[0]["value"]
                    if header.get("parentCommit") and header["parentCommit"] != hub.heads.get(rid):
                        return self._send(412, {"error": "A commit has happened since. Please refresh and try again."})
                    d = os.path.join(hub.root, rid)
                    for ln in lines[1:]:
                        v = ln["value"]
                        p = os.path.join(d, v["path"])
                        if ln["key"] == "file":
                            os.makedirs(os.path.dirname(p), exist_ok=True)
                            with open(p, "wb") as f:
                                f.write(base64.b64decode(v["content"]))
                        elif ln["key"] == "deletedFile":
                            os.unlink(p)
                    oid = hashlib.sha1(data).hexdigest()
                    hub.heads[rid] = oid
                    return self._send(200, {"commitUrl": f"{hub.url}/{rid}/commit/{oid}", "commitOid": oid})
                if parts[0] == "api" and parts[1] == "models" and parts[4] == "tag":
                    hub.tags.setdefault(f"{parts[2]}/{parts[3]}", {})[json.loads(data)["tag"]] = parts[5]
                    return self._send(200, {})
                return self._send(404, {"error": f"fake hub: no route {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_real_uploader_speaks_the_hub_api(tmp_path):
    """The seam's real side: `coralfs publish huggingface` in a process of its own, its
    huggingface_hub calls answered by a local server speaking the Hub's API."""
    hub = FakeHub(str(tmp_path / "hub"))
    try:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HOME": str(tmp_path / "hf-home")}
        repo = str(tmp_path / "repo")
        cli(None, "init", repo)
        cli(repo, "commit", _ckpt(tmp_path / "c0", 0), "-m", "v1")
        cli(repo, "release", "major")
        out = run_cli("publish", "huggingface", "me/tiny", "--private", repo=repo, env=env).stdout
        assert "3 files uploaded, 0 unchanged" in out
        assert hub.created[0]["visibility"] == "private"
        assert sorted(os.listdir(tmp_path / "hub" / "me" / "tiny")) == ["README.md", "config.json", "model.safetensors"]
        assert (tmp_path / "hub/me/tiny/model.safetensors").read_bytes() == (tmp_path / "c0/model.safetensors").read_bytes()
        assert {auth for _, _, auth in hub.requests} == {"Bearer hf_test_token"}
        assert [p for _, p, _ in hub.requests][:4] == ["/api/repos/create", "/api/validate-yaml",
                                                        "/api/models/me/tiny/preupload/main", "/api/models/me/tiny/commit/main"]
        first = hub.heads["me/tiny"]
        assert hub.tags["me/tiny"] == {"v1.0.0": first}
        assert hub.validated[0].data.to_dict()["coralfs"]["release"] == "v1.0.0"

        # one file changed: it and the card are sent, with the recorded revision as parent
        with open(tmp_path / "c0" / "config.json", "w") as f:
            f.write('{"seed": 1}')
        cli(repo, "commit", str(tmp_path / "c0"), "-m", "v2")
        out = run_cli("publish", "huggingface", "me/tiny", repo=repo, env=env).stdout
        assert "2 files uploaded, 1 unchanged" in out
        assert "visibility" not in hub.created[1] and "private" not in hub.created[1]   # without --private: the Hub's default
        assert (tmp_path / "hub/me/tiny/config.json").read_text() == '{"seed": 1}'

        # someone else pushed to the Hub repo: refused in one line, nothing recorded
        hub.heads["me/tiny"] = "f" * 40
        cli(repo, "commit", _ckpt(tmp_path / "c0", 2), "-m", "v3")
        line = fails(repo, "publish", "huggingface", "me/tiny", env=env)
        assert line.startswith("coralfs: error: me/tiny changed on the Hub since coralfs published ")
        r = Repository.open(repo)
        assert [e.commit for e in pub.load(r)] == [r.resolve("HEAD~2").hex(), r.resolve("HEAD~1").hex()]
        r.close()
    finally:
        hub.close()
