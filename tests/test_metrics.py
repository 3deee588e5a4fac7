"""BLEU and chrF through sacrebleu on tiny hand-checked cases."""

from __future__ import annotations

import math

import pytest

from lmlab.errors import DataError
from lmlab.metrics import bleu


def test_bleu_hand_checked():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat": clipped n-gram precisions
    # 5/6, 3/5, 2/4, 1/3 and equal lengths (BP = 1): BLEU = (5/6 · 3/5 · 2/4 · 1/3)^(1/4)
    out = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
    assert out["bleu"] == pytest.approx(expected, abs=1e-6)
    assert out["precisions"] == pytest.approx([500 / 6, 60.0, 50.0, 100 / 3])
    assert out["bp"] == 1.0 and out["sys_len"] == out["ref_len"] == 6
    assert out["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert 0 < out["chrf"] < 100 and "nc:6" in out["chrf_signature"]


def test_identical_and_disjoint_and_multi_reference():
    same = bleu(["a b c d e", "x y z w v"], ["a b c d e", "x y z w v"])
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    assert bleu(["p q r s"], ["a b c d"])["bleu"] == 0.0
    two = bleu(["the cat sat on the mat"], [["the cat sat on a mat"], ["the cat sat on the mat"]])
    assert two["bleu"] == pytest.approx(100.0) and two["signature"].startswith("nrefs:2")
    zh = bleu(["我们来试试。"], ["我们来试试。"], tokenize="zh")
    assert zh["bleu"] == pytest.approx(100.0) and "tok:zh" in zh["signature"]


def test_bad_inputs():
    with pytest.raises(DataError, match="2 hypotheses"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(DataError, match="no hypotheses"):
        bleu([], [])
