"""The Slurm scheduler: an sbatch job that runs torchrun on the allocated nodes.

- :mod:`.script`: the sbatch script and the node's launch spec (pure);
- :mod:`.commands`: sbatch / squeue / scontrol / sacct / scancel (argv lists);
- :mod:`.node`: what runs inside the job on every node (torchrun under nbexec's runner);
- :mod:`.submit`: the submitter's side, :class:`SlurmLauncher` and :class:`SlurmJob`;
- :mod:`.scheduler`: :class:`SlurmScheduler`, what `launch.scheduler: slurm` picks.

The run directory must be on a file system the nodes share with the
submitting machine (the job writes its logs, events and checkpoint there; the
submitter streams them into the notebook or terminal).
"""
