"""Stall detection's rules and words, without a job: times are given, nothing waits."""

from __future__ import annotations

from pathlib import Path

from nbexec.runner.stall import BEHIND, SILENT, StallFinding, StallWatch, describe_stall, rank_list
from nbexec.stacks.parse import Frame, ThreadStack
from nbexec.stacks.snapshot import RankStacks, StackSnapshot

T0 = 1000.0


def test_silent_fires_after_the_timeout_since_the_last_output_and_once():
    watch = StallWatch(60, started=T0)
    watch.output(T0 + 10)
    assert watch.check(T0 + 69) is None
    found = watch.check(T0 + 70)
    assert found is not None and found.kind == SILENT and found.idle_s == 60 and found.ranks == ()
    assert watch.check(T0 + 500) is None  # said once; quiet until the job moves again
    assert not watch.recovered()
    watch.output(T0 + 501)
    assert watch.recovered() and not watch.stalled
    assert watch.check(T0 + 560) is None and watch.check(T0 + 561) is not None  # armed again


def test_before_any_rank_starts_the_startup_allowance_counts_too():
    watch = StallWatch(5, started=T0, startup_s=60)
    assert watch.check(T0 + 64) is None  # torchrun starting, the MLflow run opening
    found = watch.check(T0 + 65)
    assert found is not None and found.idle_s == 65


def test_a_rank_whose_step_stays_behind_while_another_moves_on_is_found_though_output_goes_on():
    watch = StallWatch(60, started=T0)
    watch.progress(0, 100, T0 + 1)
    watch.progress(1, 100, T0 + 1)
    for t in range(2, 100):
        watch.progress(0, 100 + t, T0 + t)  # rank 0 keeps going (and printing)
        watch.output(T0 + t)
    assert watch.check(T0 + 60) is None
    found = watch.check(T0 + 61)
    assert found == StallFinding(BEHIND, 60, (1,), {0: 199, 1: 100})
    watch.progress(0, 300, T0 + 120)
    assert not watch.recovered()  # rank 0 moving is not rank 1 moving
    watch.progress(1, 101, T0 + 121)
    assert watch.recovered()


def test_ranks_on_the_same_step_are_not_behind():
    watch = StallWatch(60, started=T0)
    watch.progress(0, 7, T0)
    watch.progress(1, 7, T0 + 30)
    watch.output(T0 + 100)
    assert watch.check(T0 + 120) is None


def _stacks(where: dict[int, tuple[str, str]]) -> StackSnapshot:
    """rank -> (function of the innermost frame, its file): the main thread of each."""
    ranks = []
    for rank, (function, file) in where.items():
        frames = (Frame(file, 10, function), Frame("/home/u/train.py", 42, "<module>"))
        ranks.append(RankStacks(rank, 100 + rank, (ThreadStack("0x1", frames, main=True),)))
    return StackSnapshot(Path("/runs/r"), T0, tuple(ranks))


TORCH = "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py"


def test_the_message_names_the_rank_not_in_a_collective_and_groups_the_waiting_ones():
    stacks = _stacks({0: ("all_reduce", TORCH), 1: ("load", "/home/u/data.py"), 2: ("all_reduce", TORCH),
                      3: ("all_reduce", TORCH)})
    text = describe_stall(StallFinding(SILENT, 300), stacks)
    assert text == ("rank 1 has not progressed for 5 min 00 s (at /home/u/data.py:10 in load); "
                    "ranks 0 and 2–3 are waiting in all_reduce")


def test_every_rank_in_different_collectives_says_so():
    stacks = _stacks({0: ("all_reduce", TORCH), 1: ("broadcast", TORCH)})
    text = describe_stall(StallFinding(SILENT, 61), stacks)
    assert text.startswith("no rank has printed or reported progress for 1 min 01 s; rank 0 is waiting in "
                           "all_reduce; rank 1 is waiting in broadcast; every rank is in a collective")


def test_without_stacks_it_says_why():
    text = describe_stall(StallFinding(BEHIND, 90, (1,), {0: 480, 1: 120}), None, stacks_error="not running")
    assert text == ("rank 1 has not progressed for 1 min 30 s (step 120; others reached 480); "
                    "no stacks (not running)")


def test_rank_lists():
    assert rank_list([1]) == "rank 1"
    assert rank_list([0, 2, 3]) == "ranks 0 and 2–3"
    assert rank_list([0, 1, 2, 3, 4, 5, 6, 7]) == "ranks 0–7"
    assert rank_list([5, 1, 3]) == "ranks 1, 3 and 5"
