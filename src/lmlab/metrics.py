"""Translation quality: corpus BLEU (Papineni et al., 2002) and chrF (Popović, 2015) with sacrebleu.

sacrebleu scores *detokenised* text with its own standard tokenisation, so numbers are comparable
across papers; the signature (``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:...``) says
exactly how a score was computed and should be reported with it. Use ``tokenize="zh"`` for Chinese
targets (and ``"ja-mecab"`` etc. for other languages without spaces).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmlab.errors import DataError


def _reference_streams(refs: Sequence[str] | Sequence[Sequence[str]], n: int) -> list[list[str]]:
    """One reference per hypothesis (a list of str), or several streams of ``n`` references each."""
    if len(refs) == 0:
        raise DataError("no references")
    streams = [list(refs)] if isinstance(refs[0], str) else [list(s) for s in refs]  # type: ignore[arg-type]
    for k, stream in enumerate(streams):
        if len(stream) != n:
            raise DataError(f"{n} hypotheses but reference stream {k} has {len(stream)} sentences")
        if not all(isinstance(r, str) for r in stream):
            raise DataError("references must be strings")
    return streams


def bleu(
    hyps: Sequence[str],
    refs: Sequence[str] | Sequence[Sequence[str]],
    tokenize: str | None = None,
    lowercase: bool = False,
) -> dict[str, Any]:
    """Corpus BLEU and chrF of ``hyps`` against ``refs``.

    ``refs``: one reference string per hypothesis, or a list of reference streams (each with one
    string per hypothesis) for multiple references. ``tokenize``: sacrebleu's tokenizer for BLEU
    (default ``13a``; ``zh`` for Chinese). Returns ``{"bleu", "chrf", "signature",
    "chrf_signature", "precisions", "bp", "sys_len", "ref_len"}``; scores are on a 0-100 scale.
    """
    from sacrebleu.metrics import BLEU, CHRF

    hyps = list(hyps)
    if not hyps:
        raise DataError("no hypotheses to score")
    if not all(isinstance(h, str) for h in hyps):
        raise DataError("hypotheses must be strings (detokenised text)")
    streams = _reference_streams(refs, len(hyps))
    bleu_metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    chrf_metric = CHRF(lowercase=lowercase)
    b = bleu_metric.corpus_score(hyps, streams)
    c = chrf_metric.corpus_score(hyps, streams)
    return {
        "bleu": float(b.score),
        "chrf": float(c.score),
        "signature": str(bleu_metric.get_signature()),
        "chrf_signature": str(chrf_metric.get_signature()),
        "precisions": [float(p) for p in b.precisions],
        "bp": float(b.bp),
        "sys_len": int(b.sys_len),
        "ref_len": int(b.ref_len),
    }


# --------------------------------------------------------------------------------------------------
# classification and entity tagging (BERT fine-tuning)


def classification_scores(
    y_true: Sequence[Any], y_pred: Sequence[Any], positive: Any = None
) -> dict[str, float]:
    """``accuracy`` of ``y_pred`` against ``y_true``; with ``positive`` (the positive class, e.g. MRPC's
    paraphrase label) also that class's ``precision``, ``recall`` and ``f1`` (0 where undefined)."""
    if len(y_true) != len(y_pred):
        raise DataError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    n = len(y_true)
    out = {"accuracy": sum(t == p for t, p in zip(y_true, y_pred)) / n if n else float("nan")}
    if positive is not None:
        tp = sum(t == positive and p == positive for t, p in zip(y_true, y_pred))
        n_pred = sum(p == positive for p in y_pred)
        n_true = sum(t == positive for t in y_true)
        out.update(_prf(tp, n_pred, n_true))
    return out


def _prf(n_correct: int, n_pred: int, n_true: int) -> dict[str, float]:
    p = n_correct / n_pred if n_pred else 0.0
    r = n_correct / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def _split_tag(tag: str) -> tuple[str, str]:
    """('B', 'person') for 'B-person', ('O', '_') for 'O': the chunk prefix and the entity type
    (as conlleval / seqeval read a tag: its first character, and what follows the first '-')."""
    if not tag:
        raise DataError("an empty tag is not a BIO tag")
    kind = tag[0]
    rest = tag[1:]
    etype = rest.split("-", 1)[-1] if rest else ""
    return kind, etype or "_"


def _chunk_ends(prev: str, kind: str, prev_type: str, etype: str) -> bool:
    """Does a chunk end between the previous tag and this one? (conlleval's endOfChunk)"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and kind in ("B", "S", "O"):
        return True
    return prev not in ("O", ".") and prev_type != etype


def _chunk_starts(prev: str, kind: str, prev_type: str, etype: str) -> bool:
    """Does a chunk start at this tag? (conlleval's startOfChunk)"""
    if kind in ("B", "S"):
        return True
    if kind in ("I", "E") and prev in ("E", "S", "O"):
        return True
    return kind not in ("O", ".") and prev_type != etype


def entity_spans(tags: Sequence[str] | Sequence[Sequence[str]]) -> list[tuple[str, int, int]]:
    """The entities of a tag sequence as (type, first, last) positions (``last`` inclusive), read the
    way conlleval and seqeval's default mode read BIO / IOB1 / IOE / IOBES tags:

    * a chunk starts at B- (or S-), at an I- (or E-) that follows O or a finished chunk (an I- without
      a B- still starts an entity), and wherever the type changes;
    * it ends before B-, S- or O, after E- or S-, and wherever the type changes.

    A list of sentences is read as one sequence with an O between sentences (positions count across
    them), so an entity never runs from one sentence into the next.
    """
    if any(not isinstance(s, str) for s in tags):
        flat: list[str] = []
        for sentence in tags:
            flat.extend(sentence)
            flat.append("O")
        seq: Sequence[str] = flat
    else:
        seq = tags  # type: ignore[assignment]
    out = []
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*seq, "O"]):
        kind, etype = _split_tag(tag)
        if _chunk_ends(prev, kind, prev_type, etype):
            out.append((prev_type, begin, i - 1))
        if _chunk_starts(prev, kind, prev_type, etype):
            begin = i
        prev, prev_type = kind, etype
    return out


def entity_f1(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level micro ``precision``, ``recall`` and ``f1`` of predicted tag sequences (one list of
    tags per sentence), as seqeval computes them in its default (conlleval) mode: an entity counts as
    correct only when its type, first and last token all match (``entity_spans``). Also the counts
    ``true_entities``, ``pred_entities`` and ``correct_entities``; scores are 0 where undefined."""
    if len(true_tags) != len(pred_tags):
        raise DataError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted ones")
    for k, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise DataError(f"sentence {k}: {len(t)} gold tags but {len(p)} predicted ones")
    gold, pred = set(entity_spans(list(true_tags))), set(entity_spans(list(pred_tags)))
    out = _prf(len(gold & pred), len(pred), len(gold))
    out.update(true_entities=len(gold), pred_entities=len(pred), correct_entities=len(gold & pred))
    return out


__all__ = ["bleu", "classification_scores", "entity_f1", "entity_spans"]
