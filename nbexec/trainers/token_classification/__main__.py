"""``python -m nbexec.trainers.token_classification``: see :mod:`.train`."""

from nbexec.trainers.token_classification.train import main

if __name__ == "__main__":
    raise SystemExit(main())
