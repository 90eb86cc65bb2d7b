"""A stop button (SIGINT) during a study write lands after the write, not inside it."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from nbexec.hpo.trial import hold_interrupt

optuna = pytest.importorskip("optuna")


def test_sigint_inside_the_block_is_raised_after_it() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with hold_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("the rest of the block ran")
    assert finished == ["the rest of the block ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_a_study_write_interrupted_by_sigint_completes_and_the_study_stays_usable(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)

    with pytest.raises(KeyboardInterrupt):
        with hold_interrupt():
            os.kill(os.getpid(), signal.SIGINT)  # arrives before the write starts
            trial.set_user_attr("note", "written")
            study.tell(trial, 0.5)

    again = optuna.load_study(study_name="s", storage=storage)  # a fresh connection: no lock left
    (done,) = again.trials
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == 0.5
    assert done.user_attrs == {"note": "written"}
    again.set_user_attr("after", True)  # writes still go through
    assert optuna.load_study(study_name="s", storage=storage).user_attrs == {"after": True}


def test_outside_the_main_thread_it_holds_nothing() -> None:
    seen: list[object] = []

    def work() -> None:
        with hold_interrupt():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]  # signal handlers can only change in the main thread
