"""Reference token-classification (NER) trainer: ``tiny-encoder`` in plain PyTorch, or a Hugging Face backbone.

Run it under nbexec (the default target when a config names no script), under
bare torchrun, or alone::

    torchrun --nproc-per-node 2 -m nbexec.trainers.token_classification \
        [--config config.yaml] [--resume-from outputs/<run>/checkpoint]

Modules: ``schema`` (config defaults and validation, no torch), ``corpus``
(CoNLL, JSONL, ``save_to_disk`` data: detection and reading, no torch), ``data``
(the synthetic NER dataset, generated once per ``data.path``), ``encoding``
(sentences to model inputs), ``model`` (tiny-encoder), ``hf`` (Hugging Face
backbones), ``tiny_hf`` (a tiny DistilBERT made locally, for tests and demos),
``optimization``, ``precision``, ``metrics``, ``collectives``, ``checkpoint``
(``state``: its state file, no torch) and ``train`` (the DDP loop). Importing this
package imports nothing heavy; torch is imported by the modules that need it.
"""
