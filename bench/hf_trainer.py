"""The built-in trainer on CPU: tiny-encoder vs a tiny Hugging Face DistilBERT, same data, same batch.

    python bench/hf_trainer.py [--epochs 3] [--train 2000] [--batch 16] [--nproc 2]

Writes the synthetic NER data as CoNLL-2003 text, makes a tiny random-init
DistilBERT (``tiny_hf``, 2 layers, dim 32, no download), then trains each
backbone under bare torchrun (gloo) with the trainer's config and reads its
``events.jsonl``: steps/s between the first and the last progress event of
each epoch after the first (start-up and the first epoch's warm-up left out),
and the entity F1 after each epoch. Prints a table; nothing asserts.
Needs ``nbexec[hf]`` (transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=2000, help="training sentences")
    parser.add_argument("--batch", type=int, default=16, help="per process")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from nbexec.trainers.token_classification import data as synthetic
    from nbexec.trainers.token_classification.corpus import write_conll
    from nbexec.trainers.token_classification.tiny_hf import build_tiny_distilbert

    with tempfile.TemporaryDirectory(prefix="nbexec-bench-hf-") as tmp:
        root = Path(tmp)
        source = synthetic.generate_dataset(root / "synthetic", seed=0, num_train=args.train, num_val=500, seq_len=32)
        conll = root / "conll"
        conll.mkdir()
        for split, name in (("train", "train.txt"), ("val", "valid.txt")):
            rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines()]
            write_conll(conll / name, [(tuple(r["tokens"]), tuple(r["labels"])) for r in rows])
        words = [w for line in (conll / "train.txt").read_text().splitlines() if line for w in line.split()[:1]]
        tiny_hf = build_tiny_distilbert(root / "tiny-distilbert", words)
        runs = {
            "tiny-encoder": {"backbone": "tiny-encoder"},
            "tiny DistilBERT": {"backbone": str(tiny_hf), "max_length": 64},
        }
        print(f"data: synthetic NER as CoNLL, {args.train} train / 500 val sentences; {args.nproc} x gloo, "
              f"batch {args.batch}/process, {args.epochs} epochs; torch threads 1 per rank")
        print(f"{'backbone':<16} {'params':>8} {'steps/s':>8}  val_f1 by epoch")
        for label, model in runs.items():
            run_dir = root / label.replace(" ", "-")
            run_dir.mkdir()
            lr = 2e-3 if model["backbone"] == "tiny-encoder" else 5e-3
            config = {"model": model, "data": {"path": str(conll)},
                      "training": {"learning_rate": lr, "batch_size": args.batch, "epochs": args.epochs,
                                   "log_every": 10, "warmup_ratio": 0.1}}
            (run_dir / "config.json").write_text(json.dumps(config))
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("NBEXEC_")},
                   "NBEXEC_RUN_DIR": str(run_dir), "NBEXEC_CONFIG": str(run_dir / "config.json"),
                   "NBEXEC_EVENTS": str(run_dir / "events.jsonl"), "NBEXEC_CHECKPOINT_DIR": str(run_dir / "ckpt"),
                   "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
            proc = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
                 str(args.nproc), "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
                 "-m", "nbexec.trainers.token_classification"],
                cwd=run_dir, env=env, capture_output=True, text=True, timeout=3600,
            )
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                return 1
            events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
            rate = _steps_per_second(events)
            f1 = [e["metrics"]["val_f1"] for e in events if e["kind"] == "metrics" and "val_f1" in e["metrics"]]
            state = json.loads((run_dir / "ckpt" / "trainer_state.json").read_text())
            params = _parameters(proc.stdout)
            print(f"{label:<16} {params:>8} {rate:>8.1f}  {' '.join(f'{v:.3f}' for v in f1)}"
                  f"  (precision {state['precision']})")
    return 0


def _steps_per_second(events: list[dict]) -> float:
    """Optimizer steps per second within epochs 2.. (progress events; the gaps between epochs left out)."""
    steps = seconds = 0.0
    progress = [e for e in events if e["kind"] == "progress"]
    for epoch in sorted({e["epoch"] for e in progress if e["epoch"] > 1}):
        inside = [e for e in progress if e["epoch"] == epoch][:-1]  # the last one follows validation
        if len(inside) >= 2:
            steps += inside[-1]["step"] - inside[0]["step"]
            seconds += inside[-1]["time"] - inside[0]["time"]
    return steps / seconds if seconds else float("nan")


def _parameters(stdout: str) -> str:
    for line in stdout.splitlines():
        if " parameters" in line and line.startswith("training "):
            return line.rsplit(",", 1)[-1].split()[0]
    return "?"


if __name__ == "__main__":
    raise SystemExit(main())
