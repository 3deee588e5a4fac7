"""Hugging Face interoperability: import a ``transformers`` model directory, export one, convert runs.

    import_hf(HF_DIR)                     -> (model, tokenizer or None), by config.json's model_type
    export_hf(model, tokenizer, OUT_DIR)  writes config.json, model.safetensors, tokenizer files
    save_run(model, tokenizer, cfg, DIR)  writes an lmlab run directory (a step-0 checkpoint): a GPT
                                          (task lm) or a BertForMaskedLM (family bert, task mlm)
    convert(SRC, DST, to='hf'|'lmlab')    the ``lmlab convert`` command

Supported model types: ``gpt2`` (see ``interop/gpt2.py``) and ``bert`` (``interop/bert.py``). None of
this needs ``transformers`` installed: the files are read and written with ``safetensors`` and ``tokenizers``.
Hub names (``gpt2``, ``org/name``) are downloaded by ``lmlab.load`` with huggingface_hub when it is
installed (``interop/hub.py``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from lmlab.config import RunConfig, TokenizerConfig, save_config
from lmlab.errors import CheckpointError, ConfigError
from lmlab.interop.bert import bert_config_from_hf, export_hf_bert, import_hf_bert, is_bert_model
from lmlab.interop.gpt2 import (
    HF_CONFIG_FILE,
    export_hf_gpt2,
    gpt_config_from_hf,
    import_hf_gpt2,
    read_hf_config,
    state_dict_from_hf,
    state_dict_to_hf,
)
from lmlab.tokenizers import CharTokenizer

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "is_hf_dir",
    "import_hf",
    "export_hf",
    "hf_run_config",
    "save_run",
    "convert",
    "import_hf_gpt2",
    "export_hf_gpt2",
    "gpt_config_from_hf",
    "state_dict_from_hf",
    "state_dict_to_hf",
    "import_hf_bert",
    "export_hf_bert",
    "bert_config_from_hf",
]

SUPPORTED_MODEL_TYPES = ("gpt2", "bert")


def is_hf_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory with a Hugging Face ``config.json`` (one naming a model_type)."""
    cfg = Path(path) / HF_CONFIG_FILE
    if not cfg.is_file():
        return False
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and "model_type" in raw


def _unsupported(model_type: Any) -> ConfigError:
    return ConfigError(
        f"Hugging Face model_type '{model_type}' is not supported yet; "
        f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )


def import_hf(path: str | Path) -> tuple[nn.Module, Any]:
    """A Hugging Face model directory -> (lmlab model in eval mode on the CPU, tokenizer or None)."""
    model_type = read_hf_config(path).get("model_type")
    if model_type == "gpt2":
        return import_hf_gpt2(path)
    if model_type == "bert":
        return import_hf_bert(path)
    raise _unsupported(model_type)


def export_hf(model: nn.Module, tokenizer: Any, out_dir: str | Path, labels: Any = None) -> Path:
    """Write an lmlab model (and tokenizer, may be None) as a Hugging Face model directory; ``labels``:
    a classifier's or tagger's class names, written as ``id2label``."""
    from lmlab.checkpoint import unwrap_model
    from lmlab.models.gpt import GPT

    model = unwrap_model(model)
    if isinstance(model, GPT):
        return export_hf_gpt2(model, tokenizer, out_dir)
    if is_bert_model(model):
        return export_hf_bert(model, tokenizer, out_dir, labels)
    raise ConfigError(
        f"no Hugging Face export for {type(model).__name__} models yet; "
        "supported: GPT (as gpt2), Bert and its heads (as bert)"
    )


def hf_run_config(model: nn.Module, tokenizer: Any, source: str | Path | None = None) -> RunConfig:
    """A RunConfig describing an imported model (family, model section, tokenizer kind)."""
    from lmlab.models.gpt import GPT

    if is_bert_model(model):
        return RunConfig(
            family="bert",
            task="mlm",
            description=f"imported from Hugging Face: {source}" if source else "imported from Hugging Face",
            model=dataclasses.replace(model.config),
            tokenizer=TokenizerConfig(kind="wordpiece", vocab_size=getattr(tokenizer, "vocab_size", 0) or 1),
        )
    if not isinstance(model, GPT):
        raise ConfigError(f"no lmlab family for {type(model).__name__}")
    kind = "char" if isinstance(tokenizer, CharTokenizer) else "bpe"
    vocab = getattr(tokenizer, "vocab_size", None) or model.config.vocab_size
    return RunConfig(
        family="gpt",
        description=f"imported from Hugging Face: {source}" if source else "imported from Hugging Face",
        model=dataclasses.replace(model.config),
        tokenizer=TokenizerConfig(kind=kind, vocab_size=vocab),
    )


def save_run(model: nn.Module, tokenizer: Any, config: RunConfig, out_dir: str | Path) -> Path:
    """Write an lmlab run directory: config.yaml, tokenizer.json and checkpoints/step_00000000/.

    The checkpoint holds the weights and a fresh trainer state (step 0, empty optimizer state), so
    ``lmlab.load`` reads it and ``lmlab train`` on the directory continues from these weights.
    """
    from lmlab.checkpoint import save_checkpoint, unwrap_model
    from lmlab.runs import CONFIG_FILE, TOKENIZER_FILE
    from lmlab.train import build_optimizer

    if tokenizer is None:
        raise CheckpointError("an lmlab run needs a tokenizer, and this model has none")
    model = unwrap_model(model)
    if is_bert_model(model) or config.family == "bert":
        from lmlab.interop.bert import architecture_of
        from lmlab.models.bert import BertForMaskedLM, BertForPreTraining

        if type(model) not in (BertForMaskedLM, BertForPreTraining):
            name = architecture_of(model) if is_bert_model(model) else type(model).__name__
            raise ConfigError(
                f"only a BertForMaskedLM (or a BertForPreTraining) can be saved as an lmlab run (a 'bert' "
                f"run is a masked LM), not a {name}: use it through lmlab.load(HF_DIR), or convert it --to hf"
            )
        # a BertForPreTraining is the family's model with model.next_sentence
        nsp = type(model) is BertForPreTraining
        if getattr(config.model, "next_sentence", None) is not None and config.model.next_sentence != nsp:
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, next_sentence=nsp))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / TOKENIZER_FILE)
    save_config(config, out / CONFIG_FILE)
    state = {
        "version": 1,
        "step": 0,
        "optimizer": build_optimizer(model, config.train).state_dict(),
        "rng": None,
        "elapsed_s": 0.0,
        "world_size": 1,
        "config": dataclasses.asdict(config.train),
        "extra": {"converted_from": config.description},
    }
    save_checkpoint(out, 0, model, state, keep=1)
    return out


def convert(src: str | Path, dst: str | Path, to: str) -> Path:
    """``lmlab convert``: any model ``lmlab.load`` reads (a run, a checkpoint or a Hugging Face
    directory) -> a Hugging Face directory (``to='hf'``) or an lmlab run directory (``to='lmlab'``)."""
    from lmlab.pipeline import load

    if to not in ("hf", "lmlab"):
        raise ConfigError(f"convert: unknown target '{to}'; valid: hf, lmlab")
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"convert: {dst} already exists and is not an empty directory")
    p = load(src)
    if to == "hf":  # a fine-tuned run's class names travel as id2label
        return export_hf(p.model, p.tokenizer, dst, getattr(p, "labels", None))
    return save_run(p.model, p.tokenizer, p.config, dst)
