"""A run: config + tokenizer + data + model + Trainer, all kept in one run directory.

``train_run(cfg, run_dir)`` builds (or resumes) everything and trains. Re-running it on a run
directory that holds a checkpoint continues that run exactly; the model, tokenizer and data
sections must then match the saved config (train settings such as max_steps may change).

It dispatches on ``cfg.task``: ``lm`` (a token stream, ``LMTask``) or ``translation`` (sentence
pairs of ``data.corpus``, tokenizers trained on the training split, ``TranslationTask``); ``mlm``
(BERT pretraining, ``lmlab.pretrain.train_mlm_run``).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from lmlab.checkpoint import list_checkpoints
from lmlab.config import RunConfig, build_config, save_config
from lmlab.data import TokenData, iter_text
from lmlab.errors import ConfigError
from lmlab.models import build_model
from lmlab.tokenizers import load_tokenizer, train_tokenizer

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config saved in ``run_dir/config.yaml`` (ConfigError naming the file if unreadable)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: {run_dir} is not an lmlab run directory") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the run's config {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is corrupt: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return build_config(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _same_value(key: str, a: Any, b: Any) -> bool:
    if key == "path" and a is not None and b is not None:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b


_FROM_DATA = ("vocab_size", "src_vocab_size", "tgt_vocab_size")


def _differences(saved: RunConfig, new: RunConfig, sections: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, new value) for each setting of ``sections`` that differs."""
    out = []
    for section in sections:
        a, b = dataclasses.asdict(getattr(saved, section)), dataclasses.asdict(getattr(new, section))
        for key in a:
            if key in _FROM_DATA and section == "model" and b.get(key) == 0:
                continue  # 0 means: from the tokenizer
            if not _same_value(key, a[key], b.get(key)):
                out.append((f"{section}.{key}", a[key], b.get(key)))
    return out


def _check_same_run(saved: RunConfig, new: RunConfig, run_dir: Path) -> None:
    if saved.family != new.family:
        raise ConfigError(
            f"{run_dir} holds a '{saved.family}' run, not '{new.family}'; use a new --out directory"
        )
    if saved.task != new.task:
        raise ConfigError(
            f"{run_dir} holds a '{saved.task}' run, not '{new.task}'; use a new --out directory"
        )
    diffs = _differences(saved, new, ("model", "tokenizer", "data"))
    if diffs:
        key, a, b = diffs[0]
        raise ConfigError(
            f"{run_dir} holds a run with {key}={a!r} but this config has {key}={b!r}; "
            "use a new --out directory, or the same settings to resume"
        )


_DATA_PATH_KEYS = (
    "path",
    "root",
    "train_src",
    "train_tgt",
    "valid_src",
    "valid_tgt",
    "test_src",
    "test_tgt",
    "train_tsv",
    "valid_tsv",
    "test_tsv",
)


def _absolute_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its file and folder settings (data.path, data.root, the parallel files,
    tokenizer.path, tokenizer.src_path) made absolute."""

    def absolute(p: str | None) -> str | None:
        return str(Path(p).expanduser().resolve()) if p else p

    data = {k: absolute(getattr(cfg.data, k)) for k in _DATA_PATH_KEYS if hasattr(cfg.data, k)}
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **data),
        tokenizer=dataclasses.replace(
            cfg.tokenizer, path=absolute(cfg.tokenizer.path), src_path=absolute(cfg.tokenizer.src_path)
        ),
    )


def build_run_model(cfg: RunConfig) -> Any:
    """``build_model`` with bad model settings (that the family's own checks let through) as ConfigError."""
    try:
        return build_model(cfg.family, cfg.model, cfg.task)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ConfigError(f"cannot build the '{cfg.family}' model from the model settings: {e}") from None


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        dist.barrier()


# --------------------------------------------------------------------------------------------------
# starting or resuming a run directory (shared by every kind of run: lm, translation, mlm, fine-tuning)


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path; ConfigError if it names a file."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a run directory")
    return run_dir


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume from."""
    return bool(list_checkpoints(run_dir)) if run_dir.exists() else False


def resumed_config(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """The config to resume the run saved in ``run_dir`` with: the saved one (whose model, tokenizer
    and data settings ``cfg`` must match, ConfigError naming the first difference) with ``cfg``'s
    train settings and description."""
    saved = read_run_config(run_dir)
    _check_same_run(saved, cfg, run_dir)
    return dataclasses.replace(saved, train=cfg.train, description=cfg.description or saved.description)


def open_run(cfg: RunConfig, run_dir: Path, artifacts: list[Path], stale_when: tuple[str, ...]) -> RunConfig:
    """The config of a run about to start in ``run_dir``.

    With a checkpoint there the run resumes: ``resumed_config``. Without one, a config saved by an
    earlier start that never reached a checkpoint may sit beside ``artifacts`` it built (tokenizers);
    they are deleted, to be built again, if the family, the task or one of the ``stale_when`` settings
    changed (a section such as ``"tokenizer"``, or one key such as ``"data.path"``).
    """
    if has_checkpoint(run_dir) and (run_dir / CONFIG_FILE).exists():
        return resumed_config(cfg, run_dir)
    if (run_dir / CONFIG_FILE).exists() and any(p.exists() for p in artifacts) and _is_main():
        try:
            saved = read_run_config(run_dir)
            stale = saved.family != cfg.family or saved.task != cfg.task
            sections = tuple(dict.fromkeys(k.split(".")[0] for k in stale_when))
            changed = [k for k, _, _ in _differences(saved, cfg, sections)]
            stale = stale or any(k in stale_when or k.split(".")[0] in stale_when for k in changed)
        except ConfigError:
            stale = True
        if stale:
            for p in artifacts:
                p.unlink(missing_ok=True)
    return cfg


def prepare(cfg: RunConfig, run_dir: str | Path) -> tuple[RunConfig, Any, TokenData]:
    """Tokenizer and token data for ``cfg`` in ``run_dir`` (trained / built once, then reused)."""
    run_dir = check_run_dir(run_dir)
    cfg = _absolute_paths(cfg)  # the saved config must not depend on the current directory
    tok_path = run_dir / TOKENIZER_FILE
    # a run that never reached a checkpoint starts over, with a new tokenizer if its settings or its
    # text changed (the token cache notices a new tokenizer or new files by itself)
    cfg = open_run(cfg, run_dir, [tok_path], ("tokenizer", "data.path"))
    if _is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if not tok_path.exists():
            tokenizer = train_tokenizer(cfg.tokenizer, iter_text(cfg.data.path))
            tokenizer.save(tok_path)
    _barrier()
    tokenizer = load_tokenizer(tok_path)
    if _is_main():
        TokenData.build(cfg.data.path, tokenizer, run_dir / "data", val_fraction=cfg.data.val_fraction)
    _barrier()
    data = TokenData.open(run_dir / "data", val_fraction=cfg.data.val_fraction)
    if getattr(cfg.model, "vocab_size", None) == 0:
        cfg.model.vocab_size = tokenizer.vocab_size
    elif getattr(cfg.model, "vocab_size", 0) < tokenizer.vocab_size:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}"
        )
    if _is_main():
        save_config(cfg, run_dir / CONFIG_FILE)
    return cfg, tokenizer, data


def _check_block_size(cfg: RunConfig) -> int:
    """The training window length (data.block_size, default model.block_size), checked."""
    block = cfg.data.block_size or cfg.model.block_size
    if block > cfg.model.block_size:
        raise ConfigError(f"data.block_size={block} exceeds model.block_size={cfg.model.block_size}")
    return block


def prepare_translation(cfg: RunConfig, run_dir: str | Path) -> tuple[RunConfig, Any, Any, Any, list[str]]:
    """(cfg with the vocabulary sizes filled in, tokenizers, train pairs, valid pairs, valid reference
    texts) for a translation run; the tokenizers are trained on the training split once and saved
    in ``run_dir`` (tokenizer.json, or tokenizer_src.json + tokenizer_tgt.json), then reused."""
    from lmlab.data.parallel import encode_pairs, load_split
    from lmlab.translate import TOKENIZER_FILES, TranslationTokenizers

    run_dir = check_run_dir(run_dir)
    cfg = _absolute_paths(cfg)
    # no checkpoint yet: start over, with new tokenizers if their settings or the data changed
    cfg = open_run(cfg, run_dir, [run_dir / f for f in TOKENIZER_FILES], ("tokenizer", "data"))
    train_text = load_split(cfg.data, "train")
    valid_text = load_split(cfg.data, "valid")
    for text in (train_text, valid_text):
        if text.n_empty_skipped and _is_main():
            n = text.n_empty_skipped
            warnings.warn(f"{text.source}: skipped {n} pairs with an empty side", stacklevel=2)
    joint = cfg.tokenizer.joint
    if _is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if not TranslationTokenizers.exist(run_dir, joint):
            TranslationTokenizers.train(cfg.tokenizer, train_text).save(run_dir)
    _barrier()
    toks = TranslationTokenizers.load(run_dir, joint)
    for side, need in (("src", toks.src_vocab_size), ("tgt", toks.tgt_vocab_size)):
        key = f"{side}_vocab_size"
        have = getattr(cfg.model, key)
        if have == 0:
            setattr(cfg.model, key, need)
        elif have < need:
            raise ConfigError(
                f"model.{key}={have} is smaller than the {side} tokenizer's {need - 3} tokens + 3 special "
                f"ones ({need}); set model.{key}=0 to take it from the tokenizer"
            )
    if getattr(cfg.model, "share_embeddings", False) and cfg.model.src_vocab_size != cfg.model.tgt_vocab_size:
        raise ConfigError("model.share_embeddings needs equal model.src_vocab_size and model.tgt_vocab_size")
    max_len = cfg.data.max_len or cfg.model.max_len
    if _is_main():
        train = encode_pairs(train_text, toks.src, toks.tgt, max_len)
        valid = encode_pairs(valid_text, toks.src, toks.tgt, max_len)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train = encode_pairs(train_text, toks.src, toks.tgt, max_len)
            valid = encode_pairs(valid_text, toks.src, toks.tgt, max_len)
    if _is_main():
        save_config(cfg, run_dir / CONFIG_FILE)
    return cfg, toks, train, valid, valid_text.tgt


def _train_translation(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    from lmlab.tasks import TranslationTask
    from lmlab.train import Trainer, resolve_device
    from lmlab.translate import bleu_tokenize_for

    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")) if ddp else None)
    cfg, toks, train, valid, refs = prepare_translation(cfg, run_dir)
    torch.manual_seed(cfg.train.seed)
    model = build_run_model(cfg)
    task = TranslationTask(
        train,
        valid,
        toks.src_special,
        toks.tgt_special,
        seed=cfg.train.seed,
        device=device,
        label_smoothing=cfg.train.label_smoothing,
        eval_max_tokens=max(cfg.train.batch_size // cfg.train.grad_accum, 1024),
        bleu_sentences=cfg.train.bleu_sentences,
        tgt_decode=toks.tgt.decode,
        val_refs=refs,
        bleu_tokenize=bleu_tokenize_for(cfg.data.tgt_lang),
    )
    trainer = Trainer(model, task, cfg.train, run_dir)
    return trainer.fit()


def train_run(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg`` in ``run_dir``; returns the final metrics."""
    from lmlab.tasks import LMTask
    from lmlab.train import Trainer, resolve_device

    if cfg.task == "translation":
        return _train_translation(cfg, run_dir)
    if cfg.task in ("classification", "tagging"):  # fine-tuning a BERT (lmlab/finetune.py)
        from lmlab.finetune import train_finetune

        return train_finetune(cfg, run_dir)
    if cfg.task == "mlm" or cfg.family == "bert":  # masked-LM pretraining (lmlab/pretrain.py)
        from lmlab.pretrain import train_mlm_run

        return train_mlm_run(cfg, run_dir)  # checks the task first: refuses family 'bert' with task 'lm'
    if cfg.task != "lm":
        raise ConfigError(f"unknown task '{cfg.task}'; valid: lm, translation, mlm, classification, tagging")
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Cheap checks first, before the (possibly long) tokenization.
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")) if ddp else None)
    _check_block_size(cfg)
    cfg, tokenizer, data = prepare(cfg, run_dir)
    block = _check_block_size(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_run_model(cfg)
    task = LMTask(data, block_size=block, seed=cfg.train.seed, device=device)
    trainer = Trainer(model, task, cfg.train, run_dir)
    return trainer.fit()
