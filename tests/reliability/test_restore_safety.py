"""Restore safety: a tampered backup cannot reach outside its destinations, and a failed restore changes nothing.

Each test takes a picture of its whole folder (every file's bytes and mtime, every link, every
directory) before the restore and compares it after: "nothing was written" means the two pictures
are the same, the backup itself and the folders around the destinations included.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbexec.backup import backup_run, immediate_backup_if_needed, restore, verify_backup
from nbexec.backup.record import MANIFEST_NAME
from nbexec.errors import BackupError
from nbexec.result import RunStatus, TrainingResult

TAMPERED = "may have been tampered with"
UNCHANGED = "nothing was changed"
EXPERIMENT = "safety"


# --- pictures of folders -------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def picture(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: a file's sha256, size and mtime, a link's target, a directory."""
    seen: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(root):  # links to folders are listed, not followed
        for name in [*dirs, *files]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir",)
            else:
                st = path.stat()
                seen[rel] = ("file", sha256(path), st.st_size, st.st_mtime_ns)
    return seen


def changes(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]) -> list[str]:
    """What differs between two pictures, one line per entry (empty: nothing changed)."""
    lines = [f"new: {k}" for k in sorted(after.keys() - before.keys())]
    lines += [f"gone: {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"changed: {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
    return lines


def leftovers(root: Path) -> list[str]:
    """Temporary or moved-aside files a restore may leave behind."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if "before-restore" in p.name or p.name.endswith(".nbexec-tmp"))


# --- runs and their backups ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backed:
    """A finished run, its MLflow store (when tracked) and its backup location."""

    project: Path
    run_dir: Path
    location: Path
    db: Path | None = None
    run_id: str | None = None


def finished_run(run_dir: Path, *, mlflow_run_id: str | None = None) -> TrainingResult:
    ckpt = run_dir / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "model.pt").write_bytes(os.urandom(256 * 1024))
    (ckpt / "optimizer.pt").write_bytes(os.urandom(64 * 1024 + 7))
    (ckpt / "trainer_state.json").write_text(json.dumps({"epoch": 1, "global_step": 10}))
    (run_dir / "config.yaml").write_text(f"tracking: {{experiment: {EXPERIMENT}}}\n")
    result = TrainingResult(run_name=run_dir.name, run_dir=run_dir, status=RunStatus.FINISHED, exit_code=0,
                            started_at=time.time() - 5, ended_at=time.time(), nproc=2, backend="gloo",
                            config_hash="0123456789abcdef", command=("torchrun",), checkpoint=ckpt,
                            mlflow_run_id=mlflow_run_id)
    result.write()
    return result


def run_backup(tmp_path: Path) -> Backed:
    """An untracked run backed up with ``backup_run``: one component, ``run``."""
    project = tmp_path / "project"
    result = finished_run(project / "outputs" / "run-1")
    record = backup_run(result.run_dir, tmp_path / "backups")
    return Backed(project, result.run_dir, Path(record.location))


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real MLflow SQLite store with one finished run (made once; tests copy it)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow-store")
    db = root / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment(EXPERIMENT, artifact_location=str(root / "mlartifacts"))
    run = client.create_run(experiment, run_name="run-1")
    for step in range(20):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run.info.run_id)
    return db, run.info.run_id


@pytest.fixture
def tracked(tmp_path: Path, mlflow_store: tuple[Path, str]) -> Backed:
    """A tracked run backed up with ``backup_run``: ``run``, ``mlflow.db`` and ``mlartifacts``."""
    template, run_id = mlflow_store
    project = tmp_path / "project"
    project.mkdir()
    db = project / "mlflow.db"
    shutil.copyfile(template, db)
    artifact = project / "mlartifacts" / run_id / "artifacts" / "config.yaml"
    artifact.parent.mkdir(parents=True)
    artifact.write_text("model: tiny\n")
    result = finished_run(project / "outputs" / "run-1", mlflow_run_id=run_id)
    record = backup_run(result.run_dir, tmp_path / "backups", tracking_uri=f"sqlite:///{db}")
    location = Path(record.location)
    assert set(json.loads((location / MANIFEST_NAME).read_text())["components"]) == {"run", "mlflow.db",
                                                                                      "mlartifacts"}
    return Backed(project, result.run_dir, location, db, run_id)


def edit_manifest(location: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = location / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def entry_of(path: Path) -> dict[str, Any]:
    """A manifest entry that matches ``path`` (what a forger would write)."""
    st = path.stat()
    return {"size": st.st_size, "sha256": sha256(path), "mtime_ns": st.st_mtime_ns,
            "dest_mtime_ns": st.st_mtime_ns, "dest_ctime_ns": st.st_ctime_ns}


def flip_byte(path: Path, offset: int) -> None:
    """Damage one byte; size and mtime stay (only the contents tell)."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x5A]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def log_more(db: Path, run_id: str) -> None:
    """The live store moves on after the backup (so a restore over it is a conflict)."""
    from mlflow.tracking import MlflowClient

    from nbexec.tracking.store import forget_database

    MlflowClient(tracking_uri=f"sqlite:///{db}").set_tag(run_id, "after", "the backup")
    forget_database(f"sqlite:///{db}")


def nbexec_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, "-m", "nbexec", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


# --- finding 2: crafted manifests ----------------------------------------------------------------------------------
# Each forgery edits a real run backup and returns the entry the error must name. The restore goes to
# <tmp>/restored/run-1 (to={"run": ...}) unless the forgery is about where a component goes by default.


@dataclass(frozen=True)
class Forgery:
    name: str
    craft: Callable[[Path, dict[str, Any], Path], str]  # (location, manifest, outside folder) -> entry named
    to_run_dir: bool = True


def _dotdot_key(loc: Path, m: dict[str, Any], outside: Path) -> str:
    key = "run/../../escape.txt"  # with --run-dir D: D/../../escape.txt
    payload = loc.parent / "escape.txt"  # where the key points from the backup
    payload.write_text("planted\n")
    m["files"][key] = entry_of(payload)
    return key


def _absolute_key(loc: Path, m: dict[str, Any], outside: Path) -> str:
    target = outside / "escape.txt"
    key = f"run/{target}"  # "run//tmp/.../escape.txt": D / "/tmp/.../escape.txt" is the absolute path
    payload = loc / "run" / str(target).lstrip("/")
    payload.parent.mkdir(parents=True)
    payload.write_text("planted\n")
    m["files"][key] = entry_of(payload)
    return key


def _absolute_component_path(loc: Path, m: dict[str, Any], outside: Path) -> str:
    secret = outside / "secret.txt"  # read from outside the backup, written into D
    m["components"]["run"]["path"] = str(outside)
    m["files"][str(secret)] = entry_of(secret)
    return str(outside)


def _dotdot_component_path(loc: Path, m: dict[str, Any], outside: Path) -> str:
    rel = os.path.relpath(outside, loc)  # ../../../outside
    m["components"]["run"]["path"] = rel
    m["files"][f"{rel}/secret.txt"] = entry_of(outside / "secret.txt")
    return rel


def _file_link_in_backup(loc: Path, m: dict[str, Any], outside: Path) -> str:
    key = "run/checkpoint/model.pt"
    (loc / key).unlink()
    (loc / key).symlink_to(outside / "secret.txt")
    m["files"][key] = entry_of(outside / "secret.txt")
    return key


def _folder_link_in_backup(loc: Path, m: dict[str, Any], outside: Path) -> str:
    shutil.copytree(loc / "run" / "checkpoint", outside / "ckpt")  # the same bytes, reached through a link
    shutil.rmtree(loc / "run" / "checkpoint")
    (loc / "run" / "checkpoint").symlink_to(outside / "ckpt", target_is_directory=True)
    return "run/checkpoint/model.pt"


def _relative_source(loc: Path, m: dict[str, Any], outside: Path) -> str:
    m["components"]["run"]["source"] = "escaped-run"  # would land wherever the restore runs
    return "escaped-run"


def _nul_in_key(loc: Path, m: dict[str, Any], outside: Path) -> str:
    m["files"]["run/a\x00b"] = dict(m["files"]["run/config.yaml"])
    return "run/a\\x00b"


def _size_not_a_number(loc: Path, m: dict[str, Any], outside: Path) -> str:
    m["files"]["run/config.yaml"]["size"] = "lots"
    return "run/config.yaml"


FORGERIES = [
    Forgery("dotdot-key", _dotdot_key),
    Forgery("absolute-key", _absolute_key),
    Forgery("component-path-absolute", _absolute_component_path),
    Forgery("component-path-dotdot", _dotdot_component_path),
    Forgery("file-link-in-backup", _file_link_in_backup),
    Forgery("folder-link-in-backup", _folder_link_in_backup),
    Forgery("relative-source", _relative_source, to_run_dir=False),
    Forgery("nul-in-key", _nul_in_key),
    Forgery("size-not-a-number", _size_not_a_number),
]


@pytest.fixture
def forged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Forgery], tuple[Backed, str]]]:
    """Make a run backup, forge its manifest; the working directory is <tmp>/cwd."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for the backup to read\n")

    def make(forgery: Forgery) -> tuple[Backed, str]:
        backed = run_backup(tmp_path)
        named: list[str] = []
        edit_manifest(backed.location, lambda m: named.append(forgery.craft(backed.location, m, outside)))
        return backed, named[0]

    yield make


@pytest.mark.parametrize("forgery", FORGERIES, ids=[f.name for f in FORGERIES])
def test_a_forged_manifest_is_refused_naming_the_entry_and_nothing_is_written(
    tmp_path: Path, forged: Callable[[Forgery], tuple[Backed, str]], forgery: Forgery
) -> None:
    backed, named = forged(forgery)
    to = {"run": tmp_path / "restored" / "run-1"} if forgery.to_run_dir else None
    before = picture(tmp_path)
    with pytest.raises(BackupError) as info:
        restore(backed.location, to=to)
    message = str(info.value)
    assert named in message and TAMPERED in message and UNCHANGED in message, message
    assert changes(before, picture(tmp_path)) == []


def test_cli_refuses_a_dotdot_key_with_run_dir(tmp_path: Path,
                                               forged: Callable[[Forgery], tuple[Backed, str]]) -> None:
    """The reported case: ``nbexec restore LOCATION --run-dir D`` with a key ``run/../../x``."""
    backed, named = forged(FORGERIES[0])
    before = picture(tmp_path)
    proc = nbexec_cli("restore", str(backed.location), "--run-dir", str(tmp_path / "restored" / "run-1"),
                      cwd=tmp_path / "cwd")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert named in proc.stderr and TAMPERED in proc.stderr and UNCHANGED in proc.stderr
    assert changes(before, picture(tmp_path)) == []


def test_a_link_in_the_destination_cannot_carry_files_outside_it(tmp_path: Path) -> None:
    backed = run_backup(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (backed.run_dir / "checkpoint" / "model.pt").write_bytes(b"changed since the backup")
    (backed.run_dir / "checkpoint" / "optimizer.pt").unlink()
    shutil.move(backed.run_dir / "checkpoint", tmp_path / "elsewhere")
    (backed.run_dir / "checkpoint").symlink_to(outside, target_is_directory=True)
    before = picture(tmp_path)
    with pytest.raises(BackupError) as info:
        restore(backed.location, overwrite=True)
    message = str(info.value)
    assert str(backed.run_dir / "checkpoint") in message and "outside" in message and UNCHANGED in message
    assert changes(before, picture(tmp_path)) == []
    assert list(outside.iterdir()) == []


def test_verify_refuses_a_forged_manifest_and_a_backup_over_it_deletes_nothing_outside(tmp_path: Path) -> None:
    """The next backup drops files the old manifest lists: a forged ``..`` key must not reach outside."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(os.urandom(4096))
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's work\n")
    record = immediate_backup_if_needed(ckpt, backup_enabled=True, target=tmp_path / "backups", project="p",
                                        run_name="r")
    assert record is not None
    location = Path(record.location)
    key = f"ckpt/{os.path.relpath(victim, location / 'ckpt')}"
    edit_manifest(location, lambda m: m["files"].__setitem__(key, entry_of(victim)))

    with pytest.raises(BackupError, match=TAMPERED) as info:
        verify_backup(location)
    assert key in str(info.value)
    again = immediate_backup_if_needed(ckpt, backup_enabled=True, target=tmp_path / "backups", project="p",
                                       run_name="r")
    assert again is not None
    assert victim.read_text() == "someone's work\n"
    assert key not in verify_backup(location).files


# --- finding 4: all or nothing -------------------------------------------------------------------------------------


def test_damaged_mlflow_db_with_overwrite_leaves_the_live_store_byte_identical(tracked: Backed) -> None:
    """The reported case: ``nbexec restore --overwrite`` from a backup whose ``mlflow.db`` is damaged."""
    assert tracked.db is not None and tracked.run_id is not None
    log_more(tracked.db, tracked.run_id)
    (tracked.run_dir / "checkpoint" / "optimizer.pt").unlink()  # something the restore would bring back
    flip_byte(tracked.location / "mlflow" / "mlflow.db", 4096 + 100)
    root = tracked.location.parent.parent.parent
    before = picture(root)

    proc = nbexec_cli("restore", str(tracked.location), "--overwrite", cwd=tracked.project)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "mlflow/mlflow.db" in proc.stderr and "does not match the manifest" in proc.stderr
    assert UNCHANGED in proc.stderr
    assert changes(before, picture(root)) == []
    assert leftovers(root) == []
    rows = sqlite3.connect(tracked.db).execute("SELECT value FROM tags WHERE key = 'after'").fetchall()
    assert rows == [("the backup",)]


def test_a_database_that_matches_its_manifest_but_is_not_whole_is_never_swapped_in(tracked: Backed) -> None:
    """Only the integrity check can tell: the forged manifest has the damaged file's own sha256."""
    assert tracked.db is not None and tracked.run_id is not None
    log_more(tracked.db, tracked.run_id)
    copy = tracked.location / "mlflow" / "mlflow.db"
    with open(copy, "r+b") as fh:
        fh.truncate(copy.stat().st_size // 2)
    edit_manifest(tracked.location, lambda m: m["files"].__setitem__("mlflow/mlflow.db", entry_of(copy)))
    root = tracked.location.parent.parent.parent
    before = picture(root)

    with pytest.raises(BackupError) as info:
        restore(tracked.location, overwrite=True)
    message = str(info.value)
    assert "mlflow/mlflow.db" in message and "integrity_check" in message and UNCHANGED in message, message
    assert changes(before, picture(root)) == []
    assert leftovers(root) == []


def test_a_failure_midway_without_overwrite_leaves_nothing_new_and_a_good_restore_then_works(
    tracked: Backed,
) -> None:
    """The run's files come first and would be in place when the damaged ``mlflow.db`` is reached."""
    assert tracked.db is not None and tracked.run_id is not None
    # the VM was recycled: the checkpoint, the store and the artifacts are gone; the config is still there
    shutil.rmtree(tracked.run_dir / "checkpoint")
    tracked.db.unlink()
    shutil.rmtree(tracked.project / "mlartifacts")
    db_copy = tracked.location / "mlflow" / "mlflow.db"
    flip_byte(db_copy, 4096 + 100)
    root = tracked.location.parent.parent.parent
    before = picture(root)

    with pytest.raises(BackupError) as info:
        restore(tracked.location)
    message = str(info.value)
    assert "mlflow/mlflow.db" in message and UNCHANGED in message, message
    assert changes(before, picture(root)) == []
    assert not (tracked.run_dir / "checkpoint").exists() and not tracked.db.exists()

    flip_byte(db_copy, 4096 + 100)  # the backup is whole again: the same restore now succeeds
    result = restore(tracked.location)
    manifest = verify_backup(tracked.location)
    assert result.files_restored == len(manifest.files) - 2  # config.yaml and result.json were still there
    assert result.checkpoint == str(tracked.run_dir / "checkpoint")
    for key in manifest.component_files("run"):
        assert sha256(tracked.run_dir / key.removeprefix("run/")) == manifest.files[key]["sha256"], key
    assert sha256(tracked.db) == manifest.files["mlflow/mlflow.db"]["sha256"]
    assert (tracked.project / "mlartifacts" / tracked.run_id / "artifacts" / "config.yaml").is_file()
    assert leftovers(root) == []


def test_a_rename_that_fails_while_swapping_in_puts_back_what_was_already_swapped(tmp_path: Path) -> None:
    """An immutable file (chattr +i) cannot be moved: a real failure in the middle of swapping files in."""
    backed = run_backup(tmp_path)
    ckpt = backed.run_dir / "checkpoint"
    (ckpt / "model.pt").write_bytes(b"newer weights")  # swapped in first, then must come back
    (ckpt / "optimizer.pt").unlink()  # placed second, then must go again
    stuck = ckpt / "trainer_state.json"
    stuck.write_text('{"epoch": 3}')
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE and ext4 or similar)")
    try:
        before = picture(tmp_path)
        with pytest.raises(BackupError) as info:
            restore(backed.location, overwrite=True)
        after = picture(tmp_path)
    finally:
        subprocess.run([chattr, "-i", str(stuck)], check=True)
    message = str(info.value)
    assert "trainer_state.json" in message and UNCHANGED in message, message
    assert changes(before, after) == []
    assert (ckpt / "model.pt").read_bytes() == b"newer weights"


def test_overwrite_keeps_each_replaced_database_aside(tracked: Backed) -> None:
    """The success path: the live store is replaced, the old one kept aside, twice in a row without clobbering."""
    assert tracked.db is not None and tracked.run_id is not None
    backup_sha = verify_backup(tracked.location).files["mlflow/mlflow.db"]["sha256"]
    asides = []
    for _ in range(2):
        log_more(tracked.db, tracked.run_id)
        live = tracked.db.read_bytes()
        result = restore(tracked.location, overwrite=True)
        assert sha256(tracked.db) == backup_sha
        [aside] = result.moved_aside
        assert Path(aside).read_bytes() == live
        asides.append(aside)
    assert asides[0] != asides[1] and all(Path(a).is_file() for a in asides)
    assert [p for p in leftovers(tracked.project) if "before-restore" not in p] == []


def test_a_replaced_database_takes_its_wal_along(tracked: Backed) -> None:
    """A writer that died in WAL mode left committed rows in ``mlflow.db-wal``: they belong to the replaced
    store (kept aside), and must not be replayed into the restored one."""
    assert tracked.db is not None and tracked.run_id is not None
    crash = ("import os, sqlite3, sys\n"
             "conn = sqlite3.connect(sys.argv[1])\n"
             "conn.execute('PRAGMA journal_mode=WAL')\n"
             "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
             "conn.execute(\"INSERT INTO tags (key, value, run_uuid) VALUES ('crash', 'in the wal', ?)\", (sys.argv[2],))\n"
             "conn.commit()\n"
             "os._exit(0)  # killed: no checkpoint, the -wal stays\n")
    subprocess.run([sys.executable, "-c", crash, str(tracked.db), tracked.run_id], check=True, timeout=60)
    assert Path(f"{tracked.db}-wal").is_file()

    result = restore(tracked.location, overwrite=True)
    [aside] = result.moved_aside
    assert not Path(f"{tracked.db}-wal").exists() and Path(f"{aside}-wal").is_file()
    assert sha256(tracked.db) == verify_backup(tracked.location).files["mlflow/mlflow.db"]["sha256"]

    def crash_rows(db: Path | str) -> list[tuple[str]]:
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            return conn.execute("SELECT value FROM tags WHERE key = 'crash'").fetchall()
        finally:
            conn.close()

    assert crash_rows(tracked.db) == []
    assert crash_rows(aside) == [("in the wal",)]
