"""The runner: one run handle for every backend, the processes of a local job, and its output.

- :mod:`.handle`: :class:`TrainingRun`, the handle (status, wait, result, cancel, lines, events);
- :mod:`.job`: the :class:`Job`, :class:`Pump` and :class:`Launcher` protocols, and the local job;
- :mod:`.process`, :mod:`.guard`: torchrun under nbexec's guard, and stopping a job's whole tree;
- :mod:`.streams`, :mod:`.lines`, :mod:`.sinks`: the ranks' output into files, views and terminals;
- :mod:`.rootcause`, :mod:`.textprogress`: why a job failed; progress read off a script's bar.

The runner imports no tracking: MLflow is attached to a run from outside, by the executor.
"""
