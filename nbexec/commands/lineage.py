"""``nbexec lineage``: where a trained model came from, as a table (or JSON).

    nbexec lineage RUN_DIR [--study outputs/hpo/study.db] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys


def lineage_command(args: argparse.Namespace) -> int:
    """``nbexec lineage PATH``: the lineage table of a run (or checkpoint) directory."""
    from pathlib import Path

    from nbexec.lineage import extract_lineage_from_best_model

    if not Path(args.path).exists():
        print(f"nbexec: {args.path} does not exist; give a run directory (or its checkpoint/)", file=sys.stderr)
        return 2
    lineage = extract_lineage_from_best_model(args.path, args.study, study_name=args.study_name)
    print(json.dumps(lineage.to_dict(), indent=2) if args.json else str(lineage))
    return 0


def add_lineage_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``nbexec lineage``."""
    parser.add_argument("path", help="a final run's directory, or its checkpoint directory")
    parser.add_argument("--study", help="the study file (default: the one its lineage.json names)")
    parser.add_argument("--study-name", help="which study in the file (default: the recorded or only one)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
