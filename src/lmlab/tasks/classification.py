"""Fine-tuning an encoder to classify a sentence or a sentence pair (SST-2, RTE, MRPC, your own TSV).

The Trainer's Task protocol (docs/architecture.md) over encoded examples (``lmlab.data.labeled``):
``train.batch_size`` is a number of sequences. Each epoch's batches come from ``epoch_batches``
(shuffled with (seed, epoch), length-sorted within pools, batches shuffled), so ``batch(step, ...)``
is a pure function of the step and a resumed run draws the same batches; a step's batch (in length
order) is split into ``grad_accum x world`` contiguous micro-batches, each padded only to its own
longest sequence. The loss is the mean cross-entropy over the micro-batch's examples.

Evaluation reports ``val_loss``, ``val_accuracy`` and, where the dataset has a positive class (MRPC),
that class's ``val_f1`` / ``val_precision`` / ``val_recall``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.data.labeled import Encoded, collate, epoch_batches, eval_batches
from lmlab.errors import ConfigError


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The tensors of a collated batch on ``device`` (pinned first on CUDA)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, Tensor):
            if device.type == "cuda":
                v = v.pin_memory().to(device, non_blocking=True)
            elif v.device != device:
                v = v.to(device)
        out[k] = v
    return out


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


class LabeledTask:
    """What classification and tagging share: bucketed batches, the micro-batch split, evaluation batches."""

    def __init__(
        self,
        train: Encoded,
        val: Encoded,
        labels: list[str],
        seed: int = 0,
        device: str | torch.device = "cpu",
        eval_max_tokens: int = 8192,
    ) -> None:
        if len(train) == 0 or len(val) == 0:
            raise ConfigError(
                f"fine-tuning needs training and validation examples (got {len(train)} and {len(val)})"
            )
        self.train, self.val, self.labels = train, val, list(labels)
        self.seed = seed
        self.device = torch.device(device)
        self.eval_max_tokens = eval_max_tokens
        self._train_lengths = train.lengths
        self._epoch: tuple[tuple[int, int], list[np.ndarray]] | None = None

    def epoch(self, epoch: int, batch_size: int) -> list[np.ndarray]:
        """The batches of ``epoch`` (cached: consecutive steps share an epoch)."""
        key = (epoch, batch_size)
        if self._epoch is None or self._epoch[0] != key:
            self._epoch = (key, epoch_batches(self._train_lengths, batch_size, self.seed, epoch))
        return self._epoch[1]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches an epoch: ``max(1, n // batch_size)`` (one batch of all n when n < batch_size)."""
        n = len(self.train)
        return max(1, n // min(batch_size, n))

    def batch(
        self, step: int, micro: int, n_micro: int, rank: int, world: int, batch_size: int
    ) -> dict[str, Any]:
        """Micro-batch ``micro`` on ``rank`` of step ``step``: step s is batch s % n of epoch s // n
        (n batches an epoch), split into ``n_micro * world`` contiguous chunks; this is chunk
        ``micro * world + rank``."""
        parts = n_micro * world
        if not (0 <= micro < n_micro and 0 <= rank < world):
            raise ValueError(f"micro={micro} / rank={rank} out of range for n_micro={n_micro}, world={world}")
        n = self.steps_per_epoch(batch_size)
        batch = self.epoch(step // n, batch_size)[step % n]
        if len(batch) < parts:
            raise ConfigError(
                f"a batch of {len(batch)} examples cannot be split over grad_accum x world = {n_micro} x "
                f"{world} micro-batches (there are only {len(self.train)} training examples)"
            )
        chunk = np.array_split(batch, parts)[micro * world + rank]
        return to_device(collate(self.train, chunk), self.device)

    def val_batches(self) -> list[np.ndarray]:
        return eval_batches(self.val.lengths, self.eval_max_tokens)


def predict_logits(model: nn.Module, enc: Encoded, max_tokens: int = 8192) -> tuple[Tensor, float]:
    """(logits (N, C) float32 on the CPU in the examples' order, mean cross-entropy) of a sequence
    classifier over ``enc``, in length-sorted batches, without gradients."""
    device = _model_device(model)
    out = torch.empty(len(enc), 0)
    total = 0.0
    with torch.no_grad():
        for idx in eval_batches(enc.lengths, max_tokens):
            b = to_device(collate(enc, idx), device)
            logits = model(**model_inputs(b)).float()
            total += F.cross_entropy(logits, b["labels"], reduction="sum").item()
            if out.size(1) == 0:
                out = torch.empty(len(enc), logits.size(-1))
            out[torch.from_numpy(idx)] = logits.cpu()
    return out, total / max(len(enc), 1)


def classification_metrics(
    model: nn.Module, enc: Encoded, positive: int | None = None, max_tokens: int = 8192
) -> dict[str, float]:
    """``loss``, ``accuracy`` (and with a ``positive`` class index: its ``precision``, ``recall``,
    ``f1``) and the number of ``examples`` of a classifier on encoded examples."""
    from lmlab.metrics import classification_scores

    logits, loss = predict_logits(model, enc, max_tokens)
    pred = logits.argmax(-1).tolist()
    out = {"loss": loss, **classification_scores(enc.labels.tolist(), pred, positive)}
    out["examples"] = len(enc)
    return out


class ClassificationTask(LabeledTask):
    """Sentence (or sentence-pair) classification with a ``BertForSequenceClassification``
    (implements the Trainer's Task protocol). ``positive``: the index of the class whose F1 is
    reported (MRPC), or None."""

    def __init__(
        self, train: Encoded, val: Encoded, labels: list[str], positive: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(train, val, labels, **kwargs)
        self.positive = positive

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, int]:
        logits = model(**model_inputs(batch))
        return F.cross_entropy(logits.float(), batch["labels"]), batch["n_tokens"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, Any]:
        """``val_loss``, ``val_accuracy`` (and ``val_f1``, ``val_precision``, ``val_recall`` of the
        positive class) over the validation split; ``max_batches`` is ignored (the whole split is
        scored, so the figures are comparable across evaluations). Restores the model's mode."""
        was_training = model.training
        model.eval()
        try:
            m = classification_metrics(model, self.val, self.positive, self.eval_max_tokens)
        finally:
            model.train(was_training)
        return {f"val_{k}": v for k, v in m.items() if k != "examples"}


__all__ = ["ClassificationTask", "LabeledTask", "classification_metrics", "predict_logits"]
