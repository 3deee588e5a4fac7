"""Translation as a Trainer task: token-budget batches of sentence pairs, label-smoothed
cross-entropy (Szegedy et al., 2016; ε = 0.1 in Vaswani et al., 2017), validation loss per target
token and, optionally, BLEU / chrF of greedy translations of the first validation sentences.

Batch size is counted in tokens: for this task the Trainer's ``batch_size`` (``train.batch_size``)
is the token budget of one optimizer step, ``max(source, target tokens) × sentences`` summed over
its length-sorted bucket (fairseq's ``--max-tokens``). The buckets are built once from the seed;
each epoch visits all of them in an order drawn from (seed, epoch), so ``batch(step, ...)`` is a pure
function of the step. A step's bucket is split into ``grad_accum × world`` contiguous micro-batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.data.parallel import SpecialIds, TokenPairs, TranslationBatch, collate, token_budget_batches
from lmlab.errors import ConfigError


def _token_losses(
    logits: Tensor, target: Tensor, eps: float, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token (smoothed loss, nll) over (N,) flattened positions, and the (N,) mask of counted ones."""
    lprobs = F.log_softmax(logits.float().reshape(-1, logits.size(-1)), dim=-1)  # (B, T, V) -> (B·T, V)
    target = target.reshape(-1)
    mask = target != ignore_index
    nll = -lprobs.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # -log p(y)
    smooth = -lprobs.mean(dim=-1)  # cross-entropy with the uniform distribution
    loss = (1.0 - eps) * nll + eps * smooth
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return torch.where(mask, loss, zero), torch.where(mask, nll, zero), mask


def label_smoothed_nll(
    logits: Tensor,
    target: Tensor,
    eps: float = 0.1,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy against the smoothed target distribution q = (1 - ε)·onehot(y) + ε/V:

        loss = (1 - ε)·(-log p_y) + ε · mean_v(-log p_v)

    the definition of ``F.cross_entropy(..., label_smoothing=ε)``. logits (..., V), target (...);
    positions where target == ``ignore_index`` count for nothing. ``reduction``: mean (over counted
    positions), sum, or none (per position, 0 where ignored). Computed in float32.
    """
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1], got {eps}")
    loss, _, mask = _token_losses(logits, target, eps, ignore_index)
    if reduction == "none":
        return loss.view(target.shape)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / mask.sum().clamp(min=1)
    raise ValueError(f"unknown reduction '{reduction}'; valid: mean, sum, none")


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class TranslationTask:
    """Sentence-pair translation (implements the Trainer's Task protocol).

    ``train`` / ``val``: encoded pairs; ``src_special`` / ``tgt_special``: their padding/BOS/EOS ids
    (the same for a joint vocabulary). ``eval_max_tokens``: token budget of validation batches.
    ``max_sentences > 0`` caps the sentences of a training bucket; a bucket with fewer than
    ``min_sentences`` (the longest pairs, or the tail of the length order) is merged into its
    neighbour, so a step can be split over up to ``min_sentences`` micro-batches × processes.
    ``bleu_sentences > 0`` with ``tgt_decode`` (ids -> text, e.g. ``tokenizer.decode``) also greedily
    translates that many validation sentences and reports ``val_bleu`` / ``val_chrf`` against
    ``val_refs`` (the reference texts; by default the decoded validation targets).
    """

    def __init__(
        self,
        train: TokenPairs,
        val: TokenPairs,
        src_special: SpecialIds,
        tgt_special: SpecialIds | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        label_smoothing: float = 0.1,
        eval_max_tokens: int = 4096,
        max_sentences: int = 0,
        min_sentences: int = 8,
        bleu_sentences: int = 0,
        tgt_decode: Callable[[list[int]], str] | None = None,
        val_refs: Sequence[str] | None = None,
        bleu_tokenize: str | None = None,
    ) -> None:
        if len(train) == 0 or len(val) == 0:
            raise ConfigError(
                f"translation needs training and validation pairs (got {len(train)} and {len(val)})"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.train, self.val = train, val
        self.src_special = src_special
        self.tgt_special = tgt_special or src_special
        self.seed = seed
        self.device = torch.device(device)
        self.label_smoothing = label_smoothing
        self.eval_max_tokens = eval_max_tokens
        self.max_sentences = max_sentences
        self.min_sentences = max(1, min_sentences)
        self.bleu_sentences = bleu_sentences
        self.tgt_decode = tgt_decode
        self.val_refs = list(val_refs) if val_refs is not None else None
        self.bleu_tokenize = bleu_tokenize
        self._buckets: dict[int, list[np.ndarray]] = {}
        self._epoch_order: tuple[tuple[int, int], np.ndarray] | None = None

    # -- batches -----------------------------------------------------------------------------------

    def buckets(self, max_tokens: int) -> list[np.ndarray]:
        """The training buckets for a token budget (pair indices, in length order); they do not
        depend on how a step is split, so every split of a step sees the same sentences."""
        if max_tokens not in self._buckets:
            batches = token_budget_batches(
                self.train.src_lens, self.train.tgt_lens, max_tokens, self.seed, self.max_sentences
            )
            merged: list[np.ndarray] = []
            for b in batches:
                if merged and (len(b) < self.min_sentences or len(merged[-1]) < self.min_sentences):
                    merged[-1] = np.concatenate([merged[-1], b])
                else:
                    merged.append(b)
            self._buckets[max_tokens] = merged
        return self._buckets[max_tokens]

    def epoch_order(self, epoch: int, max_tokens: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the buckets: a permutation drawn from (seed, epoch)."""
        key = (epoch, max_tokens)
        if self._epoch_order is None or self._epoch_order[0] != key:
            n = len(self.buckets(max_tokens))
            self._epoch_order = (key, np.random.default_rng([self.seed, epoch]).permutation(n))
        return self._epoch_order[1]

    def batch(
        self, step: int, micro: int, n_micro: int, rank: int, world: int, batch_size: int
    ) -> TranslationBatch:
        """Micro-batch ``micro`` on ``rank`` of step ``step``; ``batch_size`` is the step's token budget.

        Step s uses bucket ``epoch_order(s // n_buckets)[s % n_buckets]``; it is split into
        ``n_micro * world`` contiguous chunks and this call returns chunk ``micro * world + rank``.
        """
        parts = n_micro * world
        if not (0 <= micro < n_micro and 0 <= rank < world):
            raise ValueError(f"micro={micro} / rank={rank} out of range for n_micro={n_micro}, world={world}")
        buckets = self.buckets(batch_size)
        epoch, k = divmod(step, len(buckets))
        bucket = buckets[self.epoch_order(epoch, batch_size)[k]]
        if len(bucket) < parts:
            raise ConfigError(
                f"a step's bucket of {len(bucket)} sentences cannot be split over grad_accum x world = "
                f"{n_micro} x {world} micro-batches; raise min_sentences (now {self.min_sentences}) "
                "or the token budget (train.batch_size)"
            )
        chunk = np.array_split(bucket, parts)[micro * world + rank]
        return self._to_device(collate(self.train, chunk, self.src_special, self.tgt_special))

    def _to_device(self, batch: TranslationBatch) -> TranslationBatch:
        if self.device.type == "cuda":
            return TranslationBatch(*(t.pin_memory().to(self.device, non_blocking=True) for t in batch))
        return TranslationBatch(*(t.to(self.device) for t in batch))

    # -- loss and evaluation -----------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: TranslationBatch) -> tuple[Tensor, Tensor]:
        """Mean label-smoothed cross-entropy per target token, and the number of target tokens.

        The target padding mask is not passed to the model: with causal self-attention no real
        position sees a later (padded) one, and padded positions are left out of the loss.
        """
        logits = model(batch.src, batch.tgt_in, batch.src_padding_mask)
        loss = label_smoothed_nll(logits, batch.tgt_out, self.label_smoothing, self.tgt_special.pad)
        return loss, (~batch.tgt_padding_mask).sum()

    def val_batches(self) -> list[np.ndarray]:
        """Validation batches: token-budget buckets in length order (deterministic)."""
        return token_budget_batches(self.val.src_lens, self.val.tgt_lens, self.eval_max_tokens)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, Any]:
        """``val_loss``: label-smoothed loss per target token (the training objective, so it plots
        against the training loss); ``val_nll`` / ``val_ppl``: plain cross-entropy per target token
        and its exponential; with ``bleu_sentences``, ``val_bleu`` and ``val_chrf``.

        ``max_batches > 0`` stops after that many batches. Puts the model in eval mode and restores it.
        """
        was_training = model.training
        model.eval()
        total, total_nll, tokens = 0.0, 0.0, 0
        try:
            for k, idx in enumerate(self.val_batches()):
                if max_batches and k >= max_batches:
                    break
                b = self._to_device(collate(self.val, idx, self.src_special, self.tgt_special))
                logits = model(b.src, b.tgt_in, b.src_padding_mask)
                loss, nll, mask = _token_losses(logits, b.tgt_out, self.label_smoothing, self.tgt_special.pad)
                total += loss.sum().item()
                total_nll += nll.sum().item()
                tokens += int(mask.sum())
            out: dict[str, Any] = {
                "val_loss": total / tokens if tokens else float("nan"),
                "val_nll": total_nll / tokens if tokens else float("nan"),
            }
            try:
                out["val_ppl"] = math.exp(out["val_nll"])
            except OverflowError:
                out["val_ppl"] = float("inf")
            if self.bleu_sentences > 0 and self.tgt_decode is not None:
                out.update(self.evaluate_bleu(model, self.bleu_sentences))
        finally:
            model.train(was_training)
        return out

    def translate_val(self, model: nn.Module, n: int, batch_sentences: int = 64) -> list[list[int]]:
        """Greedy translations (target ids) of the first ``n`` validation sources."""
        from lmlab.generate import greedy_decode

        n = min(n, len(self.val))
        device = _model_device(model)
        hyps: list[list[int]] = []
        for lo in range(0, n, batch_sentences):
            b = collate(self.val, range(lo, min(n, lo + batch_sentences)), self.src_special, self.tgt_special)
            max_len = min(int(b.src.size(1)) + 50, int(getattr(model.config, "block_size", 1 << 30)))
            hyps += greedy_decode(
                model,
                b.src.to(device),
                b.src_padding_mask.to(device),
                bos_id=self.tgt_special.bos,
                eos_id=self.tgt_special.eos,
                max_len=max_len,
            )
        return hyps

    def evaluate_bleu(self, model: nn.Module, n: int) -> dict[str, float]:
        """``val_bleu`` and ``val_chrf`` of greedy translations of the first ``n`` validation pairs."""
        from lmlab.metrics import bleu

        if self.tgt_decode is None:
            raise ConfigError("BLEU needs tgt_decode (the target tokenizer's decode)")
        hyp_ids = self.translate_val(model, n)
        hyps = [self.tgt_decode(h) for h in hyp_ids]
        refs = (self.val_refs or [self.tgt_decode(self.val.tgt(i).tolist()) for i in range(len(self.val))])
        scores = bleu(hyps, refs[: len(hyps)], tokenize=self.bleu_tokenize)
        return {"val_bleu": scores["bleu"], "val_chrf": scores["chrf"]}


__all__ = ["TranslationTask", "label_smoothed_nll"]
