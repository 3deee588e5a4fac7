"""Hugging Face hub names (``gpt2``, ``openai-community/gpt2``) for ``lmlab.load`` and ``lmlab convert``.

A path that does not exist and looks like a hub repository id is downloaded with
``huggingface_hub.snapshot_download`` (an optional dependency: ``pip install 'lmlab[hf]'``), fetching
only the config, the safetensors weights and the tokenizer files, into the hub's own cache. Offline
(``HF_HUB_OFFLINE=1``) the cache alone is used and no connection is attempted. When no copy can be
had, the CheckpointError says which local directory to pass instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lmlab.errors import CheckpointError

HUB_PATTERNS = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
]
"""What is downloaded: safetensors weights only (never a pickled pytorch_model.bin)."""

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")
_TRUE = ("1", "true", "yes", "on")


def looks_like_hub_name(name: str) -> bool:
    """True for ``name`` or ``org/name`` as the hub spells repository ids (not ``./x``, ``/x``, ``a/b/c``)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and "--" not in name


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network access."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in keys)


def _advice(name: str) -> str:
    return (
        f"pass a local directory holding config.json + model.safetensors (and the tokenizer files), e.g. "
        f"the output of `huggingface-cli download {name} --local-dir DIR`"
    )


def _snapshot_download(repo_id: str, **kwargs: Any) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, **kwargs)


def hub_snapshot(name: str) -> Path:
    """A local directory with the config, safetensors weights and tokenizer of hub model ``name``.

    Raises CheckpointError when ``huggingface_hub`` is not installed, when the hub cannot be reached
    (or, offline, the model is not in the cache) and when the repository does not exist.
    """
    missing_local = f"no local directory, run or checkpoint exists at '{name}'"
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise CheckpointError(
            f"{missing_local}, and '{name}' cannot be fetched from the Hugging Face hub because "
            f"huggingface_hub is not installed (pip install 'lmlab[hf]'); {_advice(name)}"
        ) from None
    offline = hub_offline()
    try:
        local = Path(_snapshot_download(name, allow_patterns=HUB_PATTERNS, local_files_only=offline))
    except Exception as e:  # network errors, LocalEntryNotFoundError, HTTP errors
        kind = type(e).__name__
        if kind in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
            raise CheckpointError(
                f"{missing_local}, and the Hugging Face hub has no model '{name}' that you can access "
                f"({kind}; a private or gated one needs `huggingface-cli login`); {_advice(name)}"
            ) from None
        if offline:
            why = (
                "the Hugging Face hub cannot be reached offline (HF_HUB_OFFLINE=1), and the model is not "
                "in the local cache"
            )
        else:
            first = str(e).splitlines()[0] if str(e) else ""
            why = f"the Hugging Face hub could not be reached ({kind}: {first})"
        raise CheckpointError(
            f"{missing_local}, and '{name}' could not be downloaded: {why}; {_advice(name)}"
        ) from None
    if not (local / "config.json").is_file():
        raise CheckpointError(f"the hub model '{name}' has no config.json: it is not a transformers model")
    if not any(local.glob("*.safetensors")):
        raise CheckpointError(
            f"the hub model '{name}' has no safetensors weights, and lmlab does not download pickled "
            f"pytorch_model.bin files; download it yourself "
            f"(`huggingface-cli download {name} --local-dir DIR`) and pass DIR (a plain state dict in "
            "pytorch_model.bin is read with weights_only=True)"
        )
    return local
