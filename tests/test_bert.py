"""lmlab's BERT: the encoder, its heads, and the WordPiece tokenizer (no transformers needed)."""

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.models import build_model, model_config_class
from lmlab.models.bert import (
    Bert,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from lmlab.tokenizers import WordPieceTokenizer, load_tokenizer

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; all who wander are not lost.",
]



def tiny(**kw) -> BertConfig:
    cfg = dict(vocab_size=50, block_size=24, n_layer=2, n_head=2, d_model=16, d_ff=32, dropout=0.0)
    cfg["attn_dropout"] = 0.0
    cfg.update(kw)
    return BertConfig(**cfg)


def batch(b=3, t=10, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (b, t), generator=g)
    types = torch.zeros_like(ids)
    types[:, t // 2 :] = 1
    return ids, types


def test_heads_shapes_and_registry():
    cfg = tiny(num_labels=3)
    ids, types = batch()
    torch.manual_seed(0)
    with torch.no_grad():
        h = Bert(cfg)(ids, token_type_ids=types)
        assert h.shape == (3, 10, 16)
        assert Bert(cfg).pool(h).shape == (3, 16)
        assert BertForMaskedLM(cfg)(ids).shape == (3, 10, 50)
        mlm, nsp = BertForPreTraining(cfg)(ids, token_type_ids=types)
        assert mlm.shape == (3, 10, 50) and nsp.shape == (3, 2)
        assert BertForSequenceClassification(cfg)(ids, token_type_ids=types).shape == (3, 3)
        assert BertForTokenClassification(cfg)(ids).shape == (3, 10, 3)
    assert Bert(cfg, pooler=False).pooler is None and BertForMaskedLM(cfg).bert.pooler is None
    assert model_config_class("bert") is BertConfig
    assert isinstance(build_model("bert", cfg), BertForMaskedLM)


def test_mlm_decoder_tied_to_word_embedding():
    model = BertForMaskedLM(tiny())
    assert model.mlm.decoder.weight is model.bert.tok_emb.weight
    assert sum(p.numel() for p in model.parameters()) < sum(t.numel() for t in model.state_dict().values())
    ids, _ = batch()
    model(ids).sum().backward()  # the embedding gets gradient from both ends
    assert model.bert.tok_emb.weight.grad is not None
    pre = BertForPreTraining(tiny())
    assert pre.mlm.decoder.weight is pre.bert.tok_emb.weight


def test_bert_init():
    torch.manual_seed(0)
    model = BertForPreTraining(tiny(vocab_size=400, d_model=64, d_ff=128))
    sd = dict(model.named_parameters())
    assert all(torch.all(p == 0) for n, p in sd.items() if n.endswith("bias"))
    assert all(torch.all(p == 1) for n, p in sd.items() if "norm" in n and n.endswith("weight"))
    w = model.bert.blocks[0].ffn.fc1.weight
    assert abs(w.std().item() - 0.02) < 0.003 and abs(w.mean().item()) < 0.003
    emb = model.bert.tok_emb.weight
    assert torch.all(emb[0] == 0) and abs(emb[1:].std().item() - 0.02) < 0.002  # [PAD] row is zero


@pytest.mark.parametrize("attention", ["fused", "eager"])
def test_padding_invariance(attention):
    """Extra [PAD] tokens (masked out) leave the real tokens' hidden states and the heads' outputs alone."""
    torch.manual_seed(1)
    cfg = tiny(attention=attention)
    ids, types = batch(b=2, t=9)
    pad = 6
    padded = torch.cat([ids, torch.zeros(2, pad, dtype=torch.long)], 1)
    padded_types = torch.cat([types, torch.zeros(2, pad, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(2, 9, dtype=torch.long), torch.zeros(2, pad, dtype=torch.long)], 1)
    bert = Bert(cfg).eval()
    with torch.no_grad():
        a = bert(ids, token_type_ids=types)
        b = bert(padded, mask, padded_types)
        assert (a - b[:, :9]).abs().max() <= 1e-5
        assert (bert.pool(a) - bert.pool(b)).abs().max() <= 1e-5
        assert (bert.embed(ids, None, types) - bert.embed(padded, mask, padded_types)).abs().max() <= 1e-5
        # a batch of different lengths equals each sequence run alone
        short = bert(ids[1:, :5], token_type_ids=types[1:, :5])
        mixed_mask = torch.ones(2, 9, dtype=torch.long)
        mixed_mask[1, 5:] = 0
        mixed = bert(ids, mixed_mask, types)
        assert (mixed[1, :5] - short[0]).abs().max() <= 1e-5
        assert (mixed[0] - a[0]).abs().max() <= 1e-5
        _, weights = bert(padded, mask, padded_types, need_weights=True)
    assert len(weights) == 2 and weights[0].shape == (2, 2, 15, 15)
    assert torch.all(weights[0][..., 9:] == 0)  # no attention to padding
    mlm = BertForMaskedLM(cfg).eval()
    with torch.no_grad():
        assert (mlm(ids, token_type_ids=types) - mlm(padded, mask, padded_types)[:, :9]).abs().max() <= 1e-5


def test_segments_and_positions_matter():
    torch.manual_seed(2)
    bert = Bert(tiny()).eval()
    ids, types = batch(b=1, t=8)
    with torch.no_grad():
        assert not torch.allclose(bert(ids), bert(ids, token_type_ids=types))
        with pytest.raises(ValueError, match="exceeds the context length 24"):
            bert(torch.ones(1, 25, dtype=torch.long))


def test_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        Bert(tiny(n_head=3))
    with pytest.raises(ConfigError, match="activation = 'swiglu'"):
        Bert(tiny(activation="swiglu"))
    with pytest.raises(ConfigError, match="vocab_size must be set"):
        Bert(tiny(vocab_size=0))
    with pytest.raises(ConfigError, match="pad_token_id=99"):
        Bert(tiny(pad_token_id=99))
    assert Bert(tiny(pad_token_id=None)).tok_emb.padding_idx is None
    cfg = tiny()
    assert cfg.hidden_size == 16 and cfg.max_position_embeddings == 24


# --------------------------------------------------------------------------------------------------
# WordPiece tokenizer


@pytest.fixture(scope="module")
def wordpiece() -> WordPieceTokenizer:
    return WordPieceTokenizer.train(TEXT * 5, vocab_size=200, lowercase=True)


def test_wordpiece_train_encode(wordpiece):
    tok = wordpiece
    assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
    assert tok.lowercase and tok.eos_id is None and tok.vocab_size <= 200
    ids = tok.encode("The QUICK fox")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert tok.encode("The QUICK fox", add_special_tokens=False) == ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True) == "the quick fox"
    assert tok.decode(ids) == "[CLS] the quick fox [SEP]"
    pair, types = tok.encode_with_types("the fox", "a dog")
    assert pair == tok.encode("the fox", "a dog") and pair.count(tok.sep_id) == 2
    assert types == [0] * (pair.index(tok.sep_id) + 1) + [1] * (len(pair) - pair.index(tok.sep_id) - 1)
    assert tok.encode("€", add_special_tokens=False) == [tok.unk_id]  # never seen in training
    assert tok.decode([ids[1], 10_000]).endswith("\ufffd")
    expected = [tok.encode("the fox", "x"), tok.encode("a dog", "y")]
    assert tok.encode_batch(["the fox", "a dog"], ["x", "y"]) == expected


def test_wordpiece_padded_batch(wordpiece):
    b = wordpiece.encode_padded(["the quick brown fox jumps", "a step"], ["the dog", "gold"])
    ids, types, mask = b["input_ids"], b["token_type_ids"], b["attention_mask"]
    assert ids.shape == types.shape == mask.shape and ids.dtype == torch.long
    n = len(wordpiece.encode("a step", "gold"))
    assert mask[1].tolist() == [1] * n + [0] * (ids.size(1) - n) and torch.all(ids[1, n:] == 0)
    assert ids[1, :n].tolist() == wordpiece.encode("a step", "gold")
    cut = wordpiece.encode_padded(["the quick brown fox jumps over the lazy dog"], max_length=5)["input_ids"]
    assert cut.shape == (1, 5) and cut[0, 0] == wordpiece.cls_id and cut[0, -1] == wordpiece.sep_id
    assert len(wordpiece.encode("the quick brown fox jumps over the lazy dog")) > 5  # truncation is undone


def test_wordpiece_save_load_and_vocab(tmp_path, wordpiece):
    wordpiece.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path)
    assert isinstance(back, WordPieceTokenizer)
    vocab = sorted(wordpiece.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    from_vocab = WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt", lowercase=True)
    cased = WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt", lowercase=False)
    assert not cased.lowercase
    for s in TEXT + ["Ünïcödé [MASK] naïve", "The Fox"]:
        assert back.encode(s) == wordpiece.encode(s) == from_vocab.encode(s)
    assert cased.encode("The Fox") != wordpiece.encode("The Fox")  # 'The' is not in a lowercase vocabulary
