"""The command line's subcommands beyond ``nbexec train`` (``nbexec hpo``, ``nbexec lineage``); see :mod:`nbexec.cli`."""
