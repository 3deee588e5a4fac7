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


__all__ = ["bleu"]
