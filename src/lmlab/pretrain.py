"""Masked-LM (+ next-sentence) pretraining runs (``task: mlm``, ``family: bert``).

``train_mlm_run(cfg, run_dir)``: the documents of ``data.path`` (``lmlab.data.pretraining``), a
WordPiece tokenizer trained on the training documents only (``tokenizer.kind: wordpiece``,
``tokenizer.vocab_size``; or ``tokenizer.path``), the token cache in ``run_dir/data/``, the model of
family bert (a ``BertForPreTraining`` when ``model.next_sentence``, else a ``BertForMaskedLM``) and an
``MLMTask``. The run directory is the usual one (config.yaml, tokenizer.json, data/, checkpoints/,
metrics.jsonl, loss.png); ``lmlab fill-mask``, ``embed``, ``eval`` and ``convert --to hf`` use it, and
fine-tuning takes it as ``init=``. Re-running on the same directory resumes exactly.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from lmlab.config import RunConfig, save_config
from lmlab.errors import ConfigError

DATA_DIR = "data"


def _max_len(cfg: RunConfig) -> int:
    """The pairs' length (data.block_size, default model.block_size), checked."""
    max_len = cfg.data.block_size or cfg.model.block_size
    if max_len > cfg.model.block_size:
        raise ConfigError(f"data.block_size={max_len} exceeds model.block_size={cfg.model.block_size}")
    if max_len < 5:
        raise ConfigError(f"data.block_size={max_len} is too short for a pair: [CLS] A [SEP] B [SEP] needs 5")
    return max_len


def prepare_mlm(cfg: RunConfig, run_dir: str | Path) -> tuple[RunConfig, Any, Any]:
    """(cfg with vocab_size filled in and paths made absolute, tokenizer, corpus) of a pretraining run;
    the tokenizer is trained and the corpus tokenized once, then reused from ``run_dir``."""
    from lmlab.data.pretraining import (
        PretrainingCorpus,
        holdout_documents,
        iter_training_text,
        list_corpus_files,
        read_documents,
        resolve_corpus_path,
    )
    from lmlab.runs import (
        CONFIG_FILE,
        TOKENIZER_FILE,
        _absolute_paths,
        _barrier,
        _is_main,
        check_run_dir,
        open_run,
    )
    from lmlab.tokenizers import WordPieceTokenizer, load_tokenizer

    run_dir = check_run_dir(run_dir)
    path = resolve_corpus_path(cfg.data.path)
    if cfg.data.path is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(path)))
    cfg = _absolute_paths(cfg)
    _max_len(cfg)
    files = list_corpus_files(path)
    tok_path = run_dir / TOKENIZER_FILE
    # no checkpoint yet: start over, with a new tokenizer if its settings or the documents changed
    cfg = open_run(cfg, run_dir, [tok_path], ("tokenizer", "data.path", "data.val_fraction"))
    if _is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = load_tokenizer(tok_path) if tok_path.exists() else None
        corpus = None if tokenizer is None else PretrainingCorpus.cached(run_dir / DATA_DIR, files, tokenizer)
        if corpus is None:
            docs = read_documents(path)
            if tokenizer is None:
                train_docs, _ = holdout_documents(len(docs), cfg.data.val_fraction, path)
                if cfg.tokenizer.path:
                    tokenizer = load_tokenizer(cfg.tokenizer.path)
                else:
                    tokenizer = WordPieceTokenizer.train(
                        iter_training_text(docs, train_docs), cfg.tokenizer.vocab_size
                    )
                if not isinstance(tokenizer, WordPieceTokenizer):
                    raise ConfigError(
                        f"tokenizer.path={cfg.tokenizer.path} is a {type(tokenizer).__name__}; masked-LM "
                        "pretraining needs BERT's WordPiece"
                    )
                tokenizer.save(tok_path)
            PretrainingCorpus.from_documents(docs, tokenizer).save(run_dir / DATA_DIR, files, tokenizer)
    _barrier()
    tokenizer = load_tokenizer(tok_path)
    if not isinstance(tokenizer, WordPieceTokenizer):
        raise ConfigError(
            f"{tok_path} is a {type(tokenizer).__name__}; masked-LM pretraining needs BERT's WordPiece"
        )
    corpus = PretrainingCorpus.open(run_dir / DATA_DIR)
    model = cfg.model
    if model.vocab_size == 0:
        model = dataclasses.replace(model, vocab_size=tokenizer.vocab_size)
    elif model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"model.vocab_size={model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}"
        )
    if model.pad_token_id != tokenizer.pad_id:
        raise ConfigError(
            f"model.pad_token_id={model.pad_token_id} but the tokenizer's [PAD] is id {tokenizer.pad_id}; "
            f"set model.pad_token_id={tokenizer.pad_id}"
        )
    cfg = dataclasses.replace(cfg, model=model)
    if _is_main():
        save_config(cfg, run_dir / CONFIG_FILE)
    return cfg, tokenizer, corpus


def train_mlm_run(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) a masked-LM pretraining run; returns the final metrics record."""
    from lmlab.config import check_task
    from lmlab.data.pretraining import PretrainingBatches, SpecialIds
    from lmlab.runs import build_run_model
    from lmlab.tasks.mlm import MLMTask
    from lmlab.train import Trainer, resolve_device

    check_task(cfg)  # a RunConfig built by hand may skip build_config
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")) if ddp else None)
    cfg, tokenizer, corpus = prepare_mlm(cfg, run_dir)
    train_docs, val_docs = corpus.split(cfg.data.val_fraction, cfg.data.path or "the bundled text")
    data = PretrainingBatches(
        corpus,
        train_docs,
        val_docs,
        SpecialIds.of(tokenizer),
        max_len=_max_len(cfg),
        seed=cfg.train.seed,
        mask_prob=cfg.data.mask_prob,
        short_seq_prob=cfg.data.short_seq_prob,
        next_sentence=cfg.model.next_sentence,
    )
    torch.manual_seed(cfg.train.seed)
    model = build_run_model(cfg)
    task = MLMTask(data, device=device)
    trainer = Trainer(model, task, cfg.train, run_dir)
    return trainer.fit()


__all__ = ["prepare_mlm", "train_mlm_run"]
