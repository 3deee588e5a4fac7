"""Masked-LM (+ next-sentence) pretraining as a Trainer task (BERT, Devlin et al., 2019).

    loss = mean cross-entropy over the selected (masked) positions + mean next-sentence cross-entropy

The data (``lmlab.data.pretraining``): sentence pairs ``[CLS] A [SEP] B [SEP]`` with 15% of their
tokens selected (80% [MASK], 10% random, 10% unchanged), pairs and masks drawn afresh each epoch from
(seed, epoch). ``train.batch_size`` counts pairs; a step's pairs are sorted by length and split into
``grad_accum × world`` contiguous micro-batches, each padded to its own longest pair. The masked-LM
head runs only at the selected positions (``mlm_positions``). Without a next-sentence head (a
``BertForMaskedLM``: ``model.next_sentence`` false) the loss is the masked-LM term alone and the
pairs are always consecutive text.

Validation: pairs and masks of the held-out documents drawn once from a fixed seed. ``evaluate``
reports ``val_loss`` (the training objective), ``val_mlm_loss``, ``val_mlm_acc`` (top-1 accuracy at
the selected positions), and with the head ``val_nsp_loss`` and ``val_nsp_acc``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.data.pretraining import IGNORE_INDEX, MaskedBatch, PretrainingBatches
from lmlab.errors import ConfigError, DataError


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def has_nsp_head(model: nn.Module) -> bool:
    """True for a BERT with a next-sentence head (a BertForPreTraining)."""
    return getattr(_unwrap(model), "nsp", None) is not None


def forward_pretraining(model: nn.Module, batch: MaskedBatch) -> tuple[Tensor, Tensor, Tensor | None]:
    """(masked-LM logits (N, V) at the selected positions, their labels (N,), NSP logits (B, 2) or None).
    A batch without padding is run without an attention mask (the fused attention's fast path)."""
    selected = batch.labels != IGNORE_INDEX
    mask = None if bool(batch.attention_mask.all()) else batch.attention_mask
    out = model(batch.input_ids, mask, batch.token_type_ids, mlm_positions=selected)
    mlm_logits, nsp_logits = out if isinstance(out, tuple) else (out, None)
    return mlm_logits, batch.labels[selected], nsp_logits


class MLMTask:
    """BERT pretraining on ``PretrainingBatches`` (implements the Trainer's Task protocol)."""

    def __init__(
        self,
        data: PretrainingBatches,
        device: str | torch.device = "cpu",
        eval_batch_size: int = 64,
    ) -> None:
        self.data = data
        self.device = torch.device(device)
        self.eval_batch_size = eval_batch_size

    def batch(
        self, step: int, micro: int, n_micro: int, rank: int, world: int, batch_size: int
    ) -> MaskedBatch:
        """Micro-batch ``micro`` on ``rank`` of step ``step``: chunk ``micro * world + rank`` of the step's
        ``batch_size`` pairs (``PretrainingBatches.global_batch``, a pure function of seed and step),
        cut to its longest pair."""
        parts = n_micro * world
        if not (0 <= micro < n_micro and 0 <= rank < world):
            raise ValueError(f"micro={micro} / rank={rank} out of range for n_micro={n_micro}, world={world}")
        if batch_size < parts:
            raise ConfigError(
                f"train.batch_size={batch_size} pairs cannot be split over grad_accum x world = "
                f"{n_micro} x {world} micro-batches"
            )
        full = self.data.global_batch(step, batch_size)
        rows = np.array_split(np.arange(batch_size), parts)[micro * world + rank]
        return self._to_device(full.rows(torch.from_numpy(rows)))

    def _to_device(self, batch: MaskedBatch) -> MaskedBatch:
        if self.device.type == "cuda":
            return MaskedBatch(*(t.pin_memory().to(self.device, non_blocking=True) for t in batch))
        return MaskedBatch(*(t.to(self.device) for t in batch))

    def loss(self, model: nn.Module, batch: MaskedBatch) -> tuple[Tensor, Tensor]:
        """Masked-LM cross-entropy (mean over the selected positions) + next-sentence cross-entropy
        (mean over the pairs; without the head, none), and the number of real (non-padding) tokens."""
        logits, labels, nsp_logits = forward_pretraining(model, batch)
        loss = F.cross_entropy(logits.float(), labels)
        if nsp_logits is not None:
            loss = loss + F.cross_entropy(nsp_logits.float(), batch.next_sentence_label)
        return loss, batch.attention_mask.sum()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, Any]:
        """``val_loss``, ``val_mlm_loss``, ``val_mlm_acc`` (and ``val_nsp_loss``, ``val_nsp_acc``) over
        the fixed validation pairs; ``max_batches > 0`` stops after that many batches."""
        out = evaluate_pretraining(model, self.data, self.eval_batch_size, self.device, max_batches)
        return {f"val_{k}": v for k, v in out.items() if k not in ("pairs", "masked_tokens")}


@torch.no_grad()
def evaluate_pretraining(
    model: nn.Module,
    data: PretrainingBatches,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    max_batches: int = 0,
) -> dict[str, Any]:
    """Masked-LM and next-sentence metrics of ``model`` on ``data``'s fixed validation pairs:
    ``loss`` (mlm_loss + nsp_loss), ``mlm_loss`` (cross-entropy per selected token), ``mlm_acc``,
    ``nsp_loss`` / ``nsp_acc`` (a model with the next-sentence head only), ``pairs``, ``masked_tokens``.
    The model is put in eval mode and its previous mode restored."""
    device = torch.device(device) if device is not None else _model_device(model)
    nsp = has_nsp_head(model)
    was_training = model.training
    model.eval()
    mlm_sum, mlm_correct, n_masked = 0.0, 0, 0
    nsp_sum, nsp_correct, n_pairs = 0.0, 0, 0
    try:
        for k, batch in enumerate(data.val_batches(batch_size)):
            if max_batches and k >= max_batches:
                break
            batch = MaskedBatch(*(t.to(device) for t in batch))
            logits, labels, nsp_logits = forward_pretraining(model, batch)
            logits = logits.float()
            mlm_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            mlm_correct += int((logits.argmax(-1) == labels).sum())
            n_masked += labels.numel()
            n_pairs += len(batch.next_sentence_label)
            if nsp and nsp_logits is not None:
                nsp_logits = nsp_logits.float()
                nsp_sum += F.cross_entropy(nsp_logits, batch.next_sentence_label, reduction="sum").item()
                nsp_correct += int((nsp_logits.argmax(-1) == batch.next_sentence_label).sum())
    finally:
        model.train(was_training)
    nan = float("nan")
    mlm_loss = mlm_sum / n_masked if n_masked else nan
    mlm_acc = mlm_correct / n_masked if n_masked else nan
    out: dict[str, Any] = {"loss": mlm_loss, "mlm_loss": mlm_loss, "mlm_acc": mlm_acc}
    try:
        out["mlm_ppl"] = math.exp(mlm_loss)
    except OverflowError:
        out["mlm_ppl"] = float("inf")
    if nsp:
        out["nsp_loss"] = nsp_sum / n_pairs if n_pairs else nan
        out["nsp_acc"] = nsp_correct / n_pairs if n_pairs else nan
        out["loss"] = mlm_loss + out["nsp_loss"]
    out["pairs"] = n_pairs
    out["masked_tokens"] = n_masked
    return out


def evaluate_pipeline(pipeline: Any, data: str | Path | None = None, batch_size: int = 64) -> dict[str, Any]:
    """``lmlab eval`` / ``Pipeline.evaluate`` of a BERT masked LM: the metrics of
    ``evaluate_pretraining`` on the run's validation documents, or on every document of ``data``
    (a text file or a folder of .txt / .txt.gz files), with the fixed validation pairs and masks."""
    from lmlab.data.pretraining import PretrainingCorpus, SpecialIds, list_corpus_files, read_documents
    from lmlab.models.bert import BertForMaskedLM, BertForPreTraining

    model, cfg = pipeline.model, pipeline.config
    if not isinstance(_unwrap(model), (BertForMaskedLM, BertForPreTraining)):
        raise ConfigError(
            f"masked-LM evaluation needs a BERT with its masked-LM head, not a {type(model).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    tokenizer = pipeline.tokenizer
    special = SpecialIds.of(tokenizer)
    max_len = min(cfg.data.block_size or model.config.block_size, model.config.block_size)
    if data is None:
        run_dir = pipeline.path
        cache = None if run_dir is None else Path(run_dir) / "data"
        if pipeline.checkpoint is None and run_dir is not None and (Path(run_dir) / "config.json").is_file():
            raise DataError(
                f"{run_dir} is a Hugging Face model directory, which holds no run data: pass the text to "
                "evaluate on with data=FILE (--data FILE)"
            )
        if cache is None or not (cache / "meta.json").is_file():
            raise DataError(
                f"the run's pretraining cache ({cache}) is missing: pass data=FILE (--data FILE)"
            )
        corpus = PretrainingCorpus.open(cache)
        _, val_docs = corpus.split(cfg.data.val_fraction, run_dir)
    else:
        list_corpus_files(data)  # a clear error for a missing or empty path
        corpus = PretrainingCorpus.from_documents(read_documents(data), tokenizer)
        if corpus.n_documents == 0:
            raise DataError(f"{data} gives no tokens")
        val_docs = np.arange(corpus.n_documents)
    batches = PretrainingBatches(
        corpus,
        train_docs=np.zeros(0, dtype=np.int64),
        val_docs=val_docs,
        special=special,
        max_len=max_len,
        seed=0,
        mask_prob=cfg.data.mask_prob,
        short_seq_prob=cfg.data.short_seq_prob,
        next_sentence=has_nsp_head(model),
    )
    return evaluate_pretraining(model, batches, batch_size, pipeline.device)


__all__ = ["MLMTask", "evaluate_pipeline", "evaluate_pretraining", "forward_pretraining", "has_nsp_head"]
