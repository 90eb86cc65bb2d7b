"""Stacks on demand, piece by piece, on small real processes (no torch): the hook, the request,
its safety (no process without the hook ever gets the signal), the dump file, and the root-cause rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import nbexec.contract as contract
from nbexec.runner.rootcause import find_root_cause
from nbexec.stacks.request import RankProcess, rank_processes, request_dumps, split_dumps
from nbexec.stacks.snapshot import latest_stacks, take_stacks

from .conftest import wait_until

# A rank as the bootstrap prepares it: the hook installed, then a worker thread and the main thread wait.
RANK = textwrap.dedent("""
    import sys, threading, time
    from pathlib import Path
    from nbexec.stacks.hook import install

    assert install(Path(sys.argv[1]), int(sys.argv[2])) is None
    release = threading.Event()

    def worker_waits():
        release.wait()

    def main_waits():
        print("ready", flush=True)
        time.sleep(3600)  # where the main thread is

    threading.Thread(target=worker_waits, name="worker").start()
    main_waits()
""")


@pytest.fixture(params=["thread", "signal"])
def rank(request, tmp_path):
    """A process with the hook, as rank 0 of a run dir; yields (run_dir, process, script path, how it answers).

    ``thread``: under nbexec's pump (a socket folder), the answering thread replies;
    ``signal``: without one, faulthandler does (the fallback).
    """
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop(contract.ENV_LOG_SOCKET, None)
    if request.param == "thread":
        sockets = Path(tempfile.mkdtemp(prefix="nbexec-test-"))  # short: unix socket paths are limited
        request.addfinalizer(lambda: shutil.rmtree(sockets, ignore_errors=True))
        env[contract.ENV_LOG_SOCKET] = str(sockets / "logs.sock")
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), "0"], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield run_dir, proc, script, request.param
    finally:
        proc.kill()
        proc.wait()


def test_a_rank_dumps_every_thread_with_file_line_and_function(rank):
    run_dir, proc, script, how = rank
    record = rank_processes(run_dir)[0]
    assert record.pid == proc.pid and record.last_frame.endswith("in <module>")
    assert (record.socket is not None) == (how == "thread")

    snap = take_stacks(run_dir)

    ours = snap.rank(0)
    assert ours.complete and ours.error == "" and ours.pid == proc.pid
    main = ours.main
    assert [f.function for f in main.frames[:2]] == ["main_waits", "<module>"]
    sleep_line = next(i for i, ln in enumerate(script.read_text().splitlines(), 1) if "time.sleep(3600)" in ln)
    assert (main.frames[0].file, main.frames[0].line) == (str(script), sleep_line)
    assert ours.where() == f"at {ours.frame.location} in main_waits: time.sleep(3600)  # where the main thread is"
    assert any("worker_waits" in [f.function for f in t.frames] for t in ours.threads if not t.main)
    assert proc.poll() is None  # it answered and goes on
    assert "time.sleep(3600)" in snap.path.read_text()


def test_each_request_appends_one_dump_after_its_marker_and_the_last_is_read_back(rank):
    run_dir, _, _, _ = rank
    first = request_dumps(run_dir)[0]
    second = request_dumps(run_dir)[0]
    assert first.complete and second.complete and second.taken_at >= first.taken_at

    dumps = split_dumps(contract.rank_stacks_path(run_dir, 0).read_text())
    assert [taken for taken, _ in dumps] == [pytest.approx(first.taken_at, abs=1e-3),
                                             pytest.approx(second.taken_at, abs=1e-3)]
    assert dumps[1][1] == second.text
    last = latest_stacks(run_dir)
    assert last is not None and last.rank(0).taken_at == pytest.approx(second.taken_at, abs=1e-3)
    assert latest_stacks(run_dir, since=time.time() + 60) is None  # none that recent


def test_a_rank_that_holds_the_gil_answers_through_faulthandler(tmp_path):
    """The answering thread needs the GIL; a rank stuck in C code holding it gets the signal instead."""
    script = tmp_path / "gil.py"
    script.write_text(textwrap.dedent("""
        import ctypes, sys
        from pathlib import Path
        from nbexec.stacks.hook import install

        assert install(Path(sys.argv[1]), 0) is None

        def hold_the_gil():
            print("ready", flush=True)
            ctypes.PyDLL(None).sleep(3600)  # a C call made with the GIL held

        hold_the_gil()
    """))
    sockets = Path(tempfile.mkdtemp(prefix="nbexec-test-"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           contract.ENV_LOG_SOCKET: str(sockets / "logs.sock")}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), "0"], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        snap = take_stacks(tmp_path / "run", save=False)
        ours = snap.rank(0)
        assert ours.complete and ours.main.frames[0].function == "hold_the_gil"
        # faulthandler's dump (the thread's own never lists itself): the answering thread is in it
        assert any(f.function == "_answer" for t in ours.threads for f in t.frames)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(sockets, ignore_errors=True)


def test_a_process_without_the_hook_never_gets_the_signal(tmp_path):
    """The stacks signal's default action would end a process: only one that handles it is signalled."""
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        wait_until(lambda: Path(f"/proc/{other.pid}/status").exists(), what="the process")
        record = RankProcess(rank=0, pid=other.pid, host=os.uname().nodename, signal=40,
                             main_thread="0x1", last_frame="x")
        contract.rank_process_path(run_dir, 0).write_text(json.dumps(record.__dict__))

        dump = request_dumps(run_dir)[0]

        assert "does not handle the stacks signal" in dump.error and not dump.complete
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait()
    dump = request_dumps(run_dir)[0]
    assert dump.error == f"rank 0 (pid {other.pid}) is not running"


def test_without_any_rank_record_it_says_what_to_do(tmp_path):
    from nbexec.errors import NbexecError

    with pytest.raises(NbexecError, match="have not started yet"):
        take_stacks(tmp_path)


def test_nbexec_stacks_0_installs_no_hook(tmp_path):
    script = tmp_path / "noop.py"
    script.write_text("print('hi')\n")
    base = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "RANK": "0"}
    for value, expected in (("0", False), ("1", True)):
        run_dir = tmp_path / f"run{value}"
        env = {**base, contract.ENV_RUN_DIR: str(run_dir), contract.ENV_STACKS: value}
        subprocess.run([sys.executable, "-m", "nbexec.child.bootstrap", str(script)], env=env, check=True,
                       capture_output=True, timeout=60)
        assert contract.rank_process_path(run_dir, 0).exists() is expected


# --- the root-cause rule for collective timeouts ---------------------------------------------

TIMEOUT_MESSAGE = ("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms "
                   "for recv operation to complete")
TIMEOUT_TRACEBACK = (
    'Traceback (most recent call last):\n  File "/home/u/train.py", line 19, in <module>\n'
    '    dist.all_reduce(total)\n  File "/venv/lib/python3.11/site-packages/torch/distributed/'
    'distributed_c10d.py", line 3252, in all_reduce\n    work.wait()\nRuntimeError: ' + TIMEOUT_MESSAGE + "\n"
)


def _failed_run(tmp_path: Path, *, message: str, dump_age_s: float) -> Path:
    """Rank 0 failed with ``message``; rank 1 left a dump (asleep in train.py:17) ``dump_age_s`` before that."""
    run_dir = tmp_path / "run"
    logs = run_dir / "logs"
    logs.mkdir(parents=True)
    failed_at = time.time()
    contract.rank_error_path(run_dir, 0).write_text(json.dumps({
        "rank": 0, "exit_code": 1, "exc_type": "RuntimeError", "message": message,
        "traceback": TIMEOUT_TRACEBACK, "where": "train.py:19", "time": failed_at}))
    last = 'File "<frozen runpy>", line 198 in _run_module_as_main'
    contract.rank_process_path(run_dir, 1).write_text(json.dumps({
        "rank": 1, "pid": 4242, "host": "elsewhere", "signal": 40, "main_thread": "0x00007f0000000001",
        "last_frame": last}))
    dump = ("Current thread 0x00007f0000000001 (most recent call first):\n"
            '  File "/home/u/train.py", line 17 in <module>\n'
            '  File "<frozen runpy>", line 88 in _run_code\n'
            f"  {last}\n")
    contract.rank_stacks_path(run_dir, 1).write_text(
        f"=== nbexec stacks abc {failed_at - dump_age_s:.3f} 99\n{dump}")
    return run_dir


def test_a_collective_timeout_is_blamed_on_the_rank_that_was_not_in_the_collective(tmp_path):
    cause = find_root_cause(_failed_run(tmp_path, message=TIMEOUT_MESSAGE, dump_age_s=0.5), 1)

    assert cause.rank == 1 and cause.where == "/home/u/train.py:17"
    assert cause.message.startswith("was not in the collective that timed out: it was at /home/u/train.py:17 "
                                    "in <module>")
    assert "rank 0 timed out waiting for it in all_reduce (RuntimeError: " in cause.message
    assert 'File "/home/u/train.py", line 17, in <module>' in cause.traceback


def test_other_failures_and_stale_stacks_keep_the_first_failing_rank(tmp_path):
    other = find_root_cause(_failed_run(tmp_path / "a", message="CUDA out of memory", dump_age_s=0.5), 1)
    stale = find_root_cause(_failed_run(tmp_path / "b", message=TIMEOUT_MESSAGE, dump_age_s=3600), 1)

    assert other.rank == 0 and other.exc_type == "RuntimeError"
    assert stale.rank == 0 and stale.message == TIMEOUT_MESSAGE
