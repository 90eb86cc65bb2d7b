"""No secret in any file nbexec or its trainer writes (finding 3).

Secrets are planted every way a user brings them: secret-named environment
variables (a token, MLflow credentials), a script's `--password X` and
`--api-key=X` arguments, secret-named config values of the built-in trainer
(`training.api_key`, `--set data.token=...`). The jobs print them, fail with
one in the exception text, save checkpoints and are backed up. Then every
byte written is searched: run dirs, checkpoints, the MLflow store and its
artifacts, the backup.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
LEAK = Path(__file__).resolve().parent / "scripts" / "leak.py"
TINY = """\
model: {d_model: 32, layers: 1, heads: 2, ff_dim: 64}
training: {learning_rate: 1.0e-2, batch_size: 16, epochs: 1, seed: 3, log_every: 5, api_key: cfgkey-eeee5555}
data: {num_train: 320, num_val: 64, seq_len: 16}
"""
SECRETS = {
    "env token": "envtoken-aaaa1111",
    "script --password": "argpass-bbbb2222",
    "script --api-key=": "argkey-cccc3333",
    "MLflow password": "mlflowpass-dddd4444",
    "config training.api_key": "cfgkey-eeee5555",
    "override data.token": "cfgtoken-ffff6666",
    "HF_TOKEN": "hf_token-gggg7777",
}


def written_with(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file() and needle in p.read_bytes()]


def test_no_planted_secret_reaches_any_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(DEMO_API_TOKEN=SECRETS["env token"], MLFLOW_TRACKING_PASSWORD=SECRETS["MLflow password"],
               HF_TOKEN=SECRETS["HF_TOKEN"])
    nbexec = [sys.executable, "-m", "nbexec.cli", "train", "--nproc", "2"]
    failed = subprocess.run(
        [*nbexec, "--entrypoint", str(LEAK), "--", "--password", SECRETS["script --password"],
         f"--api-key={SECRETS['script --api-key=']}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / "tiny.yaml").write_text(TINY)
    trained = subprocess.run(
        [*nbexec, "tiny.yaml", "--set", f"data.token={SECRETS['override data.token']}", "--backup",
         str(tmp_path / "backup")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert trained.returncode == 0, trained.stdout + trained.stderr
    (tmp_path / "tiny.yaml").unlink()  # the user's own file, not one nbexec wrote
    assert (tmp_path / "backup").is_dir() and list((tmp_path / "outputs").rglob("trainer_state.json"))

    found = {name: written_with(tmp_path, value) for name, value in SECRETS.items()}
    leaked = {name: files for name, files in found.items() if files}
    assert leaked == {}, f"{len(leaked)} of {len(SECRETS)} planted secrets were written: {leaked}"
    terminal = failed.stdout + failed.stderr + trained.stdout + trained.stderr
    assert not [name for name, value in SECRETS.items() if value in terminal]
    assert "REDACTED" in failed.stderr  # the failure is still reported, without the value
