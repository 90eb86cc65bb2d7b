"""GPU check: nbexec on a real NVIDIA GPU, in one script (run where a GPU is lent).

    python bench/gpu_check.py [--out DIR] [--epochs 3] [--rounds 2]

Each step prints ``PASS``/``FAIL`` with what it saw; the summary is written to
``DIR/gpu_check.json``. Steps:

1. ``detect_hardware()`` in a fresh interpreter lists the GPU(s) through NVML
   or nvidia-smi without importing torch, and CUDA is still uninitialised
   after torch is imported there; ``CUDA_VISIBLE_DEVICES`` (empty, an index,
   a UUID) is honoured.
2. The launch plan with ``nproc: auto`` picks one process per visible GPU and
   the NCCL backend (``nbexec train --dry-run``).
3. Asking for more processes than GPUs is refused before anything is spawned.
4. A plain user script initialises NCCL itself on ``cuda:0`` under
   ``nbexec train`` and all-reduces a tensor.
5. The reference trainer under ``nbexec train`` runs on ``cuda:0`` and
   writes a checkpoint; ``--resume`` continues from it on the GPU.
6. Steps/s of the reference trainer under ``nbexec train`` vs bare torchrun
   of the same entrypoint and config, alternating (ABBA), epoch 1 excluded
   (CUDA warm-up): the ratio nbexec/bare.
7. Cancel mid-run through the Python API: no process of the job is left and
   the GPU holds no compute process of the job afterwards.
8. Only where MLflow imports: one tracked job per ``tracking.metrics_from``
   (parent, rank0) on the GPU, read back from ``mlflow.db``: FINISHED, the
   GPU in the hardware tag, NCCL backend, every logged loss step once.

Steps 1-7 run with ``--no-tracking`` (the GPU image has no MLflow; carry it
in as wheels for step 8). Needs torch with CUDA, pyyaml and psutil; nbexec is
taken from this checkout (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

NCCL_SCRIPT = """\
import os, torch, torch.distributed as dist
from nbexec.child import create_run_context
ctx = create_run_context()
torch.cuda.set_device(ctx.local_rank)
dist.init_process_group("nccl", device_id=torch.device(f"cuda:{ctx.local_rank}"))
t = torch.full((4,), float(ctx.rank + 1), device=f"cuda:{ctx.local_rank}")
dist.all_reduce(t)
torch.cuda.synchronize()
print(f"nccl ok: backend {dist.get_backend()} world {dist.get_world_size()} device {t.device} "
      f"sum {t.tolist()} nccl {'.'.join(map(str, torch.cuda.nccl.version()))} ctx.backend {ctx.backend} "
      f"ctx.device {ctx.device}", flush=True)
dist.destroy_process_group()
"""

PROBE = """\
import json, sys
import nbexec
from nbexec.hardware import detect_hardware
hw = detect_hardware()
out = {"hw": hw.to_dict(), "summary": hw.summary(), "torch_imported_by_detect": "torch" in sys.modules}
import torch
out["cuda_initialized_after_import"] = torch.cuda.is_initialized()
print(json.dumps(out))
"""

results: list[dict] = []


def step(name: str, ok: bool, detail: str, **data: object) -> bool:
    results.append({"step": name, "ok": ok, "detail": detail, **data})
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def env_with(**extra: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(
    argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env or env_with(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout.decode(errors="replace"), time.perf_counter() - start


def nbexec_cli(*args: str) -> list[str]:
    return [PY, "-m", "nbexec", *args]


def gpu_compute_pids() -> set[int]:
    if not shutil.which("nvidia-smi"):
        return set()
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True, text=True, check=False
    ).stdout
    return {int(x) for x in out.split() if x.strip().isdigit()}


def check_detection(work: Path) -> dict:
    code, out, _ = run([PY, "-c", PROBE], cwd=work)
    if code != 0:
        step("detect_hardware", False, out[-800:])
        return {}
    probe = json.loads(out.strip().splitlines()[-1])
    gpus = probe["hw"].get("gpus", [])
    step(
        "detect_hardware",
        bool(gpus) and not probe["torch_imported_by_detect"] and not probe["cuda_initialized_after_import"],
        f"{probe['summary']}; torch imported by detection: {probe['torch_imported_by_detect']}; "
        f"CUDA initialised after `import torch`: {probe['cuda_initialized_after_import']}",
        probe=probe,
    )
    for spec, want in (("", 0), ("0", min(1, len(gpus)))):
        c, o, _ = run([PY, "-c", PROBE], cwd=work, env=env_with(CUDA_VISIBLE_DEVICES=spec))
        n = len(json.loads(o.strip().splitlines()[-1])["hw"]["gpus"]) if c == 0 else -1
        step(f"CUDA_VISIBLE_DEVICES={spec!r}", n == want, f"{n} GPU(s) seen, expected {want}")
    uuid = gpus[0].get("uuid") if gpus else None
    if uuid:
        c, o, _ = run([PY, "-c", PROBE], cwd=work, env=env_with(CUDA_VISIBLE_DEVICES=uuid))
        n = len(json.loads(o.strip().splitlines()[-1])["hw"]["gpus"]) if c == 0 else -1
        step("CUDA_VISIBLE_DEVICES=<uuid>", n == 1, f"{n} GPU(s) seen for {uuid}")
    return probe


def epoch_seconds(text: str) -> list[float]:
    return [float(s) for s in re.findall(r"epoch \d+/\d+ done in ([0-9.]+)s", text)]


def steps_per_epoch(text: str) -> int:
    m = re.search(r"(\d+) steps/epoch", text)
    return int(m.group(1)) if m else 0


def check_tracking(work: Path, data: Path) -> None:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        print("SKIP tracked runs: mlflow is not installed here", flush=True)
        return
    for mode in ("parent", "rank0"):
        code, out, _ = run(
            nbexec_cli(
                "train",
                "--output",
                str(work / f"tracked-{mode}"),
                "--experiment",
                "gpu-check",
                "--set",
                "training.epochs=1",
                "--set",
                f"data.path={data}",
                "--set",
                f"tracking.metrics_from={mode}",
            ),
            cwd=work,
        )
        if code != 0:
            step(f"tracked run (metrics from {mode})", False, out[-800:])
            continue
        client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("gpu-check")
        (found,) = [
            r
            for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("nbexec.run_dir", "").startswith(str(work / f"tracked-{mode}"))
        ]
        tags, history = found.data.tags, client.get_metric_history(found.info.run_id, "loss")
        steps = [m.step for m in history]
        ok = (
            found.info.status == "FINISHED"
            and "GPU" in tags.get("nbexec.hardware", "")
            and tags.get("nbexec.backend") == "nccl"
            and bool(steps)
            and len(steps) == len(set(steps))
        )
        step(
            f"tracked run (metrics from {mode})",
            ok,
            f"status {found.info.status}, backend {tags.get('nbexec.backend')}, "
            f"hardware {tags.get('nbexec.hardware')!r}, loss logged at {len(steps)} steps "
            f"({len(set(steps))} distinct), val_f1 {found.data.metrics.get('val_f1')}",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or ".", help="where gpu_check.json goes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds for the steps/s ratio")
    parser.add_argument("--tracking-only", action="store_true", help="run step 8 alone (tracked runs)")
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nbexec-gpu-"))
    smi = "no nvidia-smi"
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout.strip()
    code, torch_info, _ = run(
        [PY, "-c", "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"],
        cwd=work,
    )
    print(f"nvidia-smi -L: {smi}\ntorch: {torch_info.strip()}\npython: {sys.version.split()[0]}", flush=True)

    if args.tracking_only:
        check_tracking(work, work / "data")
        return summarize(out_dir, work, smi, torch_info.strip())
    print(run(nbexec_cli("doctor"), cwd=work)[1], flush=True)
    probe = check_detection(work)
    gpu_count = len(probe.get("hw", {}).get("gpus", []))

    # 2. plan with nproc auto
    code, out, _ = run(nbexec_cli("train", "--no-tracking", "--dry-run", "--output", str(work / "dry")), cwd=work)
    m = re.search(r"processes:\s+(\d+) \((\w+)\)", out)
    step(
        "nproc auto",
        code == 0 and m is not None and int(m.group(1)) == gpu_count and m.group(2) == "nccl",
        m.group(0) if m else out[-500:],
    )

    # 3. too many processes: refused, nothing spawned
    refused_dir = work / "refused"
    code, out, _ = run(
        nbexec_cli("train", "--no-tracking", "--nproc", str(gpu_count + 1), "--output", str(refused_dir)), cwd=work
    )
    spawned = refused_dir.exists() and any(refused_dir.iterdir())
    step(
        "nproc above GPUs refused",
        code != 0 and not spawned and "GPU" in out,
        f"exit {code}, run dir created: {spawned}; {out.strip().splitlines()[-1][:300] if out.strip() else ''}",
    )

    # 4. a plain script that sets up NCCL itself
    (work / "nccl_check.py").write_text(NCCL_SCRIPT)
    code, out, _ = run(
        nbexec_cli("train", "--no-tracking", "--entrypoint", "nccl_check.py", "--output", str(work / "nccl")), cwd=work
    )
    line = next((ln for ln in out.splitlines() if "nccl ok" in ln), out[-600:])
    step("NCCL all_reduce on cuda:0 under nbexec", code == 0 and "nccl ok" in out and "cuda:0" in line, line.strip())

    # 5 + 6. reference trainer: nbexec train vs bare torchrun, alternating
    data = work / "data"
    nproc = str(max(gpu_count, 1))  # the same process count on both sides
    sets = ["--nproc", nproc, "--set", f"training.epochs={args.epochs}", "--set", f"data.path={data}"]
    cfg_file = work / "bare-config.yaml"
    cfg_file.write_text(f"training:\n  epochs: {args.epochs}\ndata:\n  path: {data}\n")
    # the data is generated once (by a first, uncounted run), so no timed run pays for it
    code, out, _ = run(nbexec_cli("train", "--no-tracking", "--output", str(work / "warm"), *sets), cwd=work)
    ok = code == 0
    step("reference trainer (warm-up run)", ok, out.strip().splitlines()[-1] if out.strip() else "")
    rates: dict[str, list[float]] = {"nbexec": [], "bare": []}
    walls: dict[str, list[float]] = {"nbexec": [], "bare": []}
    first_nbexec: Path | None = None
    for r in range(args.rounds if ok else 0):
        for who in ("nbexec", "bare") if r % 2 == 0 else ("bare", "nbexec"):
            if who == "nbexec":
                runs = work / f"runs-{r}"
                code, out, wall = run(nbexec_cli("train", "--no-tracking", "--output", str(runs), *sets), cwd=work)
                run_dir = next(runs.iterdir()) if runs.exists() else None
                text = (run_dir / "logs" / "rank0.log").read_text() if run_dir else out
                if first_nbexec is None and run_dir is not None:
                    first_nbexec = run_dir
            else:
                bare_cwd = work / f"bare-{r}"
                bare_cwd.mkdir()
                code, text, wall = run(
                    [
                        PY,
                        "-m",
                        "torch.distributed.run",
                        "--standalone",
                        "--nproc-per-node",
                        nproc,
                        "-m",
                        "nbexec.trainers.token_classification",
                    ],
                    cwd=bare_cwd,
                    env=env_with(NBEXEC_CONFIG=str(cfg_file)),
                )
            secs, n = epoch_seconds(text), steps_per_epoch(text)
            if code != 0 or len(secs) < 2 or not n:
                step(f"timed run {who} round {r}", False, text[-800:])
                continue
            rates[who].append(n * (len(secs) - 1) / sum(secs[1:]))
            walls[who].append(wall)
            print(
                f"  {who:6s} round {r}: {rates[who][-1]:.1f} steps/s (epochs 2..: {secs[1:]}), wall {wall:.2f} s",
                flush=True,
            )

    if first_nbexec is not None:
        log = (first_nbexec / "logs" / "rank0.log").read_text()
        result = json.loads((first_nbexec / "result.json").read_text())
        ckpt = result.get("checkpoint")
        step(
            "reference trainer on cuda:0",
            "on cuda:0" in log and result["status"] == "FINISHED" and bool(ckpt),
            f"status {result['status']}, backend {result['backend']}, nproc {result['nproc']}, "
            f"checkpoint {ckpt}, metrics { {k: round(v, 4) for k, v in result['metrics'].items()} }",
            first_line=next((ln for ln in log.splitlines() if "world size" in ln), ""),
        )
        code, out, _ = run(
            nbexec_cli(
                "train",
                "--no-tracking",
                "--output",
                str(work / "resumed"),
                "--set",
                f"training.epochs={args.epochs + 1}",
                "--set",
                f"data.path={data}",
                "--resume",
                str(ckpt),
            ),
            cwd=work,
        )
        resumed = re.search(r"epochs (\d+)\.\.(\d+)", out)
        step(
            "resume on GPU",
            code == 0 and resumed is not None and resumed.group(1) == str(args.epochs + 1),
            resumed.group(0) if resumed else out[-600:],
        )
    if rates["nbexec"] and rates["bare"]:
        nb, bare = statistics.median(rates["nbexec"]), statistics.median(rates["bare"])
        step(
            "steps/s nbexec vs bare torchrun",
            nb / bare >= 0.95,
            f"nbexec {nb:.1f} steps/s, bare {bare:.1f} steps/s, ratio {nb / bare:.3f}; "
            f"wall nbexec {statistics.median(walls['nbexec']):.2f} s vs bare {statistics.median(walls['bare']):.2f} s",
            rates=rates,
            walls=walls,
        )

    # 7. cancel mid-run, through the Python API
    sys.path.insert(0, str(REPO))
    os.environ["PYTHONPATH"] = env_with()["PYTHONPATH"]
    import psutil

    import nbexec

    before = gpu_compute_pids()
    handle = nbexec.launch(
        {"tracking": {"enabled": False}, "training": {"epochs": 50}, "data": {"path": str(data)}},
        output_dir=str(work / "cancel"),
    )
    deadline = time.monotonic() + 120
    while handle.progress is None and not handle.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    job = psutil.Process(handle.pid)
    tree = [job, *job.children(recursive=True)]
    on_gpu = gpu_compute_pids() - before
    started = time.perf_counter()
    handle.cancel(grace=10)
    handle.wait(30)
    took = time.perf_counter() - started
    gone, alive = psutil.wait_procs(tree, timeout=10)
    left_on_gpu = gpu_compute_pids() - before
    step(
        "cancel on GPU",
        not alive and not left_on_gpu and bool(on_gpu) and handle.status.name == "KILLED",
        f"status {handle.status.name} after {took:.2f} s; {len(tree)} processes, alive after: {len(alive)}; "
        f"GPU compute pids during run: {sorted(on_gpu)}, after: {sorted(left_on_gpu)}",
    )

    check_tracking(work, data)

    return summarize(out_dir, work, smi, torch_info.strip())


def summarize(out_dir: Path, work: Path, smi: str, torch_info: str) -> int:
    failed = [r["step"] for r in results if not r["ok"]]
    summary = {"nvidia_smi": smi, "torch": torch_info, "results": results, "failed": failed}
    (out_dir / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str))
    print(
        f"RESULT {len(results) - len(failed)}/{len(results)} steps passed" + (f"; failed: {failed}" if failed else "")
    )
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
