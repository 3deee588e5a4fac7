"""Typed configuration: a run is a family name plus four sections (model, tokenizer, data, train).

Recipes are YAML files that fill these sections; ``key=value`` overrides use dotted keys
(``train.max_steps=200 model.n_layer=4``). Unknown keys are errors that name the key and the valid ones.
The model section's dataclass belongs to the family (``models/<family>.py``); the others live here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmlab.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"

TOKENIZER_KINDS = ("char", "bpe", "wordpiece")
CORPORA = ("multi30k", "tatoeba-cmn", "files")
TRANSLATION_DATA_KEYS = (
    "corpus", "src_lang", "tgt_lang", "root", "train_src", "train_tgt", "valid_src", "valid_tgt",
    "test_src", "test_tgt", "train_tsv", "valid_tsv", "test_tsv", "max_len",
)
"""The data keys of translation runs (task: translation); language models leave them unset."""
OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "noam", "constant")
PRECISIONS = ("auto", "bf16", "fp32")


def _did_you_mean(name: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_choice(key: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        hint = _did_you_mean(str(value), valid)
        raise ConfigError(f"{key}='{value}' is not one of: {', '.join(valid)}{hint}")


@dataclass
class TokenizerConfig:
    kind: str = "char"
    """'char' (characters, with UTF-8 byte fallback for unseen ones) or 'bpe' (byte-level BPE);
    'wordpiece' is BERT's (masked-LM runs, e.g. a BERT converted with `lmlab convert --to lmlab`)."""
    vocab_size: int = 4096
    """Target vocabulary size for 'bpe' (ignored for 'char')."""
    path: str | None = None
    """Use an existing tokenizer.json instead of training one (translation with joint=false: the target's)."""
    joint: bool = True
    """Translation: one tokenizer trained on both sides of the training split (tokenizer.json; needed
    for model.share_embeddings). false: one per side (tokenizer_src.json, tokenizer_tgt.json), the
    target with kind / vocab_size, the source with src_kind / src_vocab_size. Ignored by language models."""
    src_kind: str | None = None
    """Translation with joint=false: the source tokenizer's kind (default: kind)."""
    src_vocab_size: int | None = None
    """Translation with joint=false: the source tokenizer's vocabulary size for bpe (default: vocab_size)."""
    src_path: str | None = None
    """Translation with joint=false: an existing tokenizer.json for the source side."""

    def validate(self) -> None:
        _check_choice("tokenizer.kind", self.kind, TOKENIZER_KINDS)
        if self.vocab_size < 1:
            raise ConfigError(f"tokenizer.vocab_size must be >= 1 (got {self.vocab_size})")
        if self.src_kind is not None:
            _check_choice("tokenizer.src_kind", self.src_kind, TOKENIZER_KINDS)
        if self.src_vocab_size is not None and self.src_vocab_size < 1:
            raise ConfigError(f"tokenizer.src_vocab_size must be >= 1 (got {self.src_vocab_size})")


@dataclass
class DataConfig:
    path: str | None = None
    """A text file or a folder of .txt files. None means the bundled tiny Shakespeare. Task mlm: also
    .txt.gz files, Project Gutenberg headers and footers stripped; a relative path not found from the
    working directory is looked up in the shared data folder ($LMLAB_DATA, else ../shared/data)."""
    val_fraction: float = 0.1
    """The last fraction of the token stream is held out for validation (task mlm: a seeded fraction
    of the documents)."""
    block_size: int | None = None
    """Training window length; defaults to the model's context length. Task mlm: the most tokens of a
    sentence pair with [CLS] and its two [SEP]."""
    # -- masked-LM pretraining (task: mlm) ---------------------------------------------------------
    mask_prob: float = 0.15
    """Masked LM: the fraction of each sequence's tokens ([CLS], [SEP], [PAD] excepted) selected for
    prediction; of those, 80% become [MASK], 10% a random token and 10% stay as they are (BERT)."""
    short_seq_prob: float = 0.1
    """Masked LM: the probability that a pair is built to a random shorter length (2 .. block_size - 3
    tokens) instead of the full length, so the model also sees short inputs (BERT's 0.1)."""
    # -- translation (task: translation) -----------------------------------------------------------
    corpus: str | None = None
    """Parallel corpus: 'multi30k' (en-de captions), 'tatoeba-cmn' (en-zh) or 'files' (your own:
    data.train_src + data.train_tgt, or data.train_tsv)."""
    src_lang: str | None = None
    """Source language code (multi30k: en or de; tatoeba-cmn: en or zh; files: any, e.g. for BLEU's
    Chinese tokenisation when the target is zh)."""
    tgt_lang: str | None = None
    """Target language code."""
    root: str | None = None
    """The bundled corpus' folder (multi30k: the one holding raw/; tatoeba-cmn: the one holding
    cmn.txt). Default: $LMLAB_DATA/<corpus> or ../shared/data/<corpus>."""
    train_src: str | None = None
    """files: training sources, one sentence a line (.gz allowed), aligned with train_tgt."""
    train_tgt: str | None = None
    valid_src: str | None = None
    """files: validation pairs (default: a seeded val_fraction of the training pairs is held out)."""
    valid_tgt: str | None = None
    test_src: str | None = None
    """files: test pairs (for `lmlab eval --split test`)."""
    test_tgt: str | None = None
    train_tsv: str | None = None
    """files: training pairs as one tab-separated file, source TAB target (instead of train_src/tgt)."""
    valid_tsv: str | None = None
    test_tsv: str | None = None
    max_len: int | None = None
    """Translation: the most tokens of a sentence with its end-of-sentence token; longer ones are
    truncated (a warning says how many). Default: model.max_len. Classification / tagging: the most
    tokens of an example with [CLS] / [SEP] (default 128, at most model.block_size)."""
    # -- fine-tuning (task: classification | tagging) ----------------------------------------------
    dataset: str | None = None
    """Labelled data: sst2, rte, mrpc (classification), wnut17 (tagging), or files (your own:
    data.train_file, optionally data.valid_file / data.test_file). The bundled ones are read from
    data.root, default $LMLAB_DATA/<dataset> or ../shared/data/<dataset>."""
    train_file: str | None = None
    """files: the training examples. Classification: a TSV file, text TAB label or text TAB text2 TAB
    label (or a header line naming the columns text / text2 / label). Tagging: CoNLL, token TAB tag a
    line, a whitespace-only line between sentences."""
    valid_file: str | None = None
    """files: the validation examples (default: a seeded data.val_fraction of the training ones)."""
    test_file: str | None = None
    """files: the test examples (for `lmlab eval --split test`)."""
    labels: list[str] | None = None
    """files: the label set (default: the labels of the training file, sorted). A label in the data
    that is not in it is an error naming the file and line."""

    def validate(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.block_size is not None and self.block_size < 1:
            raise ConfigError(f"data.block_size must be >= 1 or null (got {self.block_size})")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"data.mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"data.short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if self.corpus is not None:
            _check_choice("data.corpus", self.corpus, CORPORA)
        if self.max_len is not None and self.max_len < 2:
            raise ConfigError(f"data.max_len must be >= 2 (a token and EOS) or null (got {self.max_len})")


@dataclass
class TrainConfig:
    max_steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 12
    """Sequences per optimizer step for language models; for translation, a token budget per step
    (max(source, target) tokens x sentences). Split over micro-batches and processes."""
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
    label_smoothing: float = 0.1
    """Translation: label-smoothing epsilon of the cross-entropy (the paper's 0.1)."""
    bleu_sentences: int = 0
    """Translation: at each evaluation also greedily translate this many validation sentences and log
    val_bleu / val_chrf (0: loss only)."""

    def validate(self) -> None:
        """Reject values the Trainer or the optimizer cannot use, naming the key (before any work)."""
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.schedule", self.schedule, SCHEDULES)
        _check_choice("train.precision", self.precision, PRECISIONS)
        for key, low in (("batch_size", 1), ("grad_accum", 1), ("keep_checkpoints", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"train.{key} must be >= {low} (got {getattr(self, key)})")
        for key in (
            "max_steps",
            "warmup_steps",
            "eval_interval",
            "eval_batches",
            "log_interval",
            "checkpoint_interval",
            "threads",
            "lr",
            "min_lr",
            "eps",
            "weight_decay",
            "grad_clip",
            "bleu_sentences",
        ):
            value = getattr(self, key)
            if not value >= 0 or (isinstance(value, float) and not math.isfinite(value)):
                raise ConfigError(f"train.{key} must be a finite number >= 0 (got {value})")
        for key in ("beta1", "beta2", "label_smoothing"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"train.{key} must be in [0, 1) (got {getattr(self, key)})")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"train.batch_size={self.batch_size} must be divisible by train.grad_accum={self.grad_accum}"
            )


@dataclass
class RunConfig:
    family: str = "gpt"
    """Model family: gpt (more families follow: transformer, rnn, seq2seq, bert)."""
    task: str = "lm"
    """What the run trains: lm (language modelling) or translation (an encoder-decoder family on
    sentence pairs: data.corpus, data.src_lang, data.tgt_lang...); mlm: masked-LM (+ next-sentence,
    model.next_sentence) pretraining of family bert on the documents of data.path."""
    description: str = ""
    init: str | None = None
    """Fine-tuning (task classification or tagging): start from this checkpoint: a 'bert' run
    directory (e.g. `lmlab train gutenberg-bert`, or `lmlab convert HF_DIR RUN --to lmlab`) or one of
    its checkpoints, or a Hugging Face BERT directory (config.json, model.safetensors, tokenizer.json
    or vocab.txt). The encoder's weights, sizes and tokenizer come from it; the heads are new.
    null: from scratch (a new WordPiece tokenizer is trained on the training split)."""
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


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (from YAML, or a string from a key=value override) as type ``tp``, or ConfigError."""
    if value is None:
        if _is_optional(tp) or tp is Any:
            return None
        raise ConfigError(f"config key '{key}' cannot be null (expected {_type_name(_resolve_type(tp))})")
    tp = _resolve_type(tp)
    if isinstance(value, dict) and tp is not Any and typing.get_origin(tp) is not dict and tp is not dict:
        raise ConfigError(f"config key '{key}' is a single value, not a section (got {value!r})")
    bad = ConfigError(f"config key '{key}': cannot use {value!r} as {_type_name(tp)}")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
            elif isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise bad
        if tp is int:
            if isinstance(value, bool):
                raise bad
            if isinstance(value, str):
                text = value.strip().replace("_", "")
                try:
                    return int(text)
                except ValueError:
                    value = float(text)  # 1e3 is fine, 2.5 is not
            if isinstance(value, float):
                if not value.is_integer():
                    raise bad
                return int(value)
            if isinstance(value, int):
                return value
            raise bad
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise bad
            return float(value.strip() if isinstance(value, str) else value)
        if tp is str:
            if isinstance(value, (list, tuple, dict)):
                raise bad
            return str(value)
        if typing.get_origin(tp) in (list, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, (list, tuple)):
                raise bad
            return list(value)
    except (TypeError, ValueError, yaml.YAMLError):
        raise bad from None
    return value


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming unknown keys and their valid alternatives."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config key '{prefix}' is a section of settings, not a value (got {data!r}); "
            f"set its keys instead, e.g. {prefix}.KEY=VALUE"
        )
    data = dict(data)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(
            f"unknown config key '{key}'{_did_you_mean(str(unknown[0]), names)}; "
            f"valid keys in '{prefix or 'top level'}': {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['train.max_steps=200', 'model.n_layer=4'] -> nested dict of (string) values.

    ``null`` / ``none`` / ``~`` mean None; everything else stays a string, converted to the key's
    type later (``build_config``).
    """
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.max_steps=200)")
        key, value = item.split("=", 1)
        parts = [p.strip() for p in key.strip().split(".")]
        if not all(parts):
            raise ConfigError(f"override '{item}': '{key}' is not a dotted key like train.max_steps")
        node = out
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{'.'.join(parts[: i + 1])}' is not a section")
        parsed: Any = value
        if value.strip().lower() in ("null", "none", "~"):
            parsed = None
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"override '{item}': '{key}' is a section; set its keys, e.g. {key}.KEY=VALUE")
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
    for path in sorted(RECIPES_DIR.glob("*.yaml"), key=lambda p: p.stem):
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        out[path.stem] = str(raw.get("description", "")).strip()
    return out


def load_raw(recipe_or_yaml: str) -> dict[str, Any]:
    """A bundled recipe name or a path to a YAML file -> its dict."""
    path = Path(recipe_or_yaml)
    if not (path.suffix in (".yaml", ".yml") or path.is_file()):
        path = RECIPES_DIR / f"{recipe_or_yaml}.yaml"
        if not path.exists():
            names = list(list_recipes())
            raise ConfigError(
                f"unknown recipe '{recipe_or_yaml}'{_did_you_mean(recipe_or_yaml, names)}; "
                f"bundled recipes: {', '.join(names)} (or pass a .yaml file)"
            )
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
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
        raise ConfigError(
            f"unknown config key '{unknown[0]}'{_did_you_mean(str(unknown[0]), sorted(top))}; "
            f"valid top-level keys: {', '.join(sorted(top))}"
        )
    for key in ("family", "task", "description", "init"):
        if isinstance(raw.get(key), (dict, list)):
            raise ConfigError(f"config key '{key}' must be a single value, not {raw[key]!r}")
    family = str(raw.get("family") or "gpt")
    model_cls = model_config_class(family)
    cfg = RunConfig(
        family=family,
        task=str(raw.get("task") or "lm"),
        description=str(raw.get("description") or ""),
        init=str(raw["init"]) if raw.get("init") not in (None, "") else None,
        model=from_dict(model_cls, raw.get("model"), "model"),
        tokenizer=from_dict(TokenizerConfig, raw.get("tokenizer"), "tokenizer"),
        data=from_dict(DataConfig, raw.get("data"), "data"),
        train=from_dict(TrainConfig, raw.get("train"), "train"),
    )
    check_task(cfg)
    return cfg


ENCODER_DECODER_FAMILIES = ("transformer", "seq2seq")
LANGUAGES = {"multi30k": ("en", "de"), "tatoeba-cmn": ("en", "zh")}


FINETUNE_TASKS = ("classification", "tagging")
FINETUNE_DATA_KEYS = ("dataset", "train_file", "valid_file", "test_file", "labels")
"""The data keys of fine-tuning runs (task classification / tagging)."""


def _check_finetune(cfg: RunConfig) -> None:
    """Fine-tuning settings: family bert, a dataset that fits the task, its file keys."""
    from lmlab.data.labeled import DATASET_NAMES, dataset_task

    d, task = cfg.data, cfg.task
    if cfg.family != "bert":
        raise ConfigError(
            f"task '{task}' fine-tunes an encoder: it needs family 'bert', not '{cfg.family}'"
        )
    valid = [n for n in DATASET_NAMES if dataset_task(n) in (task, None)]
    if d.dataset is None:
        raise ConfigError(f"task '{task}' needs data.dataset, one of: {', '.join(valid)}")
    _check_choice("data.dataset", d.dataset, DATASET_NAMES)
    if dataset_task(d.dataset) not in (task, None):
        raise ConfigError(
            f"data.dataset={d.dataset} is a {dataset_task(d.dataset)} dataset, but this run has task "
            f"'{task}' "
            f"(datasets for '{task}': {', '.join(valid)})"
        )
    if d.dataset == "files":
        if d.train_file is None:
            raise ConfigError(
                "data.dataset=files needs data.train_file=FILE ("
                + ("CoNLL: token TAB tag a line)" if task == "tagging" else "TSV: text TAB label)")
            )
        if d.root is not None:
            raise ConfigError("data.root is for the bundled datasets, not data.dataset=files")
    else:
        extra = [k for k in ("train_file", "valid_file", "test_file", "labels") if getattr(d, k) is not None]
        if extra:
            raise ConfigError(f"data.{extra[0]} is for data.dataset=files, not {d.dataset}")
    if d.path is not None:
        raise ConfigError(f"data.path is for language modelling; task '{task}' reads data.dataset")
    other = [k for k in TRANSLATION_DATA_KEYS if k not in ("max_len", "root") and getattr(d, k) is not None]
    if other:
        raise ConfigError(f"data.{other[0]} is a translation setting, but this run has task '{task}'")
    if d.max_len is not None and d.max_len < 3:
        raise ConfigError(f"data.max_len={d.max_len} leaves no room for text besides [CLS] and [SEP]")


def check_task(cfg: RunConfig) -> None:
    """Settings that depend on each other across sections (the task, the family and the data keys)."""
    d = cfg.data
    if cfg.family == "bert" and cfg.task == "lm":
        raise ConfigError(
            "family 'bert' is a bidirectional encoder: it cannot be trained on next-token prediction "
            "(task 'lm'; use a causal family such as gpt); a BERT run has task 'mlm' (masked-LM "
            "pretraining, e.g. the gutenberg-bert recipe) or a fine-tuning task (classification, tagging)"
        )
    if cfg.task == "mlm" and cfg.family != "bert":
        raise ConfigError(f"task 'mlm' (masked language modelling) needs family 'bert', not '{cfg.family}'")
    if cfg.task in FINETUNE_TASKS:
        _check_finetune(cfg)
        return
    used = [k for k in FINETUNE_DATA_KEYS if getattr(d, k) is not None]
    if used:
        raise ConfigError(
            f"data.{used[0]} is a fine-tuning setting (task classification or tagging), "
            f"not for task '{cfg.task}'"
        )
    if cfg.init is not None:
        raise ConfigError(
            f"init is for fine-tuning (task classification or tagging), not for task '{cfg.task}'"
        )
    if cfg.task != "translation":
        used = [k for k in TRANSLATION_DATA_KEYS if getattr(d, k) is not None]
        if used and cfg.task in ("lm", "mlm"):
            raise ConfigError(
                f"data.{used[0]} is a translation setting, but this run has task '{cfg.task}' "
                "(set task: translation with an encoder-decoder family, e.g. family: transformer)"
            )
        if cfg.task == "mlm" and cfg.tokenizer.kind != "wordpiece" and cfg.tokenizer.path is None:
            raise ConfigError(
                f"task 'mlm' needs BERT's tokenizer: tokenizer.kind=wordpiece (with [CLS] [SEP] [MASK] "
                f"[PAD]), not '{cfg.tokenizer.kind}'"
            )
        return
    if cfg.family not in ENCODER_DECODER_FAMILIES:
        raise ConfigError(
            f"task 'translation' needs an encoder-decoder family ({', '.join(ENCODER_DECODER_FAMILIES)}); "
            f"got family '{cfg.family}'"
        )
    if d.path is not None:
        raise ConfigError(
            "data.path is for language modelling; translation reads data.corpus (multi30k, tatoeba-cmn, "
            "or files with data.train_src + data.train_tgt / data.train_tsv)"
        )
    if d.corpus is None:
        raise ConfigError(f"task 'translation' needs data.corpus, one of: {', '.join(CORPORA)}")
    if d.corpus in LANGUAGES:
        valid = LANGUAGES[d.corpus]
        for key in ("src_lang", "tgt_lang"):
            lang = getattr(d, key)
            if lang == "cmn":  # Mandarin's ISO 639-3 code
                lang = "zh"
                setattr(d, key, lang)
            if lang is None or lang not in valid:
                raise ConfigError(
                    f"data.{key}={lang!r}: data.corpus={d.corpus} has the languages {', '.join(valid)} "
                    f"(set data.src_lang and data.tgt_lang to two different ones)"
                )
        if d.src_lang == d.tgt_lang:
            raise ConfigError(f"data.src_lang and data.tgt_lang are both '{d.src_lang}'")
        files = [k for k in TRANSLATION_DATA_KEYS if k.endswith(("_src", "_tgt", "_tsv")) and getattr(d, k)]
        if files:
            raise ConfigError(f"data.{files[0]} is for data.corpus=files, not {d.corpus}")
    else:  # files
        for split in ("train", "valid", "test"):
            src, tgt, tsv = (getattr(d, f"{split}_{k}") for k in ("src", "tgt", "tsv"))
            if tsv is not None and (src is not None or tgt is not None):
                raise ConfigError(
                    f"give either data.{split}_tsv or data.{split}_src + data.{split}_tgt, not both"
                )
            if (src is None) != (tgt is None):
                missing = f"{split}_tgt" if tgt is None else f"{split}_src"
                raise ConfigError(
                    f"data.{missing} is missing: data.{split}_src and data.{split}_tgt go together"
                )
        if d.train_tsv is None and d.train_src is None:
            raise ConfigError(
                "data.corpus=files needs the training pairs: data.train_src=FILE data.train_tgt=FILE "
                "(aligned, one sentence a line) or data.train_tsv=FILE (source TAB target)"
            )
        if d.root is not None:
            raise ConfigError(
                "data.root is for the bundled corpora (multi30k, tatoeba-cmn), not data.corpus=files"
            )
    tok = cfg.tokenizer
    model = cfg.model
    if tok.joint:
        extra = [k for k in ("src_kind", "src_vocab_size", "src_path") if getattr(tok, k) is not None]
        if extra:
            raise ConfigError(f"tokenizer.{extra[0]} is for separate vocabularies (tokenizer.joint=false)")
    elif getattr(model, "share_embeddings", False):
        raise ConfigError(
            "model.share_embeddings=true needs one joint vocabulary: set tokenizer.joint=true "
            "(or model.share_embeddings=false)"
        )
    limit = getattr(model, "max_len", None)
    if d.max_len is not None and limit is not None and d.max_len > limit:
        raise ConfigError(f"data.max_len={d.max_len} exceeds model.max_len={limit} (the model's positions)")


def load_config(recipe_or_yaml: str, overrides: list[str] | None = None) -> RunConfig:
    return build_config(load_raw(recipe_or_yaml), overrides)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
