"""``nbexec ui``: an MLflow UI on 127.0.0.1 for the tracking store, in the foreground.

    nbexec ui [--store URI] [--port N]    # start it (or show the one running); Ctrl-C stops one it started
    nbexec ui --stop [--store URI]        # stop the UI serving the store, whoever started it

The store is the one training jobs use (``--store``, ``$MLFLOW_TRACKING_URI``,
else ``./mlflow.db``). Pages open in MLflow's "Machine learning" view.
"""

from __future__ import annotations

import argparse
import sys


def add_ui_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``nbexec ui``."""
    parser.add_argument("--store", metavar="URI",
                        help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--stop", action="store_true", help="stop the UI serving the store and exit")


def ui_command(args: argparse.Namespace) -> int:
    """Start (or find) the UI and serve until Ctrl-C / SIGTERM; ``--stop`` stops the running one.

    Returns 0 when the UI was served and stopped (or was already running, or was stopped
    with ``--stop``), 1 when the server ended on its own or ``--stop`` found none.

    Raises:
        TrackingError: the UI could not start (the CLI prints it, exit code 3).
    """
    from nbexec.tracking.ui import start_ui, stop_ui

    if args.stop:
        stopped = stop_ui(args.store)
        if stopped is None:
            print("nbexec: no MLflow UI runs for this store", file=sys.stderr)
            return 1
        print(f"nbexec: stopped the MLflow UI at {stopped.url} (pid {stopped.pid})")
        return 0
    ui = start_ui(args.store, port=args.port)
    print(f"nbexec: {ui.describe()}", flush=True)
    if not ui.owned:
        print("nbexec: leaving it running; `nbexec ui --stop` stops it", flush=True)
        return 0
    print("nbexec: Ctrl-C stops it", flush=True)
    try:
        code = ui.wait()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP through the program's StopSignals
        ui.stop()
        print(f"\nnbexec: stopped the MLflow UI at {ui.url}", flush=True)
        return 0
    ui.stop()
    print(f"nbexec: the MLflow UI exited on its own (code {code}); its log: {ui.log_path}", file=sys.stderr)
    return 1
