"""Fixtures for backup tests: checkpoint trees, a faked Colab (google.colab + marker file), MLflow stores."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE_COLAB = Path(__file__).resolve().parent / "fake_colab"
MB = 1 << 20


def write_random(path: Path, size: int, *, seed: int = 0) -> Path:
    """``size`` bytes of random data, made fast: a 1 MiB random block, each copy made unique by its index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = bytearray(os.urandom(MB))
    with open(path, "wb") as fh:
        left, i = size, 0
        while left > 0:
            block[:16] = (seed * 1_000_003 + i).to_bytes(16, "little")
            n = min(left, MB)
            fh.write(memoryview(block)[:n])
            left -= n
            i += 1
    return path


def make_checkpoint(root: Path, *, big: int = 3 * MB) -> Path:
    """A checkpoint-like tree: a large model file, an optimizer file, small JSON, a nested folder."""
    write_random(root / "model.pt", big, seed=1)
    write_random(root / "optimizer.pt", 2 * MB + 17, seed=2)
    (root / "trainer_state.json").write_text(json.dumps({"epoch": 1, "global_step": 10}))
    (root / "tokenizer").mkdir(parents=True, exist_ok=True)
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (root / "empty.txt").write_bytes(b"")
    return root


def wait_for(condition, what: str, timeout: float = 60.0) -> None:  # noqa: ANN001
    """Poll ``condition()`` until it is true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def tree_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MB), fb.read(MB)
            if x != y:
                return False
            if not x:
                return True


@pytest.fixture(autouse=True)
def not_colab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts off Colab: no marker file, Drive's mount point in the test's folder."""
    monkeypatch.setenv("NBEXEC_COLAB_MARKER", str(tmp_path / "no-colab-marker"))
    monkeypatch.setenv("NBEXEC_DRIVE_MOUNT", str(tmp_path / "content" / "drive"))
    monkeypatch.delenv("FAKE_DRIVE_FAIL", raising=False)
    for name in ("google.colab", "google.colab.drive"):
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.fixture
def fake_colab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A Colab VM as nbexec sees it: the marker file exists and ``google.colab`` is importable.

    Yields the fake Drive log (JSON lines of ``drive.*`` calls). ``google`` is a
    namespace package (protobuf lives there too), so the stand-in adds only
    ``google/colab`` to the path.
    """
    marker = tmp_path / "var" / "colab" / "hostname"
    marker.parent.mkdir(parents=True)
    marker.write_text("colab-vm\n")
    monkeypatch.setenv("NBEXEC_COLAB_MARKER", str(marker))
    log = tmp_path / "drive-calls.jsonl"
    monkeypatch.setenv("FAKE_DRIVE_LOG", str(log))
    monkeypatch.syspath_prepend(str(FAKE_COLAB))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAKE_COLAB), os.environ.get("PYTHONPATH")])))
    yield log
    for name in ("google.colab", "google.colab.drive"):
        sys.modules.pop(name, None)


def drive_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
