"""Reference trainers that run under nbexec (``python -m nbexec.trainers.<name>``)."""
