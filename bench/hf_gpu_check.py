"""GPU check of the built-in trainer's Hugging Face path (run where a GPU is lent; issue 17 point 6).

    python bench/hf_gpu_check.py [--out DIR] [--epochs 3] [--rounds 2] [--nproc 1]

Makes a tiny random-init DistilBERT (``tiny_hf``, nothing downloaded) and the
synthetic NER data as CoNLL-2003 text, then:

1. trains it under ``nbexec train`` on the GPU(s) with ``mixed_precision: auto``:
   PASS when the run ends FINISHED, its checkpoint says ``precision: bf16`` (on a
   GPU with bf16; ``fp16`` with a loss scaler elsewhere), the loss went down, and
   the checkpoint loads with ``AutoModelForTokenClassification.from_pretrained``;
2. measures steps/s of the same config under ``nbexec train`` and under bare
   torchrun of the trainer module, alternating (ABBA) for ``--rounds`` rounds,
   epoch 1 left out (CUDA warm-up): prints both medians and the ratio nbexec/bare.

Prints PASS/FAIL lines and writes ``DIR/hf_gpu_check.json``. Needs torch with CUDA
and ``nbexec[hf]``; nbexec comes from this checkout (PYTHONPATH). Runs with
``--no-tracking`` (MLflow is not needed on the GPU image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE = "nbexec.trainers.token_classification"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="where the summary goes (default: a temp dir)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--train", type=int, default=4000)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from nbexec.trainers.token_classification import data as synthetic
    from nbexec.trainers.token_classification.corpus import write_conll
    from nbexec.trainers.token_classification.tiny_hf import build_tiny_distilbert

    work = Path(tempfile.mkdtemp(prefix="nbexec-hf-gpu-"))
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    source = synthetic.generate_dataset(work / "synthetic", seed=0, num_train=args.train, num_val=500, seq_len=32)
    conll = work / "conll"
    conll.mkdir()
    for split, name in (("train", "train.txt"), ("val", "valid.txt")):
        rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines()]
        write_conll(conll / name, [(tuple(r["tokens"]), tuple(r["labels"])) for r in rows])
    words = [w for line in (conll / "train.txt").read_text().splitlines() if line for w in line.split()[:1]]
    backbone = build_tiny_distilbert(work / "tiny-distilbert", words)
    config = {
        "model": {"backbone": str(backbone), "max_length": 64},
        "training": {"learning_rate": 5e-3, "batch_size": 32, "epochs": args.epochs, "log_every": 10,
                     "warmup_ratio": 0.1, "mixed_precision": "auto"},
        "data": {"path": str(conll)},
        "launch": {"nproc": args.nproc},
    }
    (work / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    summary: dict = {"config": config}
    ok = True

    # 1. nbexec train on the GPU, mixed precision.
    run_dir = _nbexec(work, env, "check")
    state = json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())
    events = _events(run_dir)
    losses = [e["metrics"]["loss"] for e in events if e["kind"] == "metrics" and "loss" in e["metrics"]]
    import torch
    from transformers import AutoModelForTokenClassification

    want = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    reloaded = AutoModelForTokenClassification.from_pretrained(run_dir / "checkpoint")
    checks = {
        "precision": state.get("precision") == want,
        "loss went down": len(losses) > 1 and losses[-1] < losses[0],
        "from_pretrained": reloaded.config.num_labels == len(state["dataset"]["labels"]),
    }
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'} {name}: precision {state.get('precision')} (want {want}), "
              f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, val_f1 {state['metrics']['val_f1']:.3f}")
        ok &= passed
    summary["check"] = {**checks, "val_f1": state["metrics"]["val_f1"], "precision": state.get("precision")}

    # 2. steps/s, nbexec vs bare torchrun, ABBA.
    rates: dict[str, list[float]] = {"nbexec": [], "bare": []}
    for round_ in range(args.rounds):
        order = ("nbexec", "bare") if round_ % 2 == 0 else ("bare", "nbexec")
        for side in order:
            run = _nbexec(work, env, f"{side}-{round_}") if side == "nbexec" else _bare(work, env, round_, args)
            rates[side].append(_steps_per_second(_events(run)))
    medians = {side: statistics.median(v) for side, v in rates.items()}
    ratio = medians["nbexec"] / medians["bare"]
    print(f"steps/s (epochs 2..{args.epochs}): nbexec {medians['nbexec']:.1f}, bare torchrun {medians['bare']:.1f}, "
          f"ratio {ratio:.3f}; all: {rates}")
    summary["steps_per_second"] = {"runs": rates, "median": medians, "ratio": ratio}
    (out / "hf_gpu_check.json").write_text(json.dumps(summary, indent=1))
    print(f"{'PASS' if ok else 'FAIL'}: summary in {out / 'hf_gpu_check.json'}")
    return 0 if ok else 1


def _nbexec(work: Path, env: dict, name: str) -> Path:
    subprocess.run([sys.executable, "-m", "nbexec", "train", str(work / "config.json"), "--no-tracking", "--quiet",
                    "--output", str(work / "runs"), "--run-name", name], cwd=work, env=env, check=True, timeout=1800)
    return work / "runs" / name


def _bare(work: Path, env: dict, round_: int, args: argparse.Namespace) -> Path:
    run_dir = work / "bare" / str(round_)
    run_dir.mkdir(parents=True)
    bare_env = {**env, "NBEXEC_RUN_DIR": str(run_dir), "NBEXEC_EVENTS": str(run_dir / "events.jsonl"),
                "NBEXEC_CHECKPOINT_DIR": str(run_dir / "ckpt")}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                    str(args.nproc), "-m", MODULE, "--config", str(work / "config.json")],
                   cwd=run_dir, env=bare_env, check=True, timeout=1800, capture_output=True)
    return run_dir


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def _steps_per_second(events: list[dict]) -> float:
    steps = seconds = 0.0
    progress = [e for e in events if e["kind"] == "progress"]
    for epoch in sorted({e["epoch"] for e in progress if e["epoch"] > 1}):
        inside = [e for e in progress if e["epoch"] == epoch][:-1]
        if len(inside) >= 2:
            steps += inside[-1]["step"] - inside[0]["step"]
            seconds += inside[-1]["time"] - inside[0]["time"]
    return steps / seconds if seconds else float("nan")


if __name__ == "__main__":
    raise SystemExit(main())
