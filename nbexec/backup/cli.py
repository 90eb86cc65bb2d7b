"""``nbexec backup`` and ``nbexec restore``: the command-line face of :mod:`nbexec.backup`.

    nbexec backup RUN_DIR --to drive|PATH [--project P] [--tracking-uri sqlite:///mlflow.db] [--study study.db]
    nbexec backup --verify LOCATION
    nbexec restore LOCATION [--run-dir DIR] [--mlflow-db FILE] [--overwrite]

A restore is all or nothing: it fails before changing anything, or puts everything back.

Exit codes: 0 done, 4 backup or restore failed (the message says why and what to do).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_BACKUP = 4


def add_backup_commands(sub: Any) -> None:
    """Add the ``backup`` and ``restore`` subcommands to ``nbexec``'s subparsers."""
    backup = sub.add_parser(
        "backup",
        help="back a finished run up (run dir + checkpoint, mlflow.db, artifacts), or verify a backup",
        description="Back a finished run directory up, verified and incremental, to a folder or Google Drive.",
    )
    backup.add_argument("run_dir", nargs="?", help="the run directory (<output>/<run name>)")
    backup.add_argument("--to", dest="target", metavar="drive|PATH", help="where backups go (a folder, or 'drive')")
    backup.add_argument("--project", help="folder level under the target (default: the run's experiment)")
    backup.add_argument("--tracking-uri", help="MLflow sqlite:/// store to include (default: $MLFLOW_TRACKING_URI, "
                        "else ./mlflow.db when it exists)")
    backup.add_argument("--no-tracking", action="store_true", help="do not include the MLflow store")
    backup.add_argument("--study", help="an Optuna study.db to include")
    backup.add_argument("--verify", metavar="LOCATION", help="only verify an existing backup against its manifest")

    restore = sub.add_parser(
        "restore",
        help="restore a backup (checkpoint, run dir, mlflow.db, artifacts, study), verified",
        description="Restore a backup made by nbexec, verified and all or nothing; prints the checkpoint to pass "
                    "to --resume.",
    )
    restore.add_argument("location", help="the backup folder (holds nbexec-backup.json)")
    restore.add_argument("--run-dir", help="put the run directory here instead of where it came from")
    restore.add_argument("--mlflow-db", help="put mlflow.db here instead of where it came from")
    restore.add_argument("--overwrite", action="store_true",
                         help="replace files that differ (a replaced database is kept beside it as "
                              "<name>.before-restore-<time>)")


def run_backup_command(args: argparse.Namespace) -> int:
    """Run ``nbexec backup`` / ``nbexec restore``; returns the exit code."""
    from nbexec.errors import BackupError

    try:
        if args.command == "restore":
            return _restore(args)
        return _backup(args)
    except BackupError as err:
        print(f"nbexec: {args.command} failed: {err}", file=sys.stderr)
        return EXIT_BACKUP


def _backup(args: argparse.Namespace) -> int:
    from nbexec.backup import backup_run, verify_backup

    if args.verify:
        manifest = verify_backup(args.verify)
        print(f"nbexec: backup {args.verify} verified: {len(manifest.files)} files match the manifest")
        return 0
    if not args.run_dir or not args.target:
        print("nbexec backup: give RUN_DIR and --to drive|PATH (or --verify LOCATION)", file=sys.stderr)
        return 2
    record = backup_run(args.run_dir, args.target, project=args.project,
                        tracking_uri=None if args.no_tracking else _tracking_uri(args.tracking_uri),
                        study=args.study)
    print(f"nbexec: backed up {record.source}\n  backup:     {record.summary()}\n  manifest:   {record.manifest}")
    for note in record.notes:
        print(f"  note:       {note}")
    return 0


def _tracking_uri(given: str | None) -> str | None:
    import os
    from pathlib import Path

    if given:
        return given
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    default = Path.cwd() / "mlflow.db"
    return f"sqlite:///{default}" if default.is_file() else None


def _restore(args: argparse.Namespace) -> int:
    from nbexec.backup import restore

    to = {}
    if args.run_dir:
        to["run"] = args.run_dir
    if args.mlflow_db:
        to["mlflow.db"] = args.mlflow_db
    result = restore(args.location, to=to, overwrite=args.overwrite)
    print(f"nbexec: restored {result.location} ({result.files_restored} files, "
          f"{result.files_skipped} already there)")
    for name, path in result.paths.items():
        print(f"  {name + ':':<13}{path}")
    for path in result.moved_aside:
        print(f"  moved aside: {path}")
    if result.checkpoint:
        print(f"  resume with: nbexec train CONFIG --resume {result.checkpoint}")
    if result.tracking_uri:
        print(f"  MLflow:      {result.tracking_uri}")
    return 0


__all__ = ["add_backup_commands", "run_backup_command", "EXIT_BACKUP"]
