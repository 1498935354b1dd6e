"""A real Hugging Face Trainer run (transformers + accelerate) on a tiny BERT built locally:
nothing comes from the hub. Its checkpoint directories hold what every Trainer checkpoint
holds: model.safetensors, optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json,
config.json and training_args.bin (a pickled TrainingArguments object)."""

from __future__ import annotations

import os
import time

import torch

TRAINER_FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                 "training_args.bin", "trainer_state.json", "config.json"}


def train(output_dir: str, *, steps: int = 6, save_steps: int = 2, save_total_limit: int = 2,
          pause_after_save: float = 0.0) -> list[str]:
    """Train ``steps`` steps, saving every ``save_steps`` and keeping the newest
    ``save_total_limit`` checkpoints (older ones are deleted by the Trainer). With
    ``pause_after_save`` the run waits after each save, as a longer training would.
    Returns the names of the checkpoints left in ``output_dir``."""
    from transformers import (BertConfig, BertForSequenceClassification, Trainer, TrainerCallback,
                              TrainingArguments)

    class Pause(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            time.sleep(pause_after_save)

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 128, (16,), generator=g),
             "attention_mask": torch.ones(16, dtype=torch.long), "labels": torch.tensor(i % 2)}
            for i in range(32)]
    args = TrainingArguments(output_dir=output_dir, max_steps=steps, save_steps=save_steps,
                             save_total_limit=save_total_limit, per_device_train_batch_size=4,
                             report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="no",
                             seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[Pause()] if pause_after_save else None)
    trainer.train()
    return sorted((n for n in os.listdir(output_dir) if n.startswith("checkpoint-")),
                  key=lambda n: int(n.split("-")[1]))
