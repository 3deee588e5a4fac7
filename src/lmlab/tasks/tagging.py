"""Fine-tuning an encoder to tag words (named entities: WNUT-17, your own CoNLL files).

Batches as for classification (``tasks/classification.py``): length-bucketed, dynamically padded,
a pure function of the step. Each word's tag sits on its first sub-token; every other position
(later sub-tokens, [CLS], [SEP], padding) carries IGNORE and counts for nothing in the loss, the
mean cross-entropy over the micro-batch's tagged words.

Evaluation predicts a tag per word (from its first sub-token; a word the tokenizer cut off or
dropped is predicted ``O``) and scores entities as seqeval does by default (``metrics.entity_f1``):
``val_precision``, ``val_recall``, ``val_f1``, plus ``val_loss`` and the word-level ``val_accuracy``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.data.labeled import IGNORE, Encoded, collate, eval_batches
from lmlab.tasks.classification import LabeledTask, _model_device, model_inputs, to_device


def predict_word_tags(
    model: nn.Module, enc: Encoded, outside: int = 0, max_tokens: int = 8192
) -> tuple[list[list[int]], float]:
    """(per sentence, the predicted tag index of each word; mean cross-entropy per tagged word) of a
    token classifier over encoded sentences, in length-sorted batches, without gradients. A word with
    no position (cut off, or no sub-token) gets tag ``outside`` (the index of ``O``)."""
    device = _model_device(model)
    preds: list[list[int]] = [[] for _ in range(len(enc))]
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in eval_batches(enc.lengths, max_tokens):
            b = to_device(collate(enc, idx), device)
            logits = model(**model_inputs(b)).float()
            labels = b["labels"]
            total += F.cross_entropy(
                logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
            ).item()
            count += int((labels != IGNORE).sum())
            best = logits.argmax(-1).cpu()
            for row, i in enumerate(idx.tolist()):
                pos = torch.from_numpy(enc.words_of(i))
                tags = torch.where(pos >= 0, best[row, pos.clamp(min=0)], outside)
                preds[i] = tags.tolist()
    return preds, total / max(count, 1)


def tagging_metrics(
    model: nn.Module, enc: Encoded, gold: list[list[str]], labels: list[str], max_tokens: int = 8192
) -> dict[str, float]:
    """Entity-level ``precision``, ``recall``, ``f1`` (seqeval's default mode), word ``accuracy``,
    ``loss`` and the counts of ``sentences`` and entities of a tagger against the ``gold`` tags."""
    from lmlab.metrics import entity_f1

    outside = labels.index("O") if "O" in labels else 0
    pred_ids, loss = predict_word_tags(model, enc, outside, max_tokens)
    pred = [[labels[k] for k in sentence] for sentence in pred_ids]
    scores = entity_f1(gold, pred)
    words = sum(len(s) for s in gold)
    right = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    return {
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "accuracy": right / words if words else float("nan"),
        "loss": loss,
        "sentences": len(gold),
        "entities": scores["true_entities"],
        "predicted_entities": scores["pred_entities"],
    }


class TaggingTask(LabeledTask):
    """Token tagging with a ``BertForTokenClassification`` (implements the Trainer's Task protocol).
    ``val_tags``: the validation sentences' gold tags (as strings, whole: words cut off by the
    tokenizer still count, as missed entities)."""

    def __init__(
        self, train: Encoded, val: Encoded, labels: list[str], val_tags: list[list[str]], **kwargs: Any
    ) -> None:
        super().__init__(train, val, labels, **kwargs)
        self.val_tags = val_tags

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, int]:
        logits = model(**model_inputs(batch))
        labels = batch["labels"].flatten()
        total = F.cross_entropy(logits.flatten(0, 1).float(), labels, ignore_index=IGNORE, reduction="sum")
        return total / (labels != IGNORE).sum().clamp(min=1), batch["n_tokens"]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, Any]:
        """``val_loss``, ``val_precision``, ``val_recall``, ``val_f1`` (entities) and ``val_accuracy``
        (words) over the whole validation split (``max_batches`` is ignored)."""
        was_training = model.training
        model.eval()
        try:
            m = tagging_metrics(model, self.val, self.val_tags, self.labels, self.eval_max_tokens)
        finally:
            model.train(was_training)
        return {f"val_{k}": v for k, v in m.items() if k in ("loss", "precision", "recall", "f1", "accuracy")}


__all__ = ["TaggingTask", "predict_word_tags", "tagging_metrics"]
