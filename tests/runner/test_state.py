"""RunState: phases from events and from progress, speed and ETA, the trainer's progress over a tqdm bar."""

from __future__ import annotations

import pytest

from nbexec.runner.state import PhaseName, RunState, phase_event


def progress(step: int, total: int | None, t: float, **extra: object) -> dict[str, object]:
    return {"kind": "progress", "step": step, "total": total, "time": t, "rank": 0, **extra}


def test_phases_follow_the_job_from_launch_to_the_end() -> None:
    state = RunState(started=100.0)
    assert state.phase.name is PhaseName.STARTING and state.phase.label() == "starting · launching"
    state.apply([phase_event("starting", "rendezvous of 2 processes (gloo)", when=101.0)])
    assert state.phase.label() == "starting · rendezvous of 2 processes (gloo)"
    state.apply([progress(0, 10, 102.0)])
    assert state.phase.name is PhaseName.TRAINING and state.phase.since == 102.0
    state.apply([progress(5, 10, 103.0)])
    assert state.phase.name is PhaseName.TRAINING
    state.apply([progress(10, 10, 104.0)])  # the last step: whatever comes now is the finishing
    assert state.phase.name is PhaseName.FINISHING and state.phase.detail == "after the last step"
    state.apply([phase_event("finishing", "saving the checkpoint", when=104.5), progress(10, 10, 104.6)])
    assert state.phase.label() == "finishing · saving the checkpoint"
    state.apply([{**phase_event("finishing", "ending the MLflow run"), "source": "parent"}])
    assert state.phase.detail == "ending the MLflow run"


def test_a_bar_that_starts_over_is_training_again_but_an_explicit_finishing_stays() -> None:
    state = RunState()
    state.apply([progress(20, 20, 1.0, source="text"), progress(3, 20, 2.0, source="text")])
    assert state.phase.name is PhaseName.TRAINING, "epoch 1's bar at 100%, then epoch 2's bar"
    state.apply([phase_event("finishing", "validating", when=3.0), progress(15, 20, 4.0, source="text")])
    assert state.phase.label() == "finishing · validating"


def test_a_cancelled_job_is_stopping_whatever_comes_after() -> None:
    state = RunState()
    state.apply([progress(3, 10, 1.0)])
    state.apply([{**phase_event("stopping", "cancelled"), "source": "parent"}])
    state.apply([progress(10, 10, 2.0), phase_event("finishing", "saving the checkpoint")])
    assert state.phase.name is PhaseName.STOPPING


def test_speed_and_eta_from_the_trainers_progress_events() -> None:
    state = RunState()
    state.apply([progress(0, 100, 10.0), progress(10, 100, 12.0), progress(20, 100, 14.0)])
    assert state.progress is not None
    assert state.progress["rate"] == pytest.approx(5.0)  # 20 steps in 4 s
    assert state.progress["eta_s"] == pytest.approx(16.0)  # 80 steps left at 5 steps/s
    assert (state.last_step, state.total_steps) == (20, 100)
    state.apply([progress(100, 100, 30.0)])
    assert "eta_s" not in state.progress, "nothing left"


def test_the_trainers_events_win_over_a_bar_in_its_output() -> None:
    state = RunState()
    state.apply([progress(7, 20, 1.0, source="text", rate=2.0)])
    assert state.progress is not None and state.progress["source"] == "text"
    state.apply([progress(3, 10, 2.0)])
    state.apply([progress(9, 20, 3.0, source="text")])
    assert state.progress["step"] == 3 and state.progress.get("source") is None


def test_metrics_resources_and_data_are_kept() -> None:
    state = RunState()
    state.apply([
        {"kind": "metrics", "metrics": {"loss": 1.0}},
        {"kind": "metrics", "metrics": {"loss": 0.5, "acc": 0.7}},
        {"kind": "resources", "ranks": {"0": {"cpu_percent": 50.0}}},
        {"kind": "data", "path": "/data/ner"},
        {"kind": "phase", "phase": "my-own-phase"},  # unknown phases do not change the phase
    ])
    assert state.metrics == {"loss": 0.5, "acc": 0.7}
    assert state.resources is not None and state.resources["ranks"]["0"]["cpu_percent"] == 50.0
    assert state.data == {"kind": "data", "path": "/data/ner"}
    assert state.phase.name is PhaseName.STARTING
