"""``%train`` / ``%%train`` through a real Jupyter kernel: live view, result, failure, interrupt, background.

One kernel serves the whole module (tests run in file order and each leaves it
idle); the interrupt test checks that the kernel is still usable afterwards.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import FIXTURE_SCRIPTS, NOTEBOOK_SCRIPTS, TINY_CONFIG
from kernel_driver import Cell, Kernel
from live_frames import frames, widget_model_id

from nbexec.notebook.live import TAIL_RATE

pytestmark = pytest.mark.slow


def text(msg: dict[str, Any]) -> str:
    return msg["content"].get("data", {}).get("text/plain", "")


def html(msg: dict[str, Any]) -> str:
    return msg["content"].get("data", {}).get("text/html", "")


def display_id(msg: dict[str, Any]) -> str | None:
    return msg["content"].get("transient", {}).get("display_id")


def the_view(cell: Cell) -> tuple[str, list[dict[str, Any]]]:
    """The cell's run view: its display id and every rendering of it, in order."""
    displays = cell.displays()
    assert displays, f"no display output in {cell.messages!r}"
    first = displays[0]
    assert first["msg_type"] == "display_data"
    did = display_id(first)
    assert did, "the view must be a display with a display_id (so it can be updated in place)"
    return did, [m for m in displays if display_id(m) == did]


def run_dir_of(out: Path, name: str) -> Path:
    return out / name


def mlflow_status(tracking_uri: str, run_dir: Path) -> str:
    from mlflow import MlflowClient

    run_id = json.loads((run_dir / "result.json").read_text())["mlflow_run_id"]
    assert run_id, f"{run_dir}/result.json has no MLflow run id"
    return MlflowClient(tracking_uri).get_run(run_id).info.status


def test_cell_magic_streams_while_running_and_returns_the_result(kernel: Kernel, tmp_path: Path) -> None:
    cell = kernel.run(f"%%train --output {tmp_path} --run-name tiny-cell\n{TINY_CONFIG}", timeout=120)
    assert cell.ok, cell.error
    did, renders = the_view(cell)
    assert widget_model_id(renders), "while the job runs the cell shows the live widget"
    assert text(renders[0]).startswith("nbexec: tiny-cell "), "with a text fallback for front ends without widgets"

    # Lines of rank 0 were sent to the widget while the job was RUNNING, before the
    # cell's reply: the view streams, it does not wait for the end.
    shown = frames(cell.messages)
    live = [f for f in shown if "RUNNING" in f.head_text and any(t.startswith("[rank0]") for t in f.tail)]
    assert live, [f.text for f in shown]
    assert live[0].sent < renders[-1]["sent"] <= cell.reply_sent
    ended_at = json.loads((tmp_path / "tiny-cell" / "result.json").read_text())["ended_at"]
    assert live[0].sent < ended_at, "shown before the job was over"
    assert any("step 5/10" in "\n".join(f.tail) for f in live), "the trainer's lines show as they come"
    assert any('class="nbexec-progress"' in f.head and "step " in f.head_text for f in live), "progress from events"
    # The progress line and the tail agree: no frame shows a logged step ahead of the bar.
    for f in shown:
        logged = [int(n) for n in re.findall(r"step (\d+)/10 loss", "\n".join(f.tail))]
        bar = re.search(r"step (\d+)/10 \(", f.head_text)
        if logged:
            assert bar and int(bar.group(1)) >= max(logged), f.text
    # The phase said "finishing" after the last step and before the summary.
    last_step = next(i for i, f in enumerate(shown) if "step 10/10" in f.head_text)
    assert any(f.phase == "finishing" for f in shown[last_step:]), [f.phase for f in shown]
    # rate limited: at most TAIL_RATE updates a second (plus the first and the last)
    span = shown[-1].sent - shown[0].sent
    assert len(shown) <= TAIL_RATE * span + 3

    # The last rendering is the summary, in place of the live view.
    final = renders[-1]
    assert final["msg_type"] == "update_display_data"
    summary = text(final)
    assert summary.startswith("nbexec: tiny-cell FINISHED in ")
    for field in ("metrics:    ", "val_f1=", "mlflow:     ", "open:       mlflow ui", "checkpoint: ", "lineage:    ", "config hash: "):
        assert field in summary, (field, summary)
    assert str(tmp_path / "tiny-cell" / "checkpoint") in summary
    assert "var(--jp-success-color1, #16a34a)" in html(final), "FINISHED is green (the theme's green)"
    assert "<details><summary>lineage</summary>" in html(final), "lineage is there, collapsed"
    assert "data: " in summary and "synthetic-ner" in summary, "the data the trainer used"

    # The result object is the cell's value (in _), but Out[n] does not repeat the summary above it.
    assert cell.result_text is None
    after = kernel.run("r = _\nprint(type(r).__name__, r.status.value, r.ok, bool(r.mlflow_run_id), sorted(r.metrics)[:2])")
    assert after.ok, after.error
    assert after.stdout.strip() == "TrainingResult FINISHED True True ['epoch', 'learning_rate']"
    later = kernel.run("r")  # shown on its own in a later cell, it displays as usual
    assert [m for m in later.displays() if text(m).startswith("TrainingResult('tiny-cell', FINISHED")]


def test_line_magic_failure_on_rank_1_names_the_rank_and_the_exception(kernel: Kernel, tmp_path: Path) -> None:
    script = FIXTURE_SCRIPTS / "fail_rank1.py"
    cell = kernel.run(
        f"result = %train --entrypoint {script} --nproc 2 --output {tmp_path} --run-name boom --no-tracking",
        timeout=120,
    )
    assert not cell.ok
    error = cell.error
    assert error is not None and error["ename"] == "TrainingFailed"
    shown = "\n".join(error["traceback"])
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "rank 1 failed (exit code 1): ValueError: rank one exploded on batch 17" in plain
    assert 'raise ValueError("rank one exploded on batch 17")' in plain, "the rank's own traceback"
    assert str(tmp_path / "boom" / "logs" / "rank1.log") in plain, "where the logs are"
    # short and clear: no torchelastic report, none of the magic's own frames
    assert "ChildFailedError" not in plain and "torch.distributed.elastic" not in plain
    assert "magics.py" not in plain and len(plain.splitlines()) < 30, plain

    # The view ends as the FAILED summary (red); the traceback is not repeated there.
    _, renders = the_view(cell)
    final = renders[-1]
    assert text(final).startswith("nbexec: boom FAILED in ")
    assert "root cause: rank 1 failed (exit code 1): ValueError: rank one exploded on batch 17" in text(final)
    assert "Traceback" not in text(final)
    assert "var(--jp-error-color1, #dc2626)" in html(final), "FAILED is red"
    assert "mlflow:     not tracked" in text(final)


def test_interrupt_cancels_the_job_and_the_kernel_trains_again(
    kernel: Kernel, tmp_path: Path, session_tracking_store: str
) -> None:
    before = {p.pid for p in psutil.Process(kernel.pid).children(recursive=True)}
    job: list[psutil.Process] = []
    interrupted_at: list[float] = []

    def both_ranks_ready(messages: list[dict[str, Any]]) -> bool:
        shown = frames(messages)
        if not shown or not ("ready rank 0" in shown[-1].text and "ready rank 1" in shown[-1].text):
            return False
        # the whole job as it stands: guard, torchrun, workers, their grandchildren
        job.extend(p for p in psutil.Process(kernel.pid).children(recursive=True) if p.pid not in before)
        for pid in re.findall(r"grandchild (\d+)", shown[-1].text):
            job.append(psutil.Process(int(pid)))
        interrupted_at.append(time.monotonic())
        return True

    script = FIXTURE_SCRIPTS / "hang.py"
    cell = kernel.run(
        f"%train --entrypoint {script} --nproc 2 --output {tmp_path} --run-name hung --all-ranks",
        timeout=120,
        interrupt_after=both_ranks_ready,
    )
    assert interrupted_at, "the job never said it was ready"
    assert len(job) >= 6, job  # guard, torchrun, 2 workers, 2 grandchildren

    assert not cell.ok
    assert cell.error is not None and cell.error["ename"] == "KeyboardInterrupt"
    assert "run hung cancelled (KILLED)" in "\n".join(cell.error["traceback"])
    # the cell ends once cancel() saw every process gone; the wait only guards against a straggler hanging
    gone, alive = psutil.wait_procs(job, timeout=120)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"still running after the interrupted cell ended: {alive}"

    _, renders = the_view(cell)
    assert text(renders[-1]).startswith("nbexec: hung KILLED in ")
    assert "var(--jp-warn-color1, #d97706)" in html(renders[-1])
    assert mlflow_status(session_tracking_store, tmp_path / "hung") == "KILLED"

    # the same kernel runs the next job to the end
    again = kernel.run(
        f"r2 = %train --entrypoint {FIXTURE_SCRIPTS / 'ok.py'} --nproc 2 --output {tmp_path} --run-name again\n"
        "print(r2.status.value)",
        timeout=120,
    )
    assert again.ok, again.error
    assert again.stdout.strip().endswith("FINISHED")
    assert mlflow_status(session_tracking_store, tmp_path / "again") == "FINISHED"


def test_background_returns_the_handle_at_once_and_keeps_streaming(kernel: Kernel, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    script = NOTEBOOK_SCRIPTS / "until_file.py"
    launched = kernel.run(
        f"h = %train --background --entrypoint {script} --nproc 2 --output {tmp_path} --run-name bg -- {stop}\n"
        "print(type(h).__name__, h.done())",
        timeout=60,
    )
    assert launched.ok, launched.error
    # The cell is over while the job runs: it cannot end before the test creates `stop`.
    assert launched.stdout.strip() == "TrainingRun False"
    did, _ = the_view(launched)

    # Another cell runs while the job streams into the first cell's view.
    other = kernel.run(
        "import time\n"
        "deadline = time.monotonic() + 60\n"
        "while len(h.lines(0)) < 40 and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('other cell', h.status.value, len(h.lines(0)) >= 40)",
        timeout=90,
    )
    assert other.ok, other.error
    assert other.stdout.strip() == "other cell RUNNING True"
    everything = sorted(launched.messages + other.messages + kernel.stray(), key=lambda m: m["sent"])
    ours = frames(everything, widget_model_id(launched.messages))
    during = [f for f in ours if f.sent >= other.messages[0]["sent"]] if other.messages else []
    assert during, "the view kept updating while another cell ran"
    assert [f for f in during if "tick " in f.text and "RUNNING" in f.head_text]
    assert not other.displays() or all(display_id(m) == did for m in other.displays()), (
        "nothing of the job lands in the other cell's own outputs"
    )
    assert other.of_type("stream") and "tick" not in other.stdout

    stop.touch()
    waited = kernel.run("r = h.result(timeout=60)\nprint(r.status.value, h.done())", timeout=90)
    assert waited.ok, waited.error
    assert waited.stdout.strip() == "FINISHED True"
    # Late messages of earlier cells (stray) are older than the waiting cell's own: order by send time.
    final = sorted((m for m in waited.messages + kernel.stray() if display_id(m) == did), key=lambda m: m["sent"])
    assert final and text(final[-1]).startswith("nbexec: bg FINISHED in "), "the summary replaces the view"


def test_usage_and_config_mistakes_are_short_errors(kernel: Kernel) -> None:
    # IPython shows a UsageError as one line on stderr, without a traceback
    bad_option = kernel.run("%train --nproc 2 --bogus")
    assert bad_option.reply["content"]["status"] == "error"
    assert bad_option.reply["content"]["ename"] == "UsageError"
    assert "UsageError: unrecognized arguments: --bogus; see %train? for the options" in bad_option.stderr

    both = kernel.run("%%train some.yaml\ntraining: {epochs: 1}")
    assert both.reply["content"]["ename"] == "UsageError"
    assert "not both" in both.stderr

    bad_value = kernel.run("%%train --dry-run\ntraining: {epochs: -1}")
    assert bad_value.error is not None and bad_value.error["ename"] == "ConfigError"
    assert len(bad_value.error["traceback"]) <= 3, bad_value.error["traceback"]
    assert "training.epochs" in "\n".join(bad_value.error["traceback"])

    dry = kernel.run("%%train --dry-run --nproc 2\ntraining: {epochs: 1}")
    assert dry.ok, dry.error
    assert "processes:  2 (gloo)" in dry.stdout and "torch.distributed.run" in dry.stdout


def test_the_kernel_never_imports_torch(kernel: Kernel) -> None:
    """Jobs ran in this kernel (module order): torch stayed in the workers, CUDA untouched."""
    cell = kernel.run("import sys\nprint('torch' in sys.modules)")
    assert cell.ok, cell.error
    assert cell.stdout.strip() == "False"


def test_load_ext_imports_neither_torch_nor_mlflow(fresh_kernel: Kernel) -> None:
    cell = fresh_kernel.run(
        "%load_ext nbexec\n"
        "import sys, json\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'mlflow', 'ipywidgets'))\n"
        "cuda = sys.modules['torch'].cuda.is_initialized() if 'torch' in sys.modules else False\n"
        "print(json.dumps({'heavy': heavy, 'cuda': cuda, 'train': 'train' in get_ipython().magics_manager.magics['cell']}))"
    )
    assert cell.ok, cell.error
    assert json.loads(cell.stdout) == {"heavy": [], "cuda": False, "train": True}
