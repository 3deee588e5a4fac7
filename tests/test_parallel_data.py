"""Parallel text: reading aligned files / TSV, the bundled corpora, encoding, token-budget batches."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.data.parallel import (
    ParallelText,
    SpecialIds,
    TokenPairs,
    collate,
    default_data_root,
    encode_pairs,
    load_multi30k,
    load_tatoeba_cmn,
    read_parallel,
    read_tsv,
    token_budget_batches,
)
from lmlab.errors import DataError
from lmlab.tokenizers import CharTokenizer

SHARED = default_data_root()


def _need(path: Path) -> None:
    """Skip when the shared data is absent, except on CI (env CI set), where that is a failure."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing on CI: {path}")
        pytest.skip(f"shared data not available: {path}")


def test_read_aligned_files_skips_empty_lines(tmp_path, caplog):
    (tmp_path / "a.en").write_text("a cat\n\nthe dog \nsun\nmoon\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("eine Katze\nleer\nder Hund\n\nMond\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="lmlab"):
        text = read_parallel(tmp_path / "a.en", tmp_path / "a.de")
    assert text.src == ["a cat", "the dog", "moon"]
    assert text.tgt == ["eine Katze", "der Hund", "Mond"]
    assert text.n_empty_skipped == 2 and len(text) == 3
    assert "skipped 2 pairs" in caplog.text


def test_different_line_counts_name_both_files(tmp_path):
    (tmp_path / "x.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "x.de").write_text("eins\nzwei\n")
    with pytest.raises(DataError) as e:
        read_parallel(tmp_path / "x.en", tmp_path / "x.de")
    msg = str(e.value)
    assert "x.en" in msg and "x.de" in msg and "3" in msg and "2" in msg
    with pytest.raises(DataError, match="not found"):
        read_parallel(tmp_path / "missing.en", tmp_path / "x.de")


def test_gzip_crlf_and_no_final_newline(tmp_path):
    with gzip.open(tmp_path / "s.de.gz", "wt", encoding="utf-8") as f:
        f.write("Grüße\tmit Tab\nzwei")
    (tmp_path / "s.en").write_bytes(b"greetings\r\ntwo\r\n")
    text = read_parallel(tmp_path / "s.en", tmp_path / "s.de.gz")
    assert text.src == ["greetings", "two"] and text.tgt == ["Grüße\tmit Tab", "zwei"]


def test_read_tsv(tmp_path):
    (tmp_path / "p.tsv").write_text("hello\thallo\tattribution\n\nbye\ttschüss\n", encoding="utf-8")
    text = read_tsv(tmp_path / "p.tsv")
    assert text.src == ["hello", "bye"] and text.tgt == ["hallo", "tschüss"] and text.n_empty_skipped == 1
    assert read_tsv(tmp_path / "p.tsv", 1, 0).src == ["hallo", "tschüss"]
    (tmp_path / "bad.tsv").write_text("ok\tgut\nno tab here\n")
    with pytest.raises(DataError, match=r"bad.tsv, line 2"):
        read_tsv(tmp_path / "bad.tsv")
    (tmp_path / "empty.tsv").write_text("\n\n")
    with pytest.raises(DataError, match="no sentence pairs"):
        read_tsv(tmp_path / "empty.tsv")


def test_multi30k_loader():
    _need(SHARED / "multi30k")
    sizes = {"train": 29000, "val": 1014, "test": 1000}
    for split, n in sizes.items():
        text = load_multi30k(split)
        assert len(text) == n and text.n_empty_skipped == 0
    val = load_multi30k("val")
    assert val.src[0] == "A group of men are loading cotton onto a truck"
    assert val.tgt[0] == "Eine Gruppe von Männern lädt Baumwolle auf einen Lastwagen"
    de_en = load_multi30k("test2016", src_lang="de", tgt_lang="en")
    assert de_en.src[0].startswith("Ein Mann") and len(de_en) == 1000
    assert len(load_multi30k("val", variant="tok")) == 1014
    with pytest.raises(DataError, match="split"):
        load_multi30k("dev")


def test_tatoeba_loader():
    _need(SHARED / "tatoeba_cmn_eng" / "cmn.txt")
    text = load_tatoeba_cmn()
    assert len(text) == 29155
    # lines 29 and 31 of the file have spaces instead of a TAB before the Chinese
    assert (text.src[28], text.tgt[28]) == ("We try.", "我们来试试。")
    assert (text.src[30], text.tgt[30]) == ("Ask Tom.", "去问汤姆。")
    assert not any("CC-BY" in t for t in text.tgt[:100])
    zh_en = load_tatoeba_cmn(direction="zh-en")
    assert zh_en.src[28] == "我们来试试。"


def test_encode_truncates_with_a_warning():
    tok = CharTokenizer.train(["abcdefgh"])
    text = ParallelText(["abc", "abcdefgh", "ab"], ["abcdefg", "a", "abcdefgh"])
    with pytest.warns(UserWarning, match="truncated 1 source and 2 target sentences"):
        pairs = encode_pairs(text, tok, max_len=6)
    assert pairs.src(1).tolist() == tok.encode("abcde")
    assert pairs.tgt(0).tolist() == tok.encode("abcde")
    assert pairs.src_lens.tolist() == [4, 6, 3]  # + EOS
    assert pairs.tgt_lens.tolist() == [6, 2, 6]  # + BOS / EOS
    assert len(pairs) == 3 and pairs.n_tgt_tokens == 14


def _random_pairs(n: int, seed: int = 0) -> TokenPairs:
    rng = np.random.default_rng(seed)
    src = [rng.integers(0, 50, int(rng.integers(1, 40))).tolist() for _ in range(n)]
    tgt = [rng.integers(0, 50, int(rng.integers(1, 40))).tolist() for _ in range(n)]
    return TokenPairs(src, tgt)


def test_token_budget_batches():
    pairs = _random_pairs(500)
    batches = token_budget_batches(pairs.src_lens, pairs.tgt_lens, 300, seed=0)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))  # every pair exactly once
    for b in batches:
        width = max(pairs.src_lens[b].max(), pairs.tgt_lens[b].max())
        assert len(b) * width <= 300
    # length-sorted buckets: little padding, many sentences in short batches
    src_pad = sum(len(b) * pairs.src_lens[b].max() - pairs.src_lens[b].sum() for b in batches)
    assert src_pad / pairs.src_lens.sum() < 0.1
    assert len(batches[0]) > len(batches[-1])
    # same seed, same batches; ties broken differently by another seed
    again = token_budget_batches(pairs.src_lens, pairs.tgt_lens, 300, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = token_budget_batches(pairs.src_lens, pairs.tgt_lens, 300, seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(batches, other))
    # a pair longer than the budget gets its own batch; max_sentences caps the size
    alone = token_budget_batches(np.array([3, 50, 3]), np.array([3, 2, 3]), 20)
    assert sorted(len(b) for b in alone) == [1, 2]
    capped = token_budget_batches(pairs.src_lens, pairs.tgt_lens, 10_000, max_sentences=16)
    assert max(len(b) for b in capped) == 16


def test_collate_masks_and_special_tokens():
    sp = SpecialIds.after(10)
    assert (sp.pad, sp.bos, sp.eos) == (10, 11, 12)
    pairs = TokenPairs([[1, 2, 3], [4]], [[5, 6], [7, 8, 9, 1]])
    b = collate(pairs, [0, 1], sp)
    assert b.src.tolist() == [[1, 2, 3, 12], [4, 12, 10, 10]]
    assert b.src_padding_mask.tolist() == [[False] * 4, [False, False, True, True]]
    assert b.tgt_in.tolist() == [[11, 5, 6, 10, 10], [11, 7, 8, 9, 1]]
    assert b.tgt_out.tolist() == [[5, 6, 12, 10, 10], [7, 8, 9, 1, 12]]
    assert torch.equal(b.tgt_padding_mask, b.tgt_out == 10)
    assert b.n_tokens == 8
    assert b.src.dtype == torch.long
    other = SpecialIds.after(20)  # separate vocabularies: each side uses its own ids
    b2 = collate(pairs, [1], sp, other)
    assert b2.src.tolist() == [[4, 12]] and b2.tgt_in.tolist() == [[21, 7, 8, 9, 1]]
