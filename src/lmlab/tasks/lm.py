"""Language modelling as a Trainer task: random windows of the token stream, next-token
cross-entropy, and an exact validation loss over every validation token."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.data.text import TokenData, gather_blocks, iter_eval_batches
from lmlab.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of (B, T, V) logits vs (B, T) targets, computed in float32."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction
    )


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    arr: np.ndarray,
    block_size: int,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    max_batches: int = 0,
) -> dict[str, float]:
    """Mean per-token loss over all of ``arr`` in non-overlapping windows (exact and deterministic).

    Returns ``{"loss", "perplexity", "tokens"}``. ``max_batches > 0`` stops after that many batches.
    The model is put in eval mode and its previous mode restored.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for k, (x, y) in enumerate(iter_eval_batches(arr, block_size, batch_size)):
            if max_batches and k >= max_batches:
                break
            x, y = _to_device(x, device), _to_device(y, device)
            total += lm_loss(model(x), y, reduction="sum").item()
            tokens += y.numel()
    finally:
        model.train(was_training)
    loss = total / tokens if tokens else float("nan")
    return {"loss": loss, "perplexity": _exp(loss), "tokens": tokens}


class LMTask:
    """Next-token prediction on a ``TokenData`` (implements the Trainer's Task protocol)."""

    def __init__(
        self,
        data: TokenData,
        block_size: int,
        seed: int,
        device: str | torch.device = "cpu",
        eval_batch_size: int = 64,
    ):
        data.check_block_size(block_size)
        self.data = data
        self.block_size = block_size
        self.seed = seed
        self.device = torch.device(device)
        self.eval_batch_size = eval_batch_size

    def batch(self, step: int, micro: int, n_micro: int, rank: int, world: int, batch_size: int) -> Batch:
        """Micro-batch ``micro`` of ``n_micro`` on ``rank`` of ``world`` for optimizer step ``step``.

        The global batch of ``batch_size`` windows depends only on (seed, step); it is split into
        ``n_micro * world`` contiguous chunks and this call returns chunk ``micro * world + rank``.
        """
        parts = n_micro * world
        if batch_size % parts:
            raise ConfigError(
                f"train.batch_size={batch_size} must be divisible by grad_accum x world_size = "
                f"{n_micro} x {world} = {parts}"
            )
        if not (0 <= micro < n_micro and 0 <= rank < world):
            raise ValueError(f"micro={micro} / rank={rank} out of range for n_micro={n_micro}, world={world}")
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % (1 << 63))
        starts = torch.randint(len(self.data.train) - self.block_size, (batch_size,), generator=g)
        size = batch_size // parts
        lo = (micro * world + rank) * size
        x, y = gather_blocks(self.data.train, starts[lo : lo + size].numpy(), self.block_size)
        return _to_device(x, self.device), _to_device(y, self.device)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy over the micro-batch, and its number of tokens."""
        x, y = batch
        return lm_loss(model(x), y), y.numel()

    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, Any]:
        """``val_loss`` (mean per-token loss over the whole validation split) and ``val_ppl``."""
        out = evaluate_lm(
            model, self.data.val, self.block_size, self.eval_batch_size, self.device, max_batches
        )
        return {"val_loss": out["loss"], "val_ppl": out["perplexity"]}
