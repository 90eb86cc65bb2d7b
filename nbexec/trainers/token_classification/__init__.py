"""Reference token-classification (NER) trainer: a tiny transformer encoder in plain PyTorch.

Run it under nbexec (the default target when a config names no script), under
bare torchrun, or alone::

    torchrun --nproc-per-node 2 -m nbexec.trainers.token_classification \
        [--config config.yaml] [--resume-from outputs/<run>/checkpoint]

Modules: ``schema`` (config defaults and validation, no torch), ``data``
(synthetic NER dataset, generated once per ``data.path``), ``model``,
``metrics``, ``checkpoint`` (``state``: its state file, no torch) and ``train`` (the DDP loop). Importing this
package imports nothing heavy; torch is imported by the modules that need it.
"""
