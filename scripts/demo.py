"""The demo behind scripts/demo: real weights in, a mounted tag out, loaded by path."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minilm_series import build  # noqa: E402

WORK = os.environ.get("CORALFS_DEMO_DIR", os.path.join(tempfile.gettempdir(), "coralfs-demo"))


def sh(*args: str) -> str:
    print(f"$ coralfs {' '.join(args)}", flush=True)
    p = subprocess.run([sys.executable, "-m", "coralfs", *args], capture_output=True, text=True)
    print((p.stdout + p.stderr).rstrip(), flush=True)
    if p.returncode:
        raise SystemExit(p.returncode)
    return p.stdout


EMBED = """
import sys, numpy as np
from sentence_transformers import SentenceTransformer
a = SentenceTransformer(sys.argv[1], device="cpu").encode(["weights, versioned"])
b = SentenceTransformer(sys.argv[2], device="cpu").encode(["weights, versioned"])
print(bool(np.array_equal(a, b)))
"""


TRAIN_STEP = """
import json, os, sys, torch, transformers
from safetensors.torch import load_file, save_file
stage, scripts = sys.argv[1], sys.argv[2]
sys.path.insert(0, scripts)
from minilm_series import _steps
cfg = transformers.BertConfig.from_pretrained(stage)          # read through the mount
model = transformers.BertModel(cfg)
sd = load_file(os.path.join(stage, "model.safetensors"))
model.load_state_dict(sd, strict=False)
opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
loss = _steps(torch, model, cfg, opt, 5, torch.Generator().manual_seed(7))   # 5 real AdamW steps
new = model.state_dict()
out = {k: (new[k] if k in new else v).detach().contiguous() for k, v in sd.items()}
tmp = os.path.join(stage, "model.safetensors.tmp")
save_file(out, tmp, metadata={"format": "pt"})                 # the trainer's temp-then-rename save
os.replace(tmp, os.path.join(stage, "model.safetensors"))
with open(os.path.join(stage, "trainer_state.json"), "w") as f:
    json.dump({"global_step": 15, "loss": loss}, f)
print(f"{loss:.3g}")
"""


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    series = os.path.join(WORK, "series")
    print("== building a real fine-tuning series from the packaged all-MiniLM-L6-v2 weights", flush=True)
    idx = build(series, checkpoints=4, steps=10, finetunes=1, finetune_steps=10)
    repo = os.path.join(WORK, "repo")
    mnt = os.path.join(WORK, "mnt")
    subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(mnt, exist_ok=True)
    os.environ["CORALFS_REPO"] = repo
    sh("init", repo)
    for c in idx["main"]:
        metrics = ["--metric", f"loss={c['loss']:.4f}"] if c["loss"] is not None else []
        sh("commit", os.path.join(series, "fp32", c["name"]), "-m", f"step {c['step']}", *metrics)
        if c["step"] == 0:
            sh("tag", "v1.0.0", "-m", "the published weights")
    sh("branch", "finetune", "v1.0.0")
    ft = idx["finetunes"][0]
    sh("commit", os.path.join(series, "fp32", ft["name"]), "-m", "a separate fine-tune", "--branch", "finetune")
    sh("log", "--oneline", "--graph")
    sh("diff", "HEAD~1", "--stat")
    sh("stats")
    sh("mount", repo, f"{mnt}@v1.0.0")
    try:
        src = os.path.join(series, "fp32", "main-0", "model.safetensors")
        got = os.path.join(mnt, "model.safetensors")
        print(f"sha256 through the mount equals the original: {sha(got) == sha(src)}")
        # In a child process: a loaded model keeps the mount's files memory-mapped, and a
        # mount with mapped files is busy until they are released.
        same = subprocess.run([sys.executable, "-c", EMBED, mnt, os.path.dirname(src)], capture_output=True,
                              text=True, check=True).stdout.strip()
        print(f"sentence-transformers from the mount gives the same embedding: {same}")
        sh("mounts")
    finally:
        sh("umount", mnt)
    print("== a writable staging mount: a training step saves into it by path, then a commit", flush=True)
    stage = os.path.join(WORK, "stage")
    subprocess.run(["fusermount3", "-u", stage], capture_output=True)
    os.makedirs(stage, exist_ok=True)
    sh("mount", repo, stage, "--write", "--branch", "finetune")
    try:
        loss = subprocess.run([sys.executable, "-c", TRAIN_STEP, stage, os.path.dirname(os.path.abspath(__file__))],
                              check=True, capture_output=True, text=True).stdout.strip()
        print(f"5 AdamW steps on the weights read from the mount, saved back into it (loss {loss})", flush=True)
        sh("status", "--mount", stage)
        sh("commit", "--mount", stage, "-m", "continued fine-tune, 5 more steps", "--metric", f"loss={loss}")
    finally:
        sh("umount", stage, "--keep")
    sh("log", "--oneline", "finetune")
    sh("fsck")


if __name__ == "__main__":
    main()
