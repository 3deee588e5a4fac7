"""``lmlab.load(path)``: a trained run (or one of its checkpoints) ready to generate and evaluate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmlab.checkpoint import latest_checkpoint, load_model_weights
from lmlab.config import RunConfig
from lmlab.errors import CheckpointError
from lmlab.models import build_model
from lmlab.runs import CONFIG_FILE, TOKENIZER_FILE, read_run_config
from lmlab.tokenizers import load_tokenizer


class Pipeline:
    """A model, its tokenizer and its config.

    ``model`` maps token ids (B, T) to logits (B, T, V); ``tokenizer`` has ``encode``/``decode``.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, config: RunConfig, path: Path | None = None) -> None:
        self.model, self.tokenizer, self.config, self.path = model, tokenizer, config, path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: list[str] | None = None,
        stream: Callable[[str], None] | None = None,
    ) -> str:
        """The continuation of ``prompt`` (without the prompt). temperature=0 is greedy decoding."""
        from lmlab.generate import generate_text

        return generate_text(
            self.model,
            self.tokenizer,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop=stop,
            stream=stream,
        )

    def evaluate(self, data: str | None = None, batch_size: int = 64) -> dict[str, float]:
        """Mean next-token loss and perplexity over non-overlapping windows of the validation split
        of the run's data, or of the whole of ``data`` (a text file or folder) if given."""
        import numpy as np

        from lmlab.data import TokenData, iter_text
        from lmlab.tasks import evaluate_lm

        block = self.config.data.block_size or self.config.model.block_size
        if data is None:
            if self.path is None or not (self.path / "data").exists():
                raise CheckpointError("this model has no run data to evaluate on; pass data=FILE")
            arr = TokenData.open(self.path / "data", val_fraction=self.config.data.val_fraction).val
        else:
            ids: list[int] = []
            for chunk in iter_text(data):
                ids.extend(self.tokenizer.encode(chunk))
            arr = np.asarray(ids, dtype=np.int64)
        return evaluate_lm(self.model, arr, block, batch_size=batch_size, device=self.device)


def find_run_dir(path: Path) -> tuple[Path, Path | None]:
    """(run directory, checkpoint directory or None for 'the newest') for a run or checkpoint path."""
    if (path / CONFIG_FILE).exists():
        return path, None
    if (path / "model.safetensors").exists() and (path.parent.parent / CONFIG_FILE).exists():
        return path.parent.parent, path
    raise CheckpointError(f"{path} is not an lmlab run directory or checkpoint (no {CONFIG_FILE} found)")


def load(path: str | Path, device: str | torch.device = "cpu") -> Pipeline:
    """Load a run directory (its newest complete checkpoint) or one checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such run directory: {path}")
    run_dir, ckpt = find_run_dir(path)
    cfg = read_run_config(run_dir)
    if ckpt is None:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise CheckpointError(f"{run_dir} holds no checkpoint yet (train it first)")
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    model = build_model(cfg.family, cfg.model)
    load_model_weights(ckpt, model)
    model.to(device).eval()
    return Pipeline(model, tokenizer, cfg, run_dir)
