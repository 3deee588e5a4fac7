"""Fine-tuning runs (family ``bert``, task ``classification`` or ``tagging``) and their pipelines.

A fine-tuning run starts from scratch (a WordPiece tokenizer trained on the training split and a
BERT of the model section's sizes) or from ``init``: one of our 'bert' runs (a pretraining run, a
converted Hugging Face model, or another fine-tuned run) or a Hugging Face BERT directory. With
``init`` the tokenizer, the encoder's sizes (vocabulary, positions, layers, heads, widths,
activation) and its weights come from the checkpoint; the heads (the pooler when the checkpoint
has none, and the classifier) are new, and the regularisation settings (``model.dropout``,
``attn_dropout``, ``classifier_dropout``) and ``model.attention`` stay the run's own.

Run directory, besides the usual ``config.yaml`` (with the resolved model section) and checkpoints:
``tokenizer.json`` and ``labels.json`` (the label names in class order, and the positive class if
any), so ``lmlab classify`` / ``lmlab tag`` print names. ``lmlab.load`` gives a
``ClassificationPipeline`` (``classify``) or a ``TaggingPipeline`` (``tag``), both with
``evaluate(split)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmlab.config import RunConfig, TokenizerConfig, save_config
from lmlab.data.labeled import (
    DATASETS,
    Encoded,
    LabeledTexts,
    TaggedSentences,
    check_labels,
    encode_classification,
    encode_tagging,
    encode_words,
    holdout,
    label_set,
    load_labeled_split,
    read_for_task,
    split_name,
    split_words,
)
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.pipeline import Pipeline

LABELS_FILE = "labels.json"
DEFAULT_MAX_LEN = 128
ENCODER_KEYS = (
    "vocab_size",
    "block_size",
    "type_vocab_size",
    "n_layer",
    "n_head",
    "d_model",
    "d_ff",
    "activation",
    "norm_eps",
    "pad_token_id",
)
"""The model settings an ``init`` checkpoint fixes (the shapes and the function of its encoder)."""


# --------------------------------------------------------------------------------------------------
# init: our bert runs and Hugging Face BERT directories


@dataclass
class InitSource:
    """What fine-tuning takes from an ``init`` checkpoint."""

    path: Path
    kind: str
    """'run' (an lmlab run or checkpoint directory) or 'hf' (a Hugging Face directory)."""
    config: Any
    """Its BertConfig."""
    tokenizer: Any
    """Its WordPieceTokenizer."""
    encoder: dict[str, Tensor] | None
    """The encoder's weights (``Bert`` state-dict keys, without the ``bert.`` prefix), or None when
    not loaded."""


def _family_error(path: Path, family: str, what: str) -> ConfigError:
    return ConfigError(
        f"init={path} is {what} of family '{family}', but fine-tuning builds a 'bert' model: init needs "
        "a 'bert' checkpoint (a BERT run, or a Hugging Face BERT directory)"
    )


def read_init(path: str | Path, weights: bool = True) -> InitSource:
    """The config, tokenizer and (with ``weights``) encoder weights of an ``init`` checkpoint: an lmlab
    'bert' run or checkpoint directory, or a Hugging Face BERT directory. A checkpoint of another
    family is a ConfigError naming both families."""
    from lmlab.checkpoint import latest_checkpoint, load_model_weights, validate_checkpoint
    from lmlab.interop import is_hf_dir
    from lmlab.interop.gpt2 import read_hf_config
    from lmlab.pipeline import find_run_dir
    from lmlab.runs import CONFIG_FILE, TOKENIZER_FILE, build_run_model, read_run_config
    from lmlab.tokenizers import WordPieceTokenizer, load_tokenizer

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(
            f"init={path} does not exist (give a BERT run directory or a Hugging Face BERT directory)"
        )
    if not path.is_dir():
        raise ConfigError(
            f"init={path} is a file; give a BERT run directory or a Hugging Face BERT directory"
        )
    if not (path / CONFIG_FILE).exists() and is_hf_dir(path):
        model_type = read_hf_config(path).get("model_type")
        if model_type != "bert":
            raise _family_error(path, str(model_type), "a Hugging Face model")
        from lmlab.interop.bert import bert_config_from_hf, import_hf_bert, load_hf_bert_tokenizer

        if weights:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "holds no tokenizer": said below, as an error
                model, tokenizer = import_hf_bert(path)
            config = model.config
            encoder = getattr(model, "bert", model).state_dict()
        else:
            config = bert_config_from_hf(read_hf_config(path))
            tokenizer, encoder = load_hf_bert_tokenizer(path), None
        if tokenizer is None:
            raise ConfigError(f"init={path} holds no tokenizer (tokenizer.json or vocab.txt)")
        return InitSource(path, "hf", dataclasses.replace(config), tokenizer, encoder)
    try:
        run_dir, ckpt = find_run_dir(path)
    except CheckpointError:
        raise ConfigError(
            f"init={path} is neither an lmlab run (no {CONFIG_FILE}) nor a Hugging Face model directory "
            "(no config.json)"
        ) from None
    cfg = read_run_config(run_dir)
    if cfg.family != "bert":
        raise _family_error(path, cfg.family, "a run")
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    if not isinstance(tokenizer, WordPieceTokenizer):
        raise ConfigError(f"init={path}: its tokenizer is a {type(tokenizer).__name__}, not BERT's WordPiece")
    encoder = None
    if weights:
        if ckpt is None:
            ckpt = latest_checkpoint(run_dir)
            if ckpt is None:
                raise CheckpointError(f"init={path} holds no checkpoint yet")
        else:
            validate_checkpoint(ckpt)
        model = build_run_model(cfg)
        load_model_weights(ckpt, model)
        encoder = getattr(model, "bert", model).state_dict()
    return InitSource(path, "run", dataclasses.replace(cfg.model), tokenizer, encoder)


def load_encoder(model: nn.Module, encoder: dict[str, Tensor], where: str | Path) -> None:
    """Copy an encoder's weights into ``model.bert``: every tensor of the encoder must be there with
    its shape, except the pooler, which stays newly initialised when the checkpoint has none (a
    masked LM's); tensors the model lacks (a pooler, for a tagger) are dropped."""
    target = getattr(model, "bert", model)
    expected = target.state_dict()
    missing = [k for k in expected if k not in encoder and not k.startswith("pooler.")]
    bad = [
        f"{k} (checkpoint {tuple(encoder[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in encoder and encoder[k].shape != v.shape
    ]
    if missing or bad:
        detail = f"missing: {', '.join(missing[:3])}" if missing else f"shape mismatch: {', '.join(bad[:3])}"
        raise CheckpointError(f"init={where}: its encoder does not fit the model ({detail})")
    with torch.no_grad():
        for k, v in expected.items():
            if k in encoder:
                v.copy_(encoder[k])


# --------------------------------------------------------------------------------------------------
# labels


def read_labels(run_dir: str | Path) -> tuple[list[str], str | None, list[str]]:
    """(label names in class order, the positive label or None, the labels as the data files write
    them) from ``run_dir/labels.json``."""
    path = Path(run_dir) / LABELS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: the run's label names are missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or not labels:
        raise CheckpointError(f'{path} is corrupt: expected {{"labels": [names...]}}')
    positive = raw.get("positive")
    file_labels = raw.get("file_labels")
    if not isinstance(file_labels, list) or len(file_labels) != len(labels):
        file_labels = labels
    return labels, positive if isinstance(positive, str) else None, [str(x) for x in file_labels]


def _write_labels(run_dir: Path, names: list[str], file_labels: list[str], positive: str | None) -> None:
    out = {"labels": names, "file_labels": file_labels, "positive": positive}
    tmp = run_dir / (LABELS_FILE + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / LABELS_FILE)


def _label_sets(
    cfg: RunConfig, train: LabeledTexts | TaggedSentences
) -> tuple[list[str], list[str], str | None]:
    """(labels as written in the files, their display names, the positive name or None)."""
    d = cfg.data
    if d.dataset in DATASETS:
        spec = DATASETS[d.dataset]
        names = spec.label_names()
        positive = spec.names.get(spec.positive, spec.positive) if spec.positive else None
        return list(spec.labels), names, positive
    labels = list(d.labels) if d.labels else label_set(train)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"data.labels lists a label twice: {labels}")
    if cfg.task == "classification" and len(labels) < 2:
        raise ConfigError(
            f"{d.train_file}: only one label ({labels[0]!r}) in the training data: "
            "a classifier needs two or more"
        )
    return labels, list(labels), None


# --------------------------------------------------------------------------------------------------
# preparing and training a run


def max_len_of(cfg: RunConfig) -> int:
    """The most tokens of an example: data.max_len, default 128 (at most model.block_size)."""
    block = cfg.model.block_size
    if cfg.data.max_len is None:
        return min(DEFAULT_MAX_LEN, block)
    if cfg.data.max_len > block:
        raise ConfigError(
            f"data.max_len={cfg.data.max_len} exceeds model.block_size={block} (the model's positions)"
        )
    return cfg.data.max_len


def load_examples(cfg: RunConfig, split: str) -> LabeledTexts | TaggedSentences:
    """The examples of ``split`` (train, valid, test) of a fine-tuning run's data; for ``files``
    without a validation file, a seeded ``data.val_fraction`` of the training file is held out
    (and left out of train)."""
    split = split_name(split)
    data = load_labeled_split(cfg.data, split, cfg.task)
    if data is not None:
        if split == "train" and cfg.data.dataset == "files" and not cfg.data.valid_file:
            keep, _ = holdout(len(data), cfg.data.val_fraction, cfg.train.seed)
            return data.select(keep.tolist())
        return data
    if split == "valid":
        train = load_labeled_split(cfg.data, "train", cfg.task)
        assert train is not None
        _, held = holdout(len(train), cfg.data.val_fraction, cfg.train.seed)
        return train.select(held.tolist())
    raise DataError(f"this run has no {split} data (set data.{split}_file=FILE, or pass --data FILE)")


def encode(
    data: LabeledTexts | TaggedSentences, tokenizer: Any, labels: list[str], max_len: int, warn: bool = True
) -> Encoded:
    if isinstance(data, TaggedSentences):
        return encode_tagging(data, tokenizer, labels, max_len, warn=warn)
    return encode_classification(data, tokenizer, labels, max_len, warn=warn)


def _absolute(cfg: RunConfig) -> RunConfig:
    def absolute(p: str | None) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else p

    d = cfg.data
    data = dataclasses.replace(
        d, **{k: absolute(getattr(d, k)) for k in ("root", "train_file", "valid_file", "test_file")}
    )
    tok = dataclasses.replace(cfg.tokenizer, path=absolute(cfg.tokenizer.path))
    return dataclasses.replace(cfg, data=data, tokenizer=tok, init=absolute(cfg.init))


def _train_texts(train: LabeledTexts | TaggedSentences) -> list[str]:
    if isinstance(train, TaggedSentences):
        return [" ".join(words) for words in train.words]
    return train.text + (train.text2 or [])


def _scratch_tokenizer(cfg: RunConfig, train: LabeledTexts | TaggedSentences) -> Any:
    from lmlab.tokenizers import WordPieceTokenizer, load_tokenizer

    tc = cfg.tokenizer
    if tc.path:
        tok = load_tokenizer(tc.path)
        if not isinstance(tok, WordPieceTokenizer):
            raise ConfigError(
                f"tokenizer.path={tc.path} is a {type(tok).__name__}; fine-tuning needs BERT's WordPiece"
            )
        return tok
    if tc.kind != "wordpiece":
        raise ConfigError(f"fine-tuning a BERT needs tokenizer.kind=wordpiece, not '{tc.kind}'")
    return WordPieceTokenizer.train(_train_texts(train), tc.vocab_size)


@dataclass
class Prepared:
    cfg: RunConfig
    tokenizer: Any
    labels: list[str]
    """Display names, in class order."""
    positive: int | None
    train: Encoded
    valid: Encoded
    valid_tags: list[list[str]] | None
    """Tagging: the validation sentences' gold tags (as file labels)."""
    file_labels: list[str]
    init: InitSource | None


def prepare_finetune(cfg: RunConfig, run_dir: str | Path) -> Prepared:
    """Data, labels, tokenizer and the resolved model config of a fine-tuning run in ``run_dir``
    (written there: tokenizer.json, labels.json, config.yaml). Resuming (a checkpoint exists), the
    model, tokenizer and data settings must match the saved run, and the tokenizer is the saved one."""
    from lmlab.runs import (
        CONFIG_FILE,
        TOKENIZER_FILE,
        _barrier,
        _is_main,
        check_run_dir,
        has_checkpoint,
        resumed_config,
    )
    from lmlab.tokenizers import load_tokenizer

    run_dir = check_run_dir(run_dir)
    cfg = _absolute(cfg)
    resuming = has_checkpoint(run_dir)
    train_text = load_examples(cfg, "train")
    valid_text = load_examples(cfg, "valid")
    file_labels, names, positive = _label_sets(cfg, train_text)
    check_labels(train_text, file_labels)
    check_labels(valid_text, file_labels)
    if cfg.task == "tagging" and _is_main():
        odd = [t for t in file_labels if t != "O" and not re.match(r"^[BIES]-.", t)]
        if odd:
            warnings.warn(
                f"tags such as {odd[0]!r} are not BIO tags (O, B-TYPE, I-TYPE): "
                "the entity scores read a tag's "
                "first letter as its chunk prefix (word accuracy is unaffected)",
                stacklevel=2,
            )

    init = read_init(cfg.init, weights=not resuming) if cfg.init else None
    model = cfg.model
    tok_cfg = cfg.tokenizer
    if init is not None:
        model = dataclasses.replace(model, **{k: getattr(init.config, k) for k in ENCODER_KEYS})
        tok_cfg = TokenizerConfig(kind="wordpiece", vocab_size=init.tokenizer.vocab_size)
    if resuming:
        tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    elif init is not None:
        tokenizer = init.tokenizer
    else:  # trained once (rank 0) and read back by every process: what inference will load
        if _is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            _scratch_tokenizer(cfg, train_text).save(run_dir / TOKENIZER_FILE)
        _barrier()
        tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    if init is None:
        if model.vocab_size == 0:
            model = dataclasses.replace(model, vocab_size=tokenizer.vocab_size)
        elif model.vocab_size < tokenizer.vocab_size:
            raise ConfigError(
                f"model.vocab_size={model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}"
            )
        model = dataclasses.replace(model, pad_token_id=tokenizer.pad_id)
    model = dataclasses.replace(model, num_labels=len(file_labels))
    model.validate()
    cfg = dataclasses.replace(cfg, model=model, tokenizer=tok_cfg)
    max_len = max_len_of(cfg)

    if resuming and (run_dir / CONFIG_FILE).exists():
        saved_labels, _, _ = read_labels(run_dir)
        if saved_labels != names:
            raise ConfigError(
                f"{run_dir} holds a run with the labels {saved_labels}, but this data has {names}; "
                "use a new --out directory"
            )
        cfg = resumed_config(cfg, run_dir)
    if _is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resuming and init is not None:
            tokenizer.save(run_dir / TOKENIZER_FILE)
        _write_labels(run_dir, names, file_labels, positive)
        save_config(cfg, run_dir / CONFIG_FILE)
    with warnings.catch_warnings():
        if not _is_main():
            warnings.simplefilter("ignore")
        train = encode(train_text, tokenizer, file_labels, max_len)
        valid = encode(valid_text, tokenizer, file_labels, max_len)
    valid_tags = valid_text.tags if isinstance(valid_text, TaggedSentences) else None
    pos_index = names.index(positive) if positive is not None else None
    return Prepared(cfg, tokenizer, names, pos_index, train, valid, valid_tags, file_labels, init)


def train_finetune(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) a fine-tuning run; returns the final metrics record."""
    from lmlab.runs import build_run_model
    from lmlab.tasks.classification import ClassificationTask
    from lmlab.tasks.tagging import TaggingTask
    from lmlab.train import Trainer, resolve_device

    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")) if ddp else None)
    prep = prepare_finetune(cfg, run_dir)
    cfg = prep.cfg
    torch.manual_seed(cfg.train.seed)
    model = build_run_model(cfg)
    if prep.init is not None and prep.init.encoder is not None:
        load_encoder(model, prep.init.encoder, prep.init.path)
    common = dict(seed=cfg.train.seed, device=device)
    task: Any
    if cfg.task == "tagging":
        assert prep.valid_tags is not None
        task = TaggingTask(prep.train, prep.valid, prep.file_labels, prep.valid_tags, **common)
    else:
        task = ClassificationTask(prep.train, prep.valid, prep.labels, prep.positive, **common)
    trainer = Trainer(model, task, cfg.train, run_dir, extra_state={"init": cfg.init})
    return trainer.fit()


# --------------------------------------------------------------------------------------------------
# pipelines


def _check_texts(texts: Any, what: str) -> list[str]:
    from lmlab.errors import GenerationError

    items = [texts] if isinstance(texts, str) else list(texts)
    for t in items:
        if not isinstance(t, str):
            raise GenerationError(f"{what} must be strings, got {type(t).__name__}")
    return items


class _FinetunedPipeline(Pipeline):
    """What the classification and tagging pipelines share: labels, max length, evaluation data."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        config: RunConfig,
        path: Path | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        super().__init__(model, tokenizer, config, path, checkpoint)
        if path is None:
            raise CheckpointError("a fine-tuned pipeline needs its run directory (for labels.json)")
        self.labels, positive, self.file_labels = read_labels(path)
        self.positive = self.labels.index(positive) if positive in self.labels else None
        self.max_len = max_len_of(config)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({len(self.labels)} labels, checkpoint={self.checkpoint}, device={self.device})"

    def _examples(self, split: str | None, data: str | Path | None) -> tuple[Any, str]:
        if data is not None:
            return read_for_task(data, self.config.task), str(data)
        split = split_name(split or "valid")
        return load_examples(self.config, split), {"valid": "dev"}.get(split, split)


class ClassificationPipeline(_FinetunedPipeline):
    """A fine-tuned sentence (pair) classifier: ``classify(text, pair=None)``, ``evaluate(split)``."""

    def probabilities(self, texts: str | Sequence[str], pairs: str | Sequence[str] | None = None) -> Tensor:
        """(N, num_labels) class probabilities of the texts (and their second texts), float32 on the CPU."""
        from lmlab.errors import GenerationError
        from lmlab.tasks.classification import predict_logits

        items = _check_texts(texts, "texts")
        second = None if pairs is None else _check_texts(pairs, "pairs")
        if second is not None and len(second) != len(items):
            raise GenerationError(f"{len(items)} texts but {len(second)} pairs")
        data = LabeledTexts(items, second, [self.file_labels[0]] * len(items), list(range(1, len(items) + 1)))
        enc = encode_classification(data, self.tokenizer, self.file_labels, self.max_len, warn=False)
        if enc.n_truncated:
            warnings.warn(
                f"{enc.n_truncated} text(s) longer than {self.max_len} tokens were truncated", stacklevel=3
            )
        logits, _ = predict_logits(self.model.eval(), enc)
        return logits.softmax(-1)

    def classify(self, texts: str | Sequence[str], pair: str | Sequence[str] | None = None) -> Any:
        """For one text (with ``pair``, its second text): ``{"label", "prob", "probs": {label: p}}``;
        for a list of texts, a list of those."""
        probs = self.probabilities(texts, pair)
        out = []
        for row in probs.tolist():
            k = int(np.argmax(row))
            out.append({"label": self.labels[k], "prob": row[k], "probs": dict(zip(self.labels, row))})
        return out[0] if isinstance(texts, str) else out

    def evaluate(self, split: str | None = None, data: str | Path | None = None) -> dict[str, Any]:  # type: ignore[override]
        """``accuracy`` (and for MRPC the positive class's ``f1``, ``precision``, ``recall``), ``loss``
        and ``examples`` on ``split`` (dev, test, train) of the run's data, or on a TSV file ``data``."""
        from lmlab.tasks.classification import classification_metrics

        examples, where = self._examples(split, data)
        if not isinstance(examples, LabeledTexts):
            raise DataError(f"{where}: expected classification examples (TSV)")
        enc = encode(examples, self.tokenizer, self.file_labels, self.max_len)
        out: dict[str, Any] = classification_metrics(self.model.eval(), enc, self.positive)
        out["split"] = where
        return out


class TaggingPipeline(_FinetunedPipeline):
    """A fine-tuned tagger: ``tag(text)`` -> entities with character spans; ``evaluate(split)``."""

    def tag_words(self, words: Sequence[str]) -> list[tuple[str, float]]:
        """(tag, probability) for each of ``words`` (tagged from its first sub-token; a word cut off
        by the length limit, or with no sub-token, is ``O``)."""
        words = _check_texts(list(words), "words")
        if not words:
            return []
        ids, positions, truncated = encode_words([words], self.tokenizer, self.max_len)
        if truncated:
            warnings.warn(f"the text is longer than {self.max_len} tokens: its end is tagged O", stacklevel=3)
        x = torch.tensor(ids, device=self.device)
        with torch.no_grad():
            probs = self.model.eval()(x).float().softmax(-1)[0].cpu()
        outside = self.file_labels.index("O") if "O" in self.file_labels else 0
        out = []
        for p in positions[0]:
            if p < 0:
                out.append((self.file_labels[outside], 1.0))
            else:
                k = int(probs[p].argmax())
                out.append((self.file_labels[k], float(probs[p, k])))
        return out

    def tag(self, text: str) -> list[dict[str, Any]]:
        """The entities of ``text``: ``{"type", "text", "start", "end", "score"}`` with character
        offsets (``text[start:end]``) and the mean probability of its words' tags. The text is cut into
        words as tagged corpora are (``lmlab.data.labeled.split_words``: punctuation apart)."""
        from lmlab.metrics import entity_spans

        (text,) = _check_texts(text, "text")
        words = split_words(text)
        tagged = self.tag_words([w for w, _, _ in words])
        out = []
        for etype, first, last in entity_spans([t for t, _ in tagged]):
            start, end = words[first][1], words[last][2]
            score = sum(p for _, p in tagged[first : last + 1]) / (last - first + 1)
            out.append({"type": etype, "text": text[start:end], "start": start, "end": end, "score": score})
        return out

    def evaluate(self, split: str | None = None, data: str | Path | None = None) -> dict[str, Any]:  # type: ignore[override]
        """Entity-level ``precision``, ``recall``, ``f1`` (as seqeval), word ``accuracy``, ``loss`` and
        counts on ``split`` (dev, test, train) of the run's data, or on a CoNLL file ``data``."""
        from lmlab.tasks.tagging import tagging_metrics

        examples, where = self._examples(split, data)
        if not isinstance(examples, TaggedSentences):
            raise DataError(f"{where}: expected tagged sentences (CoNLL)")
        enc = encode(examples, self.tokenizer, self.file_labels, self.max_len)
        out: dict[str, Any] = tagging_metrics(self.model.eval(), enc, examples.tags, self.file_labels)
        out["split"] = where
        return out


def finetune_pipeline(
    model: nn.Module, tokenizer: Any, config: RunConfig, path: Path, checkpoint: Path | None = None
) -> Pipeline:
    """The pipeline of a fine-tuning run (what ``lmlab.load`` gives for task classification / tagging)."""
    cls = TaggingPipeline if config.task == "tagging" else ClassificationPipeline
    return cls(model, tokenizer, config, path, checkpoint)


__all__ = [
    "ClassificationPipeline",
    "InitSource",
    "LABELS_FILE",
    "TaggingPipeline",
    "finetune_pipeline",
    "load_encoder",
    "prepare_finetune",
    "read_init",
    "read_labels",
    "train_finetune",
]
