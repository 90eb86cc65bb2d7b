"""Hugging Face backbones: ``AutoModelForTokenClassification`` and its fast tokenizer (``nbexec[hf]``).

``model.backbone`` is a model id on the Hugging Face hub (``distilbert-base-uncased``)
or a local directory written by ``save_pretrained``. The training loop loads it
with :func:`.collectives.node_first`: each node's first rank downloads it into
the node's Hugging Face cache while the others wait, then they read it from
the cache (``local_files_only``), so a node never downloads it more than once.

Every problem with the backbone is a ConfigError of ``model.backbone`` (``nbexec
train`` exits 2) that says what to do: a model that is neither cached nor
downloadable (``HF_HUB_OFFLINE=1``, no network) names the cache and how to
pre-download it; a model id the hub does not know, a gated model, a model
without a fast tokenizer, ``transformers`` not installed. (Not an
EnvironmentCheckError: that one says nothing was started, and here the job is
running.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbexec.errors import ConfigError

__all__ = [
    "INSTALL_HINT", "load_backbone", "quiet_transformers", "require_transformers", "save_pretrained_files",
]

INSTALL_HINT = "pip install 'nbexec[hf]'"
# Byte-level BPE tokenizers need a space before each word to tokenize words one by one
# (what Hugging Face's run_ner example does for these model types).
_PREFIX_SPACE_TYPES = frozenset({"roberta", "gpt2", "bloom", "deberta", "longformer", "bart"})


def require_transformers() -> Any:
    """The ``transformers`` module, or an error that says how to install it."""
    try:
        import transformers
    except ImportError as err:
        raise ConfigError(
            f"model.backbone is a Hugging Face model, which needs the 'transformers' package ({err}); "
            f"install it: {INSTALL_HINT}, or use model.backbone: tiny-encoder",
            field="model.backbone",
        ) from err
    return transformers


def quiet_transformers(*, warnings: bool, progress: bool = True) -> None:
    """Transformers' warnings on one rank only; its progress bars off once the model is loaded.

    Args:
        warnings: keep transformers' warnings and load report (rank 0), else errors only.
        progress: keep progress bars (a download's); False turns them off (one per save otherwise).
    """
    transformers = require_transformers()
    if not warnings:
        transformers.utils.logging.set_verbosity_error()
    if not progress:
        transformers.utils.logging.disable_progress_bar()


def load_backbone(
    name: str, labels: Sequence[str], *, local_files_only: bool = False
) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a token-classification model with ``len(labels)`` outputs, and its fast tokenizer.

    A checkpoint trained on other labels gets a new classification head
    (``ignore_mismatched_sizes``); ``config.id2label`` names ``labels``.

    Args:
        name: the model id or directory (``model.backbone``).
        local_files_only: read the Hugging Face cache only (the ranks that wait
            for their node's first one to download).

    Raises:
        ConfigError: not a model directory, a model id the hub does not know,
            a model without a fast tokenizer, transformers missing, or a model
            that is not cached and cannot be downloaded.
    """
    transformers = require_transformers()
    _check_local(name)
    options: dict[str, Any] = {"local_files_only": local_files_only}
    try:
        config = transformers.AutoConfig.from_pretrained(
            name, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, **options,
        )
        if getattr(config, "model_type", None) in _PREFIX_SPACE_TYPES:
            options["add_prefix_space"] = True
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, use_fast=True, **options)
        options.pop("add_prefix_space", None)
        model = transformers.AutoModelForTokenClassification.from_pretrained(
            name, config=config, ignore_mismatched_sizes=True, **options
        )
    except OSError as err:
        raise _unavailable(name, err) from err
    except ValueError as err:  # e.g. a model type with no token-classification head
        raise ConfigError(
            f"model.backbone {name!r} cannot be loaded for token classification: {err}",
            field="model.backbone", value=name,
        ) from err
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"model.backbone {name!r} has no fast tokenizer (tokenizer.json), which aligning word labels to "
            "sub-tokens needs (word_ids); pick a model that has one, or convert its tokenizer and save it "
            "with save_pretrained",
            field="model.backbone", value=name,
        )
    return model, tokenizer


def save_pretrained_files(directory: Path, model: Any, tokenizer: Any) -> list[str]:
    """Write ``model`` and ``tokenizer`` in ``save_pretrained`` form into ``directory``, file by file atomically.

    They are written into a temporary sibling first and each file is then
    renamed into place, so a crash never leaves a half-written file (the
    checkpoint's state file, written last, holds the hashes that tell a
    stale file apart).

    Returns:
        The names of the files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pretrained-", dir=directory.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        for name in names:
            os.chmod(staging / name, 0o644)
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return names


def _check_local(name: str) -> None:
    path = Path(name).expanduser()
    looks_local = name.startswith(("/", "./", "../", "~")) or path.is_dir()
    if not looks_local:
        return
    if not path.is_dir():
        raise ConfigError(
            f"model.backbone {name!r} is not a directory; give a directory written by save_pretrained, "
            "or a model id on the Hugging Face hub (e.g. distilbert-base-uncased)",
            field="model.backbone", value=name,
        )
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model.backbone {name!r} is a directory without config.json, not a saved model; save one there "
            "with model.save_pretrained(...) and tokenizer.save_pretrained(...)",
            field="model.backbone", value=name,
        )


def _unavailable(name: str, err: OSError) -> ConfigError:
    causes = []
    cause: BaseException | None = err
    while cause is not None:
        causes.append(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    if "RepositoryNotFoundError" in causes:
        return ConfigError(
            f"model.backbone {name!r} is neither a local directory nor a model on the Hugging Face hub "
            "(if it is a private model, log in first: hf auth login, or set HF_TOKEN)",
            field="model.backbone", value=name,
        )
    if "GatedRepoError" in causes:
        return ConfigError(
            f"model.backbone {name!r} is a gated model: accept its terms on its hub page, then log in "
            "(hf auth login, or set HF_TOKEN) on every node",
            field="model.backbone", value=name,
        )
    try:
        from huggingface_hub import constants

        offline, cache = bool(constants.HF_HUB_OFFLINE), constants.HF_HUB_CACHE
    except ImportError:  # transformers always brings it; kept safe all the same
        offline, cache = False, "the Hugging Face cache"
    why = "HF_HUB_OFFLINE is set" if offline else f"the hub could not be reached ({str(err).splitlines()[0]})"
    return ConfigError(
        f"model.backbone {name!r} is not in this machine's Hugging Face cache ({cache}) and could not be "
        f"downloaded: {why}. Download it once where there is network, into the cache the job uses (HF_HOME): "
        f"python -c \"from transformers import AutoTokenizer, AutoModelForTokenClassification as M; "
        f"AutoTokenizer.from_pretrained('{name}'); M.from_pretrained('{name}')\" (or: hf download {name}); "
        "or save it with save_pretrained and set model.backbone to that directory",
        field="model.backbone", value=name,
    )
