"""Masked-LM + next-sentence pretraining: reading and cleaning documents, sentence pairs, masking,
the task's batches, and a tiny run through train_run / lmlab eval / fill-mask (lmlab.data.pretraining,
lmlab.tasks.mlm, lmlab.pretrain)."""

import gzip
import json
import random

import numpy as np
import pytest
import torch

from lmlab.config import build_config
from lmlab.data.pretraining import (
    IGNORE_INDEX,
    PretrainingBatches,
    PretrainingCorpus,
    SpecialIds,
    assemble,
    list_corpus_files,
    make_pairs,
    mask_tokens,
    read_documents,
    read_text,
    split_documents,
    split_sentences,
    strip_gutenberg,
)
from lmlab.errors import ConfigError, DataError, LmlabError
from lmlab.models import build_model
from lmlab.models.bert import BertConfig, BertForMaskedLM, BertForPreTraining
from lmlab.runs import train_run
from lmlab.tasks.mlm import MLMTask

# --------------------------------------------------------------------------------------------------
# reading and cleaning

GUTENBERG = """\ufeffThe Project Gutenberg EBook of A Tiny Book, by Nobody

This eBook is for the use of anyone anywhere at no cost.

*** START OF THIS PROJECT GUTENBERG EBOOK A TINY BOOK ***




Produced by a volunteer.



CHAPTER I.

It was a dark night. The rain fell.

End of the Project Gutenberg EBook of A Tiny Book, by Nobody

*** END OF THIS PROJECT GUTENBERG EBOOK A TINY BOOK ***

Section 1. General Terms of Use and Redistributing Project Gutenberg-tm electronic works
"""

OLD_ETEXT = """The Project Gutenberg Etext of An Old Book, by Someone
Please do not remove this.

This text produced for Project Gutenberg by a volunteer and
another one.

THE OLD BOOK

Once upon a time there was a king.

THE END

The Project Gutenberg Etext of An Old Book, by Someone
*END THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*
"""


def test_strip_gutenberg_header_and_footer(tmp_path):
    body = strip_gutenberg(GUTENBERG.replace("\ufeff", ""))
    assert "It was a dark night. The rain fell." in body and "CHAPTER I." in body
    assert "Project Gutenberg" not in body and "START OF" not in body and "use of anyone" not in body
    old = strip_gutenberg(OLD_ETEXT)
    assert "Once upon a time there was a king." in old and "THE END" in old
    assert "Gutenberg" not in old and "volunteer" not in old
    plain = "No header here.\n\nJust text."
    assert strip_gutenberg(plain) == plain
    # .txt.gz, a BOM and CRLF line endings, as in ../shared/data/gutenberg_books
    gz = tmp_path / "book.txt.gz"
    with gzip.open(gz, "wb") as f:
        f.write(GUTENBERG.replace("\n", "\r\n").encode("utf-8"))
    text = read_text(gz)
    assert not text.startswith("\ufeff") and "\r" not in text
    assert list_corpus_files(tmp_path) == [gz]
    docs = read_documents(tmp_path)
    assert [s for d in docs for s in d] == ["Produced by a volunteer.", "CHAPTER I.", "It was a dark night.",
                                            "The rain fell."]


def test_sentences_and_documents():
    para = ('Mr. Smith met Dr. Watson in St. Louis. "Is it you?" he asked.\n'
            "H. G. Wells wrote it!  Then 3 men came.")
    assert split_sentences(para) == [
        "Mr. Smith met Dr. Watson in St. Louis.",
        '"Is it you?" he asked.',
        "H. G. Wells wrote it!",
        "Then 3 men came.",
    ]
    long = " ".join(f"Sentence {i} is here." for i in range(10))
    text = f"HEADING\n\n\n{long}\n\n\n\n{long}\nstill the same paragraph.\n\n{long}"
    docs = split_documents(text)
    assert len(docs) == 2  # the heading (1 sentence) is merged into the first section
    assert docs[0][0] == "HEADING" and len(docs[0]) == 11
    assert docs[1][9] == "Sentence 9 is here. still the same paragraph."  # no break before lower case
    assert len(docs[1]) == 20


# --------------------------------------------------------------------------------------------------
# pairs and masks on a synthetic corpus: token ids are unique, so an id says where it comes from


def unique_corpus(n_docs=40, sentences=(2, 12), lengths=(1, 30), seed=0):
    rng = np.random.default_rng(seed)
    sent_counts = rng.integers(*sentences, size=n_docs)
    lens = rng.integers(*lengths, size=int(sent_counts.sum()))
    sent_off = np.concatenate([[0], np.cumsum(lens)])
    doc_off = np.concatenate([[0], np.cumsum(sent_counts)])
    tokens = np.arange(sent_off[-1], dtype=np.int64) + 5  # ids 0..4 are the specials
    return PretrainingCorpus(tokens, sent_off, doc_off)


def specials_for(corpus):
    return SpecialIds(pad=0, cls=2, sep=3, mask=4, vocab_size=int(corpus.tokens.max()) + 1,
                      specials=(0, 1, 2, 3, 4))


def doc_of(corpus, token_offset):
    sentence = np.searchsorted(corpus.sentences, token_offset, side="right") - 1
    return int(np.searchsorted(corpus.documents, sentence, side="right") - 1)


def test_pairs_next_sentence_half_random_and_true_pairs_consecutive():
    corpus = unique_corpus(n_docs=100, sentences=(20, 60), lengths=(1, 12))
    docs = np.arange(corpus.n_documents)
    pairs = make_pairs(corpus, docs, np.random.default_rng(1), max_len=64, short_seq_prob=0.1)
    assert len(pairs) > 500
    assert (pairs.lengths <= 64).all() and (pairs.a_hi > pairs.a_lo).all() and (pairs.b_hi > pairs.b_lo).all()
    assert 0.45 < pairs.is_random.mean() < 0.6  # 50%, plus one-sentence chunks (always random, as in BERT)
    true = pairs.is_random == 0
    whole = true & (pairs.lengths < 64)  # pairs that were not cut to fit
    assert whole.sum() > 50 and (pairs.b_lo[whole] == pairs.a_hi[whole]).all()  # B starts where A ends
    assert (pairs.b_lo[true] >= pairs.a_hi[true]).all()  # (a cut pair lost tokens at A's end or B's start)
    for a, b in zip(pairs.a_lo[true], pairs.b_hi[true] - 1):
        assert doc_of(corpus, a) == doc_of(corpus, b)
    rand = np.flatnonzero(~true)
    assert all(doc_of(corpus, pairs.a_lo[i]) != doc_of(corpus, pairs.b_lo[i]) for i in rand)
    assert (pairs.lengths < 20).mean() > 0.03  # short_seq_prob: some pairs are built shorter
    # without next-sentence prediction every pair is consecutive text
    plain = make_pairs(corpus, docs, np.random.default_rng(1), max_len=64, random_next_prob=0.0)
    assert plain.is_random.sum() == 0
    two = (plain.b_hi > plain.b_lo) & (plain.lengths < 64)
    assert two.sum() > 50 and (plain.b_lo[two] == plain.a_hi[two]).all()
    # the same generator state gives the same pairs
    again = make_pairs(corpus, docs, np.random.default_rng(1), max_len=64, short_seq_prob=0.1)
    assert all((x == y).all() for x, y in zip(pairs, again))


def test_masking_statistics_and_specials():
    corpus = unique_corpus(n_docs=800)
    special = specials_for(corpus)
    pairs = make_pairs(corpus, np.arange(corpus.n_documents), np.random.default_rng(0), max_len=128)
    ids, types, attention, maskable = assemble(corpus.tokens, pairs, special)
    inputs, labels = mask_tokens(ids, maskable, np.random.default_rng(0), special, mask_prob=0.15)
    selected = labels != IGNORE_INDEX
    n_sel = selected.sum()
    assert n_sel > 10_000
    assert abs(n_sel / maskable.sum() - 0.15) < 0.005
    assert not (selected & ~maskable).any()  # [CLS], [SEP] and [PAD] are never selected
    assert not np.isin(ids[selected], [0, 2, 3]).any()
    assert (labels[selected] == ids[selected]).all()
    assert (inputs[~selected] == ids[~selected]).all()  # only selected positions change
    to_mask = (inputs == special.mask) & selected
    kept = (inputs == ids) & selected
    to_random = selected & ~to_mask & ~kept
    assert abs(to_mask.sum() / n_sel - 0.8) < 0.015
    assert abs(to_random.sum() / n_sel - 0.1) < 0.01  # a random id equal to the original counts as kept
    assert abs(kept.sum() / n_sel - 0.1) < 0.01
    assert not np.isin(inputs[to_random], special.specials).any()
    # segments: 0 through the first [SEP], 1 after; attention 1 at real tokens
    row = 0
    la, lb = pairs.a_hi[row] - pairs.a_lo[row], pairs.b_hi[row] - pairs.b_lo[row]
    assert ids[row, 0] == special.cls
    assert ids[row, la + 1] == special.sep and ids[row, la + lb + 2] == special.sep
    assert types[row, : la + 2].sum() == 0 and (types[row, la + 2 : la + lb + 3] == 1).all()
    assert attention.sum(1).tolist() == pairs.lengths.tolist()
    # at least one token per sequence, even a short one
    short_ids = np.array([[2, 7, 3, 0]])
    only = np.array([[False, True, False, False]])
    _, lab = mask_tokens(short_ids, only, np.random.default_rng(0), special)
    assert lab.tolist() == [[IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX]]


def batches_for(corpus, seed=3, next_sentence=True, short_seq_prob=0.1, max_len=48):
    train = np.arange(corpus.n_documents - 5)
    val = np.arange(corpus.n_documents - 5, corpus.n_documents)
    return PretrainingBatches(corpus, train, val, specials_for(corpus), max_len=max_len, seed=seed,
                              short_seq_prob=short_seq_prob, next_sentence=next_sentence)


def test_masks_fresh_each_epoch_and_deterministic():
    # one-token sentences, no NSP and no short pairs: every epoch cuts the documents into the same
    # chunks, so the difference between epochs is the masks alone
    corpus = unique_corpus(n_docs=60, sentences=(40, 80), lengths=(1, 2))
    data = batches_for(corpus, next_sentence=False, short_seq_prob=0.0)
    b = 8
    n = data.steps_per_epoch(b)
    assert data.steps_per_epoch(b, epoch=1) == n

    def selected_ids(epoch):
        first = sum(data.steps_per_epoch(b, e) for e in range(epoch))
        out = set()
        for step in range(first, first + n):
            labels = data.global_batch(step, b).labels
            out |= set(labels[labels != IGNORE_INDEX].tolist())
        return out

    e0, e1 = selected_ids(0), selected_ids(1)
    assert len(e0) > 100 and len(e1) > 100
    assert len(e0 & e1) / len(e0) < 0.5  # independent draws overlap ~15%
    again = batches_for(corpus, next_sentence=False, short_seq_prob=0.0)
    assert e0 == set().union(*[
        set(again.global_batch(s, b).labels[again.global_batch(s, b).labels != IGNORE_INDEX].tolist())
        for s in range(n)
    ])
    other_seed = batches_for(corpus, seed=4, next_sentence=False, short_seq_prob=0.0)
    assert not torch.equal(other_seed.global_batch(0, b).labels, data.global_batch(0, b).labels)
    # validation: fixed pairs and masks, whatever the seed
    assert torch.equal(data.val_set().labels, other_seed.val_set().labels)


def test_batch_is_a_pure_function_of_the_step_and_splits_exactly():
    corpus = unique_corpus(n_docs=80)
    task = MLMTask(batches_for(corpus))
    fresh = MLMTask(batches_for(corpus))
    late = 3 * task.data.steps_per_epoch(16) + 2  # an epoch this object has not built yet
    for step in (0, 1, late):
        whole = task.batch(step, 0, 1, 0, 1, 16)
        same = fresh.batch(step, 0, 1, 0, 1, 16)
        assert all(torch.equal(x, y) for x, y in zip(whole, same))
        # grad_accum 2 x world 2: the micro-batches are the global batch's rows, each cut to its longest
        parts = [task.batch(step, m, 2, r, 2, 16) for m in range(2) for r in range(2)]
        order = [m * 2 + r for m in range(2) for r in range(2)]
        parts = [p for _, p in sorted(zip(order, parts), key=lambda x: x[0])]
        assert sum(len(p.input_ids) for p in parts) == 16
        lo = 0
        for p in parts:
            n, t = p.input_ids.shape
            assert t == int(p.attention_mask.sum(1).max())  # padded to the micro-batch's longest
            assert torch.equal(p.input_ids, whole.input_ids[lo : lo + n, :t])
            assert torch.equal(p.labels, whole.labels[lo : lo + n, :t])
            assert torch.equal(p.next_sentence_label, whole.next_sentence_label[lo : lo + n])
            lo += n
        specials = (whole.input_ids == 2) | (whole.input_ids == 3) | (whole.attention_mask == 0)
        assert (whole.labels[specials] == IGNORE_INDEX).all()
    assert not torch.equal(task.batch(0, 0, 1, 0, 1, 16).input_ids, task.batch(1, 0, 1, 0, 1, 16).input_ids)
    with pytest.raises(ConfigError, match="cannot be split"):
        task.batch(0, 0, 4, 0, 8, 16)


# --------------------------------------------------------------------------------------------------
# the model


def test_next_sentence_flag_picks_the_model_and_mlm_positions():
    cfg = BertConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, d_model=16, d_ff=32, dropout=0.0,
                     attn_dropout=0.0)
    assert type(build_model("bert", cfg, "mlm")) is BertForMaskedLM
    cfg.next_sentence = True
    model = build_model("bert", cfg, "mlm").eval()
    assert type(model) is BertForPreTraining
    ids = torch.randint(5, 40, (3, 10))
    where = torch.rand(3, 10) < 0.3
    with torch.no_grad():
        full, nsp = model(ids)
        part, nsp2 = model(ids, mlm_positions=where)
    assert part.shape == (int(where.sum()), 40)
    assert torch.allclose(part, full[where], atol=1e-6) and torch.allclose(nsp, nsp2)


# --------------------------------------------------------------------------------------------------
# a tiny run end to end

WORDS = ("the a man woman dog cat house river king queen ship sea walked ran saw loved hated quickly "
         "slowly old young red blue green").split()


def write_books(folder, n_books=3, seed=0):
    rnd = random.Random(seed)

    def sentence():
        s = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 12)))
        return s[0].upper() + s[1:] + "."

    folder.mkdir(parents=True, exist_ok=True)
    for b in range(n_books):
        sections = ["\n\n".join(" ".join(sentence() for _ in range(3)) for _ in range(4)) for _ in range(4)]
        (folder / f"book{b}.txt").write_text("\n\n\n".join(sections), encoding="utf-8")
    return folder


def tiny_config(path, **train):
    raw = {
        "family": "bert",
        "task": "mlm",
        "model": {"n_layer": 1, "n_head": 2, "d_model": 16, "d_ff": 32, "block_size": 32,
                  "next_sentence": True},
        "tokenizer": {"kind": "wordpiece", "vocab_size": 120},
        "data": {"path": str(path), "val_fraction": 0.25},
        "train": {"max_steps": 4, "batch_size": 8, "log_interval": 2, "progress": False, "lr": 1e-3,
                  "schedule": "constant", **train},  # constant: the same rates whatever max_steps
    }
    return build_config(raw)



def test_train_eval_fill_mask_and_exact_resume(tmp_path, cli):
    books = write_books(tmp_path / "books")
    result = train_run(tiny_config(books), tmp_path / "run")
    assert result["step"] == 4
    for key in ("val_loss", "val_mlm_loss", "val_mlm_acc", "val_nsp_loss", "val_nsp_acc"):
        assert np.isfinite(result[key])
    assert result["val_loss"] == pytest.approx(result["val_mlm_loss"] + result["val_nsp_loss"])
    assert (tmp_path / "run" / "data" / "tokens.npy").is_file()
    rc, out, err = cli("eval", tmp_path / "run", "--json")
    assert rc == 0, err
    metrics = json.loads(out)
    assert metrics["mlm_acc"] == pytest.approx(result["val_mlm_acc"])  # the same fixed validation masks
    assert metrics["nsp_acc"] == pytest.approx(result["val_nsp_acc"])
    assert metrics["masked_tokens"] > 0 and metrics["pairs"] > 0
    rc, out, err = cli("eval", tmp_path / "run", "--data", books / "book0.txt", "--json")
    assert rc == 0 and json.loads(out)["pairs"] > 0
    rc, out, err = cli("fill-mask", tmp_path / "run", "The man saw the [MASK].", "--json")
    assert rc == 0, err
    fills = json.loads(out)
    assert len(fills) == 1 and len(fills[0]) == 5 and 0 < fills[0][0]["prob"] <= 1

    # exact resume: 2 steps, then 2 more, equals 4 in one go (with the same tokenizer: WordPiece
    # training may order tokens of equal frequency differently from one run to the next)
    tok = str(tmp_path / "run" / "tokenizer.json")
    first = tiny_config(books, max_steps=2)
    first.tokenizer.path = tok
    train_run(first, tmp_path / "resumed")
    more = tiny_config(books, max_steps=4)
    more.tokenizer.path = tok
    again = train_run(more, tmp_path / "resumed")
    assert again["val_loss"] == pytest.approx(result["val_loss"], rel=1e-6)
    import lmlab

    a, b = lmlab.load(tmp_path / "run").model, lmlab.load(tmp_path / "resumed").model
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"no .txt or .txt.gz files found under {empty}"):
        train_run(tiny_config(empty), tmp_path / "run")
    (empty / "blank.txt").write_text("  \n\n  \n")
    with pytest.raises(DataError, match="no text found"):
        train_run(tiny_config(empty), tmp_path / "run")
    with pytest.raises(DataError, match="data path not found: .*nowhere"):
        train_run(tiny_config(tmp_path / "nowhere"), tmp_path / "run")
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.txt").write_text("Just one sentence here. And another one.")
    with pytest.raises(DataError, match="1 document.*at least 2"):
        train_run(tiny_config(one), tmp_path / "run")
    with pytest.raises(ConfigError, match="task 'mlm' .* needs family 'bert', not 'gpt'"):
        build_config({"family": "gpt", "task": "mlm"})
    bert = {"family": "bert", "task": "mlm"}
    with pytest.raises(ConfigError, match="tokenizer.kind=wordpiece"):
        build_config({**bert, "tokenizer": {"kind": "char"}})
    with pytest.raises(ConfigError, match="data.mask_prob must be in"):
        build_config({**bert, "tokenizer": {"kind": "wordpiece"}, "data": {"mask_prob": 1.5}})
    with pytest.raises(ConfigError, match="data.corpus is a translation setting"):
        build_config({**bert, "tokenizer": {"kind": "wordpiece"}, "data": {"corpus": "multi30k"}})
    cfg = tiny_config(write_books(tmp_path / "books"))
    cfg.data.block_size = 64
    with pytest.raises(ConfigError, match="exceeds model.block_size"):
        train_run(cfg, tmp_path / "run")
    assert issubclass(DataError, LmlabError)
