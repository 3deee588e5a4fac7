"""A run: config + tokenizer + data + model + Trainer, all kept in one run directory.

``train_run(cfg, run_dir)`` builds (or resumes) everything and trains. Re-running it on a run
directory that holds a checkpoint continues that run exactly; the model, tokenizer and data
sections must then match the saved config (train settings such as max_steps may change).
"""

from __future__ import annotations

import dataclasses
import os
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
    path = Path(run_dir) / CONFIG_FILE
    with open(path) as f:
        return build_config(yaml.safe_load(f) or {})


def _check_same_run(saved: RunConfig, new: RunConfig, run_dir: Path) -> None:
    for section in ("model", "tokenizer", "data"):
        a, b = dataclasses.asdict(getattr(saved, section)), dataclasses.asdict(getattr(new, section))
        for key in a:
            if key == "vocab_size" and b[key] == 0:
                continue
            if a[key] != b[key]:
                raise ConfigError(
                    f"{run_dir} holds a run with {section}.{key}={a[key]!r} but this config has {b[key]!r}; "
                    "use a new --out directory, or the same settings to resume"
                )
    if saved.family != new.family:
        raise ConfigError(f"{run_dir} holds a '{saved.family}' run, not '{new.family}'")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        dist.barrier()


def prepare(cfg: RunConfig, run_dir: str | Path) -> tuple[RunConfig, Any, TokenData]:
    """Tokenizer and token data for ``cfg`` in ``run_dir`` (trained / built once, then reused)."""
    run_dir = Path(run_dir)
    resuming = bool(list_checkpoints(run_dir)) if run_dir.exists() else False
    if resuming and (run_dir / CONFIG_FILE).exists():
        saved = read_run_config(run_dir)
        _check_same_run(saved, cfg, run_dir)
        cfg = dataclasses.replace(saved, train=cfg.train, description=cfg.description or saved.description)
    tok_path = run_dir / TOKENIZER_FILE
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
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")
    if _is_main():
        save_config(cfg, run_dir / CONFIG_FILE)
    return cfg, tokenizer, data


def train_run(cfg: RunConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) the run described by ``cfg`` in ``run_dir``; returns the final metrics."""
    from lmlab.tasks import LMTask
    from lmlab.train import Trainer, resolve_device

    if cfg.task != "lm":
        raise ConfigError(f"unknown task '{cfg.task}'; valid: lm")
    cfg, tokenizer, data = prepare(cfg, run_dir)
    block = cfg.data.block_size or cfg.model.block_size
    if block > cfg.model.block_size:
        raise ConfigError(f"data.block_size={block} exceeds model.block_size={cfg.model.block_size}")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.family, cfg.model)
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")) if ddp else None)
    task = LMTask(data, block_size=block, seed=cfg.train.seed, device=device)
    trainer = Trainer(model, task, cfg.train, run_dir)
    return trainer.fit()
