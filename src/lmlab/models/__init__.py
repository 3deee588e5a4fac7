"""Model families: each has a Config dataclass and a model class in its own file."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from lmlab.errors import ConfigError

# family name -> (module, config class, model class or factory: config -> model)
FAMILIES: dict[str, tuple[str, str, str]] = {
    "gpt": ("lmlab.models.gpt", "GPTConfig", "GPT"),
    "transformer": ("lmlab.models.transformer", "TransformerConfig", "Transformer"),
    # a bert run is a masked LM: BertForMaskedLM, or BertForPreTraining with model.next_sentence
    "bert": ("lmlab.models.bert", "BertConfig", "bert_masked_lm"),
    "rnn": ("lmlab.models.rnn", "RNNConfig", "RNNLM"),  # cell: rnn | lstm | gru
    "seq2seq": ("lmlab.models.seq2seq", "Seq2SeqConfig", "Seq2Seq"),  # RNN encoder-decoder (+ attention)
}


def _lookup(family: str) -> tuple[Any, Any]:
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family '{family}'; valid families: {', '.join(FAMILIES)}")
    module, cfg_name, model_name = FAMILIES[family]
    mod = importlib.import_module(module)
    return getattr(mod, cfg_name), getattr(mod, model_name)


# (family, task) -> model class, where a task needs a different head than the family's default
TASK_MODELS: dict[tuple[str, str], str] = {
    ("bert", "classification"): "BertForSequenceClassification",  # one sentence or a pair
    ("bert", "tagging"): "BertForTokenClassification",  # one label per (first sub-)token
}


def model_config_class(family: str) -> type:
    return _lookup(family)[0]


def build_model(family: str, config: Any, task: str | None = None) -> nn.Module:
    """The model of ``family`` built from its config; ``task`` picks a task-specific head
    (``TASK_MODELS``), else the family's default model."""
    _, default = _lookup(family)
    name = TASK_MODELS.get((family, task or ""))
    if name is None:
        return default(config)
    return getattr(importlib.import_module(FAMILIES[family][0]), name)(config)
