"""Typed configuration: a run is a family name plus four sections (model, tokenizer, data, train).

Recipes are YAML files that fill these sections; ``key=value`` overrides use dotted keys
(``train.max_steps=200 model.n_layer=4``). Unknown keys are errors that name the key and the valid ones.
The model section's dataclass belongs to the family (``models/<family>.py``); the others live here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmlab.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class TokenizerConfig:
    kind: str = "char"
    """'char' (characters, with UTF-8 byte fallback for unseen ones) or 'bpe' (byte-level BPE)."""
    vocab_size: int = 4096
    """Target vocabulary size for 'bpe' (ignored for 'char')."""
    path: str | None = None
    """Use an existing tokenizer.json instead of training one."""


@dataclass
class DataConfig:
    path: str | None = None
    """A text file or a folder of .txt files. None means the bundled tiny Shakespeare."""
    val_fraction: float = 0.1
    """The last fraction of the token stream is held out for validation."""
    block_size: int | None = None
    """Training window length; defaults to the model's context length."""


@dataclass
class TrainConfig:
    max_steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 12
    """Sequences per optimizer step (the global batch, split over micro-batches and processes)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; each holds batch_size / grad_accum / world_size sequences."""
    optimizer: str = "adamw"
    """'adamw' or 'adam'."""
    lr: float = 1e-3
    """Peak learning rate (for 'noam', a multiplier on d_model^-0.5 * ...)."""
    min_lr: float = 1e-4
    """Final learning rate of the cosine schedule."""
    schedule: str = "cosine"
    """'cosine' (linear warmup then cosine to min_lr), 'noam' (Vaswani et al.) or 'constant'."""
    warmup_steps: int = 100
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not biases, norms or embeddings of size 1)."""
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    precision: str = "auto"
    """'bf16' (autocast), 'fp32', or 'auto' (bf16 where the hardware has fast bf16 matmuls)."""
    device: str = "auto"
    """'cpu', 'cuda', 'cuda:N' or 'auto'."""
    compile: bool = False
    """torch.compile the model."""
    seed: int = 1337
    eval_interval: int = 0
    """Evaluate every N steps (0: only at the end)."""
    eval_batches: int = 0
    """Limit periodic evaluation to N batches (0: the whole validation split)."""
    log_interval: int = 10
    """Write a metrics.jsonl line every N steps."""
    checkpoint_interval: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep."""
    progress: bool = True
    """Show a progress bar."""
    threads: int = 0
    """torch.set_num_threads on CPU (0: leave PyTorch's default)."""


@dataclass
class RunConfig:
    family: str = "gpt"
    """Model family: gpt (more families follow: transformer, rnn, seq2seq, bert)."""
    task: str = "lm"
    """What the run trains: lm (language modelling)."""
    description: str = ""
    model: Any = None
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass with checking


def _resolve_type(tp: Any) -> Any:
    """Strip Optional[...] / X | None to X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if value is None:
        return None
    tp = _resolve_type(tp)
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
        if typing.get_origin(tp) in (list, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value)
            return list(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}': cannot use {value!r} as {getattr(tp, '__name__', tp)}") from None
    return value


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming unknown keys and their valid alternatives."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key '{key}'; valid keys in '{prefix or 'top level'}': {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['train.max_steps=200', 'model.n_layer=4'] -> nested dict of (string) values."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.max_steps=200)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
        parsed: Any = value
        if value.lower() in ("null", "none", "~"):
            parsed = None
        node[parts[-1]] = parsed
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def list_recipes() -> dict[str, str]:
    """Bundled recipe names -> their one-line description."""
    out = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        out[path.stem] = str(raw.get("description", "")).strip()
    return out


def load_raw(recipe_or_yaml: str) -> dict[str, Any]:
    """A bundled recipe name or a path to a YAML file -> its dict."""
    path = Path(recipe_or_yaml)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = RECIPES_DIR / f"{recipe_or_yaml}.yaml"
        if not path.exists():
            names = ", ".join(list_recipes())
            raise ConfigError(f"unknown recipe '{recipe_or_yaml}'; bundled recipes: {names} (or pass a .yaml file)")
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, tokenizer, data, train)")
    return raw


def build_config(raw: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Recipe dict + overrides -> a checked RunConfig."""
    from lmlab.models import model_config_class

    raw = deep_merge(raw, parse_overrides(overrides or []))
    top = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = [k for k in raw if k not in top]
    if unknown:
        raise ConfigError(f"unknown config key '{unknown[0]}'; valid top-level keys: {', '.join(sorted(top))}")
    family = str(raw.get("family", "gpt"))
    model_cls = model_config_class(family)
    return RunConfig(
        family=family,
        task=str(raw.get("task", "lm")),
        description=str(raw.get("description", "")),
        model=from_dict(model_cls, raw.get("model"), "model"),
        tokenizer=from_dict(TokenizerConfig, raw.get("tokenizer"), "tokenizer"),
        data=from_dict(DataConfig, raw.get("data"), "data"),
        train=from_dict(TrainConfig, raw.get("train"), "train"),
    )


def load_config(recipe_or_yaml: str, overrides: list[str] | None = None) -> RunConfig:
    return build_config(load_raw(recipe_or_yaml), overrides)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
