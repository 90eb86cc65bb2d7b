"""Stacks on demand: where every thread of every rank of a running job is, without stopping it.

- :mod:`.hook`: the rank's side, installed by the worker bootstrap (a thread on a socket; faulthandler
  on a signal as the fallback).
- :mod:`.request`: the requester's side: ask ranks, read their dumps back (standard library only).
- :mod:`.parse`: a dump as threads and frames; which collective a rank waits in.
- :mod:`.snapshot`: every rank's stacks at one moment, saved as ``logs/stacks-<time>.txt``.

``TrainingRun.stacks()``, ``nbexec stacks RUN_DIR`` and the notebook's Stacks
button all call :func:`nbexec.stacks.snapshot.take_stacks`.
"""
