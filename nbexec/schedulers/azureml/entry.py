"""First code of each process of an AzureML job (AzureML set RANK, WORLD_SIZE, MASTER_*):

    python -m nbexec.schedulers.azureml.entry --run-name NAME --config CONFIG [--data DIR] -- TARGET...

Writes the run's config (``data.path`` pointed at the mounted data input)
into ``./outputs/<NAME>/`` (AzureML keeps ``outputs/``), sets nbexec's
parent -> child variables, then becomes the worker bootstrap running TARGET
(``script.py`` or ``-m module``) exactly as under torchrun.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbexec.contract as contract


def main(argv: list[str]) -> int:
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m nbexec.schedulers.azureml.entry")
    parser.add_argument("--run-name", required=True)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--data")
    args = parser.parse_args(argv[:cut])
    target = argv[cut + 1 :]
    if not target:
        parser.error("give the target after --: script.py or -m module")
    import yaml

    run_dir = Path("outputs", args.run_name).absolute()
    (run_dir / contract.LOG_DIR).mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(args.config.read_text()) or {}
    if args.data:
        config.setdefault("data", {})["path"] = args.data
    config_path = run_dir / contract.CONFIG_FILE
    # every process of the node writes the same file: atomically, so none reads half of it
    tmp = config_path.with_name(f"{contract.CONFIG_FILE}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, config_path)
    os.environ.update({
        contract.ENV_RUN_DIR: str(run_dir),
        contract.ENV_RUN_NAME: args.run_name,
        contract.ENV_CONFIG: str(config_path),
        contract.ENV_EVENTS: str(run_dir / contract.EVENTS_FILE),
        contract.ENV_CHECKPOINT_DIR: str(run_dir / contract.CHECKPOINT_DIR),
        "PYTHONUNBUFFERED": "1",
    })
    os.execv(sys.executable, [sys.executable, "-m", "nbexec.child.bootstrap", *target])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
