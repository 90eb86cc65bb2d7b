"""A Hugging Face Trainer script as people write it: report_to=["mlflow"], evaluate after training.

Tiny random-init DistilBERT (dim 32) on random token ids: nothing is downloaded.
    hf_trainer.py OUTPUT_DIR [--hold-at-step N]
--hold-at-step: at that step, write <OUTPUT_DIR>/holding and wait there (to be cancelled).
"""

import argparse
import time
from pathlib import Path

import torch
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

parser = argparse.ArgumentParser()
parser.add_argument("output_dir")
parser.add_argument("--hold-at-step", type=int, default=0)
args = parser.parse_args()


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 100, (n, 16), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "attention_mask": torch.ones(16, dtype=torch.long),
                "labels": (self.x[i, 0] > 50).long()}


class HoldAt(TrainerCallback):
    def on_step_end(self, args_, state, control, **kwargs):  # noqa: ANN001, ANN201
        if args.hold_at_step and state.global_step == args.hold_at_step and state.is_world_process_zero:
            Path(args.output_dir, "holding").write_text("holding")
            while True:  # the test cancels the job here
                time.sleep(0.1)


config = DistilBertConfig(vocab_size=100, dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                          max_position_embeddings=32, num_labels=2)
training = TrainingArguments(output_dir=args.output_dir, per_device_train_batch_size=4, num_train_epochs=1,
                             logging_steps=1, report_to=["mlflow"], save_strategy="no", use_cpu=True)
trainer = Trainer(model=DistilBertForSequenceClassification(config), args=training,
                  train_dataset=RandomTokens(32), eval_dataset=RandomTokens(8), callbacks=[HoldAt()])
trainer.train()
print("eval", trainer.evaluate())
print("HF_DONE")
