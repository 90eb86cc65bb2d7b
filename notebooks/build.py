"""Write the example notebooks from their source below and execute them in place.

    python notebooks/build.py            # write + execute every notebook (outputs committed)
    python notebooks/build.py --no-run   # write only
    python notebooks/build.py --scrub-only   # make the committed outputs' paths relative, nothing else

Committed outputs hold no absolute path of the build machine: after executing,
every path in them is rewritten by the ``[paths: ...]`` rules of ``sanitize.cfg``
(the notebooks folder becomes ``./``, the venv ``<venv>/``, a temporary folder
``<tmp>/``), the rules nbval applies to fresh outputs before comparing.

The notebooks are tested with nbval (``pytest --nbval-lax notebooks``): every
cell must run, and cells marked ``# NBVAL_CHECK_OUTPUT`` must print what the
committed notebook shows. Those cells print only what is stable across
machines; run names, ids, times and paths are masked by ``sanitize.cfg``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
TINY = (HERE / "tiny.yaml").read_text()
TINY_BODY = "\n".join(ln for ln in TINY.splitlines() if ln and not ln.startswith("#"))


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, *, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


QUICKSTART = [
    md("""
# nbexec quick start: train from a cell

`%train` and `%%train` launch a real PyTorch DDP job (`torchrun`, one process per GPU,
or 2 CPU processes with gloo) from the notebook and show it **in the cell**: the resolved
command, the log lines of rank 0 as they are printed, a progress bar fed by the trainer,
the latest metrics, and at the end a summary with the MLflow run and the lineage of the model.

The kernel itself stays light: training runs in subprocesses, so loading the extension
imports neither PyTorch nor MLflow, and never touches CUDA.
"""),
    code("%load_ext nbexec"),
    code("""
# NBVAL_CHECK_OUTPUT
import sys

print("torch" in sys.modules, "mlflow" in sys.modules)
"""),
    md("""
## `%%train`: the config is the cell

The cell body is the YAML config (the same format as `nbexec train config.yaml` on the
command line). Options are the command line's: `--nproc`, `--set key=value`, `--output`,
`--experiment`, `--run-name`, `--entrypoint` / `-m`, `--no-tracking`, `--backup`,
`--dry-run`, and `-- args for the script`. `%train?` lists them all.

This is the built-in reference trainer (token classification on synthetic data) at a tiny size.
"""),
    code("%%train --nproc 2 --experiment quickstart\n" + TINY_BODY),
    md("""
The cell's value is the `TrainingResult` (also in `_`): status, metrics, checkpoint,
MLflow run id, run directory. Every rank's full log is in `<run dir>/logs/rank<N>.log`.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
result = _
print(result.status, result.ok)
print(sorted(result.metrics))
print(result.checkpoint.name, result.mlflow_run_id is not None)
"""),
    md("""
## `%train`: a config file, and jobs in the background

`%train CONFIG [options]` takes a config file. With `--background` the handle comes back
at once and the view keeps updating in *this* cell while you work in others.
`--rank 1` (repeatable) or `--all-ranks` picks whose lines are shown.
"""),
    code("run = %train tiny.yaml --background --set training.epochs=2"),
    code("""
print(run)  # the handle: status, step; run.cancel() stops every process of the job
"""),
    code("""
# NBVAL_CHECK_OUTPUT
result = run.result()  # waits; raises TrainingFailed if a rank failed
print(result.status, result.nproc, result.backend)
"""),
    md("""
## When a rank fails

The error names the rank, its exception and traceback, and where the logs are,
instead of a page of `torchrun` output. Any script runs unchanged (`--entrypoint`),
with arguments after `--`.
"""),
    code(
        "%train --entrypoint scripts/broken_train.py --nproc 2 --no-tracking",
        tags=("raises-exception",),
    ),
    md("""
## When a job hangs

A hang costs more than a crash: one rank is stuck while the others wait for it in a
collective, and nothing is printed. This script does it on purpose: rank 1 never gets
to the `all_reduce` rank 0 waits in. `launch.stall_timeout` (5 minutes by default) is
5 seconds here, so nbexec soon says the job stalled, where each rank is, and which one
is stuck; the cell's **Stacks** button shows the same at any time.
"""),
    code(
        "run = %train --entrypoint scripts/stuck_allreduce.py --nproc 2 --no-tracking --background "
        "--set launch.stall_timeout=5"
    ),
    code("""
# NBVAL_CHECK_OUTPUT
import time

for _ in range(600):  # nbexec finds the stall by itself (no rank printed anything for 5 s): wait for it
    if run.stall is not None:
        break
    time.sleep(0.5)
print(run.stall.message)
print("stuck:", run.stall.ranks, "| saved:", run.stall.stacks.path.name.startswith("stacks-"))
"""),
    md("""
`run.stacks()` takes every rank's stacks now, without stopping the job (so do the
Stacks button and `nbexec stacks <run dir>` in a terminal), shows them side by side,
and saves them in the run's `logs/`. The MLflow run of a tracked job is tagged
`nbexec.stall` with the stacks as an artifact; `--set launch.on_stall=cancel` would
have stopped the job.
"""),
    code("run.stacks()"),
    code("""
# NBVAL_CHECK_OUTPUT
run.cancel()
print(run.status)
"""),
    md("""
## Interrupting

The kernel's stop button (or `run.cancel()` for a background job) stops every process
of the job, including what the training script started itself; the run ends `KILLED`
in MLflow, and the next `%train` works as usual.

## Where things are

- `outputs/<run name>/`: `config.yaml`, `command.txt`, `logs/`, `events.jsonl`,
  `checkpoint/`, `result.json`.
- MLflow: `./mlflow.db` unless `MLFLOW_TRACKING_URI` says otherwise; the summary
  shows the run id and how to open it (`mlflow ui --backend-store-uri ...`).
"""),
]


API = [
    md("""
# nbexec from Python: the seed's functions

The same path as the magics, as functions: check and plan a launch, run it to the end
(`execute_training_subprocess`), or start it and keep a handle (`launch`).
Nothing here needs a notebook; it works the same in a script.
"""),
    code("""
import nbexec

hardware = nbexec.detect_hardware()  # NVML / nvidia-smi; never initialises CUDA
print(hardware.summary())
"""),
    code("""
# NBVAL_CHECK_OUTPUT
CONFIG = {
    "model": {"backbone": "tiny-encoder", "d_model": 32, "layers": 1, "heads": 2, "ff_dim": 64},
    "training": {"learning_rate": 1.0e-2, "batch_size": 16, "epochs": 1, "seed": 3, "log_every": 5},
    "data": {"num_train": 320, "num_val": 64, "seq_len": 16},
    "launch": {"nproc": 2},
}
config = nbexec.load_config(CONFIG)  # validated; a mistake raises ConfigError naming the field
print(nbexec.should_use_ddp(config))
checks = nbexec.verify_training_environment(config)  # raises EnvironmentCheckError listing every problem
print(all(check.ok for check in checks))
"""),
    code("""
import shlex

print(shlex.join(nbexec.build_training_command(config)))  # an argv list, never a shell string
"""),
    md("""
## Run to the end

`execute_training_subprocess` streams rank-prefixed lines (`[rank1!]` marks stderr) and
returns the `TrainingResult`; a failing rank raises `TrainingFailed`.
"""),
    code("""
result = nbexec.execute_training_subprocess(config=CONFIG, output_dir="outputs")
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print(result.status, result.ok, result.nproc, result.backend)
print(sorted(result.metrics))
print(nbexec.TrainingResult.load(result.run_dir).status)  # result.json in the run directory
"""),
    md("""
## Start, look inside, wait

`launch` returns a handle at once: `status`, `progress`, `metrics`, `lines(rank, n)`,
`wait(timeout)`, `result()`, `cancel()`.
"""),
    code("""
run = nbexec.launch(CONFIG, overrides=["training.epochs=2"], output_dir="outputs")
print(run)
"""),
    code("""
# NBVAL_CHECK_OUTPUT
status = run.wait(timeout=300)
print(status, run.progress["step"], run.progress["total"])
last = run.lines(rank=0, n=1)[0]  # the most recent line of rank 0 (LogLine: rank, stream, text, time)
print(last.source, last.stream)
"""),
    md("""
## Failures are data

`TrainingFailed` carries the failing rank, its exit code, the exception type, message and
traceback from that rank, and the log paths.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
try:
    nbexec.execute_training_subprocess(
        entrypoint="scripts/broken_train.py", output_dir="outputs", nproc=2,
        overrides=["tracking.enabled=false"], stream=False,
    )
except nbexec.TrainingFailed as err:
    cause = err.root_cause
    print(err.rank, cause.exit_code, cause.exc_type)
    print(cause.message)
    print(sorted(err.log_paths))
"""),
    md("""
## MLflow

Each run is an MLflow run (opened by this process, closed with the job's outcome).
"""),
    code("""
# NBVAL_CHECK_OUTPUT
import mlflow

tracked = mlflow.get_run(result.mlflow_run_id)
print(tracked.info.status, tracked.data.tags["nbexec.run_name"] == result.run_name)
print(sorted(k for k in tracked.data.metrics if k.startswith("val_")))
"""),
]

HPO_LINEAGE = [
    md("""
# From a sweep to a traceable checkpoint: HPO, final training, lineage

An Optuna study (SQLite) whose trials are real training jobs (each its own run directory and
an MLflow run nested under the study's), then the final training with the best trial's config,
an immediate backup of its checkpoint, and the lineage of the model:
data fingerprint -> study -> best trial -> final run -> checkpoint -> backup.
Needs the HPO extra: `pip install 'nbexec[hpo]'`.
"""),
    code("%load_ext nbexec"),
    code("""
import shutil

import optuna

shutil.rmtree("outputs/hpo", ignore_errors=True)  # a fresh study each time this notebook runs
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials table says what Optuna would log
"""),
    md("""
## `%%hpo`: the search space is the cell

Dotted config keys and their distributions (`float`/`int` with `low`, `high`, `log`, `step`,
or `categorical` with `choices`). The options are `nbexec hpo`'s: the base config, `--trials`
(the size the study should reach), `--study`, `--objective` (default `val_loss`), `--direction`,
`--set`, `--seed`, `--final`... The table updates as trials end; the cell returns the `HpoResult`.
"""),
    code("""%%hpo tiny.yaml --trials 3 --study outputs/hpo/study.db --seed 0 --quiet
training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}"""),
    code("""
# NBVAL_CHECK_OUTPUT
sweep = _
print(len(sweep.trials), sweep.counts())
print(sweep.best.number in range(3), sorted(sweep.best.params))
print(len(sweep.best.intermediate) >= 1)  # values reported while the trial ran (what pruners see)
"""),
    md("""
## Resuming: `n_trials` is the size of the study

The same call with a larger `n_trials` (or after an interruption, the same one) runs only what is
missing; an interrupted trial runs again under its own number with its own params. Here the
Python API asks for 4 trials of the same study: one more runs.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
import nbexec

SPACE = {"training.learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True}}
more = nbexec.run_hpo("tiny.yaml", SPACE, 4, study_path="outputs/hpo/study.db", seed=0)
print(more.ran, len(more.trials), more.study_name == sweep.study_name)
"""),
    md("""
## Final training with the best trial, backed up at once

`run_final_training_workflow` trains the best trial's config, backs the checkpoint up right away
(`backup_enabled` / `backup_to_drive`; when this nbexec has no backup capability the result says
"backup not available"), writes `lineage.json` beside the checkpoint, and tags the MLflow run.
"""),
    code("""
final = nbexec.run_final_training_workflow("outputs/hpo/study.db", backup_enabled=True,
                                           backup_target="outputs/backups")
final
"""),
    code("""
# NBVAL_CHECK_OUTPUT
lineage = final.lineage
print(final.result.status, final.backup.status in ("done", "unavailable"))
print(lineage.best_trial.number == more.best.number, lineage.best_trial.params == dict(more.best.params))
print(lineage.final_run.mlflow_run_id == final.result.mlflow_run_id)
print(lineage.data.fingerprint == lineage.study.data_fingerprint, len(lineage.checkpoint.sha256))
"""),
    md("""
## The lineage, from files or from MLflow

`extract_lineage_from_best_model` rebuilds the record from the model directory and the study file
alone; the MLflow tags (`nbexec.lineage.*`) hold the same record. On the command line:
`nbexec lineage <run dir>`. With a tracking server, the run ids in the table are links.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
from nbexec.lineage import read_lineage_tags

rebuilt = nbexec.extract_lineage_from_best_model(final.result.run_dir, "outputs/hpo/study.db")
print(rebuilt == lineage, read_lineage_tags(final.result.mlflow_run_id) == lineage)
"""),
    code("lineage"),
    code("print(lineage)"),
]

PANEL = [
    md("""
# nbexec training panel: a form, Train and Stop, the run, and the runs before it

`nbexec.TrainingPanel` is the same training path as `%train` behind a form: the fields
are checked by the same validation as a config file **while you type** (a bad value is
marked, says what is allowed, and disables Train), Train starts the job in the
background (the kernel stays free), Stop ends it (every process; the run ends `KILLED`).
The panel shows the run live (log tail with a rank selector, progress bar, latest
metrics), then the summary, a loss curve, and the experiment's recent runs from MLflow;
picking one of them loads its config back into the form.

Here the form starts from the tiny reference config, so a run takes seconds on CPU.
"""),
    code("""
import nbexec

panel = nbexec.TrainingPanel.from_config("tiny.yaml")
panel
"""),
    md("""
Everything in the form is also reachable from Python (handy for tests and for
filling the form from code). The config it describes is an ordinary `TrainingConfig`:
"""),
    code("""
# NBVAL_CHECK_OUTPUT
config = panel.config()
print(config.model["backbone"], config.training["learning_rate"], config.launch.nproc, config.backup.enabled)
"""),
    md("""
A value the trainer would reject is caught in the form, before anything starts:
"""),
    code("""
# NBVAL_CHECK_OUTPUT
import html
import re

panel.fields["learning_rate"].value = 5.0
print(panel.train_button.disabled)
print(html.unescape(re.sub("<[^>]+>", "", panel.error.value)))  # the message shown next to the form
panel.fields["learning_rate"].value = 0.01
print(panel.train_button.disabled)
"""),
    md("""
Clicking **Train** above does the same as `panel.train()`: it returns the run's handle
at once, and the panel follows the run. Here we wait for it, then read the panel.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
run = panel.train()
print(run.wait(timeout=300))
print(panel.status.value)
print(sorted(panel.curve_metrics))
print(panel.history_rows[0].name == run.name, panel.history_rows[0].status)
"""),
    md("""
The table under the panel lists the experiment's recent runs (status, start, duration,
key params, final metrics, run id); the **load config of** picker puts a run's config
back into the form. From Python: `panel.load_run(run_id)`.
"""),
]


BACKUP = [
    md("""
# Backups that survive Colab: back up, verify, restore, resume

A Colab VM can be recycled at any moment, and the checkpoint and the MLflow history
(`mlflow.db`) go with it. With `--backup`, nbexec copies the run right after it finishes:
the run directory with its checkpoint, a consistent copy of `mlflow.db` (SQLite's online
backup, so a store being written to is never caught half-way) and the MLflow artifacts.
Every file's sha256 goes into a manifest and is checked after the copy; files are
written under a temporary name and renamed, so a backup killed half-way never leaves a
damaged file behind; a second backup of unchanged files copies nothing.

**On Colab** use `--backup drive`: Google Drive is mounted (once; an already mounted Drive
is reused) before training starts, and the run lands in
`MyDrive/nbexec/<experiment>/<run name>/`. Off Colab (like here) give a folder.
"""),
    code("%load_ext nbexec"),
    code("%%train --nproc 2 --experiment backups --backup backups\n" + TINY_BODY),
    md("""
The summary's **backup** row says where the copy is and when it was verified; the same
record is in `result.backup`, in `result.json`, in the lineage, and on the MLflow run as
`nbexec.backup.*` tags. A backup that fails never fails the training: the result stays
`FINISHED`, the row turns red and says why (the CLI exits with code 4).
"""),
    code("""
# NBVAL_CHECK_OUTPUT
from pathlib import Path

import mlflow

import nbexec

result = _
record = nbexec.BackupRecord.from_dict(result.backup)
print(result.status, record.verified, record.files_copied > 0, record.files_skipped)
location = Path(record.location)
print(location.relative_to(Path.cwd()).parts[:2])
manifest = nbexec.verify_backup(location)  # hashes every file again; BackupError names any that differ
print(sorted(manifest.components))
print(sorted(k for k in manifest.files if k.startswith("run/checkpoint/")))
print(mlflow.get_run(result.mlflow_run_id).data.tags["nbexec.backup.location"] == record.location)
"""),
    md("""
## Any checkpoint, any time: `immediate_backup_if_needed`

The function behind `--backup` (also used after HPO trials and the final training).
A second backup of the same, unchanged checkpoint copies nothing.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
first = nbexec.immediate_backup_if_needed(
    result.checkpoint, backup_enabled=True, target="backups", project="checkpoints", run_name=result.run_name
)
again = nbexec.immediate_backup_if_needed(
    result.checkpoint, backup_enabled=True, target="backups", project="checkpoints", run_name=result.run_name
)
print(first.files_copied, first.files_skipped, "->", again.files_copied, again.files_skipped)
"""),
    md("""
## A fresh session: restore, then resume

`nbexec.restore(location)` (or `nbexec restore LOCATION` in a terminal) checks every file
against the manifest and puts each part back where it came from; `to=` puts parts
elsewhere. Here the backup is restored into `restored/`, as a new VM would get it back,
and training resumes from the restored checkpoint for one more epoch.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
fresh = Path("restored") / result.run_name  # a new folder, as a new VM would start from
restored = nbexec.restore(
    location,
    to={"run": fresh / "run", "mlflow.db": fresh / "mlflow.db",
        "mlartifacts": fresh / "mlartifacts" / result.mlflow_run_id},
)
print(restored.files_restored == len(manifest.files), Path(restored.checkpoint).name)
history = mlflow.MlflowClient(restored.tracking_uri).get_metric_history(result.mlflow_run_id, "loss")
print(len(history) > 0)  # the restored store has the run's whole metric history
"""),
    code("resumed = %train tiny.yaml --nproc 2 --experiment backups --quiet --resume {restored.checkpoint} --set training.epochs=2"),
    code("""
# NBVAL_CHECK_OUTPUT
import json

state = json.loads((resumed.checkpoint / "trainer_state.json").read_text())
print(resumed.status, state["epoch"], [h["epoch"] for h in state["history"]])
print(mlflow.get_run(resumed.mlflow_run_id).data.tags["nbexec.resumed_from"] == restored.checkpoint)
"""),
    md("""
## On Colab

```python
%train config.yaml --backup drive          # mounts Drive, backs up to MyDrive/nbexec/<experiment>/<run>
```
In a new Colab session:
```python
import nbexec
nbexec.mount_drive()                        # the authorisation prompt, once per session
r = nbexec.restore("/content/drive/MyDrive/nbexec/<experiment>/<run name>")
%train config.yaml --resume {r.checkpoint}
```
Keep `mlflow.db` and Optuna's `study.db` on the VM's disk (SQLite on Drive's mount corrupts
and locks); the backups carry consistent copies of them. `nbexec.backup.flush_drive(unmount=True)`
pushes every pending write to Drive before you close the session.
"""),
]

HF_NER = [
    md("""
# Hugging Face backbones and real NER data

The built-in trainer fine-tunes any Hugging Face encoder for token classification
(`model.backbone`: a model id such as `distilbert-base-uncased`, or a directory written by
`save_pretrained`) on CoNLL-2003 text, JSONL, or a `datasets` dataset saved with `save_to_disk`.
It needs `pip install 'nbexec[hf]'`.

This notebook downloads nothing: it makes a tiny random-init DistilBERT and its WordPiece
tokenizer locally, and writes the synthetic NER data as CoNLL-2003 text. With network, put
`distilbert-base-uncased` in `backbone` instead: each node downloads it once into its Hugging
Face cache while the other ranks wait.
"""),
    code("""
# NBVAL_CHECK_OUTPUT
import json
from pathlib import Path

from nbexec.trainers.token_classification import data as synthetic
from nbexec.trainers.token_classification.corpus import write_conll
from nbexec.trainers.token_classification.tiny_hf import build_tiny_distilbert

source = synthetic.generate_dataset("outputs/data/hf-demo-synthetic", seed=0, num_train=320, num_val=64, seq_len=16)
conll = Path("outputs/data/hf-demo-conll")
conll.mkdir(parents=True, exist_ok=True)
for split, name in (("train", "train.txt"), ("val", "valid.txt")):
    rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines()]
    write_conll(conll / name, [(r["tokens"], r["labels"]) for r in rows])
print("\\n".join((conll / "train.txt").read_text().splitlines()[:6]))

words = [line.split()[0] for line in (conll / "train.txt").read_text().splitlines() if line]
backbone = build_tiny_distilbert("outputs/tiny-distilbert", words)  # 2 layers, dim 32, random weights
print(sorted(p.name for p in backbone.iterdir()))
"""),
    md("""
## The seed's example

`execute_training_subprocess` with a Hugging Face backbone: a 2-process DDP job (gloo on CPU),
word labels aligned to sub-tokens (the first sub-token of a word carries its label), AdamW with
warmup and linear decay, entity-level precision, recall and F1 as seqeval computes them.
"""),
    code("""
import nbexec

CONFIG = {
    "model": {"backbone": "outputs/tiny-distilbert", "max_length": 48},
    "training": {"learning_rate": 5.0e-3, "batch_size": 16, "epochs": 2, "warmup_ratio": 0.1, "log_every": 5},
    "launch": {"nproc": 2},
}
result = nbexec.execute_training_subprocess(config=CONFIG, output_dir="outputs",
                                            data_path="outputs/data/hf-demo-conll", stream=False)
"""),
    code("""
# NBVAL_CHECK_OUTPUT
print(result.status, result.nproc, result.backend)
print(sorted(k for k in result.metrics if k.startswith("val_")))
print(0.0 <= result.metrics["val_f1"] <= 1.0)
"""),
    md("""
## The checkpoint is a Hugging Face model

`checkpoint/` holds the last epoch in `save_pretrained` form (plus the optimizer and
`trainer_state.json`, to resume), `checkpoint/best/` the epoch with the best
`training.best_metric` (default `val_f1`).
"""),
    code("""
# NBVAL_CHECK_OUTPUT
import transformers
from transformers import AutoModelForTokenClassification, AutoTokenizer

transformers.utils.logging.disable_progress_bar()
model = AutoModelForTokenClassification.from_pretrained(result.checkpoint)
tokenizer = AutoTokenizer.from_pretrained(result.checkpoint)
print(model.config.id2label)
print(sorted(p.name for p in result.checkpoint.iterdir()))
print(sorted(json.loads((result.checkpoint / "best" / "best.json").read_text())))
"""),
    code("""
import torch

words = ["Alice", "visited", "Paris"]
inputs = tokenizer([words], is_split_into_words=True, return_tensors="pt")
with torch.no_grad():
    predicted = model(**inputs).logits.argmax(-1)[0].tolist()
first = {w: i for i, w in reversed(list(enumerate(inputs.word_ids(0)))) if w is not None}
print([(word, model.config.id2label[predicted[first[n]]]) for n, word in enumerate(words)])
"""),
    md("""
## Resume

A later job continues from the checkpoint at the next epoch (`%train ... --resume DIR`,
`nbexec train --resume DIR`, or `resume_from=`).
"""),
    code("""
# NBVAL_CHECK_OUTPUT
more = nbexec.execute_training_subprocess(
    config={**CONFIG, "training": {**CONFIG["training"], "epochs": 3}}, output_dir="outputs",
    data_path="outputs/data/hf-demo-conll", resume_from=result.checkpoint, stream=False)
state = json.loads((more.checkpoint / "trainer_state.json").read_text())
print(more.status, [h["epoch"] for h in state["history"]])
"""),
]

NOTEBOOKS = {
    "01_quickstart_magics.ipynb": QUICKSTART,
    "02_python_api.ipynb": API,
    "03_hpo_lineage.ipynb": HPO_LINEAGE,
    "04_backup_restore.ipynb": BACKUP,
    "06_training_panel.ipynb": PANEL,
    "07_huggingface_ner.ipynb": HF_NER,
}


def write(name: str, cells: list[nbformat.NotebookNode]) -> Path:
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = HERE / name
    nbformat.write(nb, path)
    return path


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nb.metadata["language_info"] = {"name": "python"}  # no interpreter version churn in diffs
    nbformat.write(scrub_paths(nb), path)


# --- no absolute path of the build machine in a committed notebook -----------------------------

def path_rules(cfg: Path = HERE / "sanitize.cfg") -> list[tuple[re.Pattern[str], str]]:
    """The ``[paths: ...]`` rules of sanitize.cfg: nbval sanitizes fresh outputs with the same ones,
    so a notebook written here and one executed under nbval compare equal."""
    rules = re.findall(r"^\[paths:[^\]]*\]\n^regex: (.*)$\n^replace: (.*)$", cfg.read_text(), flags=re.MULTILINE)
    return [(re.compile(regex), replace) for regex, replace in rules]


def scrub_text(text: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for regex, replace in rules:
        text = regex.sub(replace, text)
    return text


def scrub_paths(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Outputs (and the saved widget state) with the machine's paths made relative or placeholders:
    ``sqlite:////home/me/nbexec/notebooks/mlflow.db`` -> ``sqlite:///./mlflow.db``, the venv's python
    -> ``<venv>/bin/python``, a temporary folder -> ``<tmp>/``. Images (base64) are left alone."""
    rules = path_rules()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return scrub_text(value, rules)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: v if k in BINARY_KEYS or k.startswith("image/") else walk(v) for k, v in value.items()}
        return value

    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(walk(dict(output))) for output in cell.outputs]
    widgets = nb.metadata.get("widgets")
    if widgets:
        nb.metadata["widgets"] = nbformat.from_dict(walk(dict(widgets)))
    return nb


BINARY_KEYS = frozenset({"buffers", "application/pdf"})  # base64: never rewritten


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="write the notebooks without executing them")
    parser.add_argument("--scrub-only", action="store_true",
                        help="only make the paths in the committed outputs relative (no writing, no executing)")
    parser.add_argument("names", nargs="*", help="only these notebooks")
    args = parser.parse_args(argv)
    if args.scrub_only:
        for path in sorted(HERE.glob("*.ipynb")):
            if not args.names or path.name in args.names:
                nbformat.write(scrub_paths(nbformat.read(path, as_version=4)), path)
                print(f"scrubbed {path.relative_to(HERE.parent)}")
        return 0
    for name, cells in NOTEBOOKS.items():
        if args.names and name not in args.names:
            continue
        path = write(name, cells)
        if not args.no_run:
            execute(path)
        print(f"wrote {path.relative_to(HERE.parent)}" + ("" if args.no_run else " (executed)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
