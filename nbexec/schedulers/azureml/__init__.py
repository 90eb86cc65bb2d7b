"""The AzureML scheduler (``pip install 'nbexec[azureml]'``): the plan as an ``azure.ai.ml`` command job.

- :mod:`.job`: build the command job and its YAML (offline; ``--dry-run`` writes it);
- :mod:`.entry`: what each process of the job runs first (sets nbexec's contract up);
- :mod:`.run`: submission through ``MLClient`` and the run handle (sinks, finalizers, cancel);
- :mod:`.stream`: the child process that streams the job's log (``MLClient.jobs.stream``) into the run dir.

Importing this package imports nothing from Azure.
"""
