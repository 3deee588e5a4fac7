import json

import pytest
import tokenizers
import torch

from lmlab.config import TokenizerConfig
from lmlab.data.text import BUNDLED_SHAKESPEARE
from lmlab.errors import ConfigError, DataError
from lmlab.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer, train_tokenizer

SHAKESPEARE = BUNDLED_SHAKESPEARE.read_text(encoding="utf-8")
SAMPLE = SHAKESPEARE[:60_000]
TRICKY = [
    "",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "你好，世界",
    "🙂👍🏽",
    "mixed: Ünïcödé ñ 你好 🙂 end",
    "  leading and trailing spaces  \n\n\t\r\n",
    "control \x00\x01\x7f chars and \u200b zero width",
    "<|endoftext|> literal special token <|endoftext|>",
]


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return CharTokenizer.train([SAMPLE[:30_000], SAMPLE[30_000:]])


@pytest.fixture(scope="module")
def bpe_tok() -> BPETokenizer:
    return BPETokenizer.train(iter([SAMPLE[:30_000], SAMPLE[30_000:]]), vocab_size=400)


# ---------------------------------------------------------------- char


def test_char_vocab_is_sorted_chars_plus_bytes(char_tok):
    chars = sorted(set(SAMPLE))
    assert char_tok.chars == chars
    assert char_tok.vocab_size == len(chars) + 256
    assert char_tok.eos_id is None
    assert char_tok.encode("a") == [chars.index("a")]


@pytest.mark.parametrize("text", TRICKY)
def test_char_round_trip(char_tok, text):
    assert char_tok.decode(char_tok.encode(text)) == text


def test_char_byte_fallback_for_unseen_chars(char_tok):
    n = char_tok.n_chars
    ids = char_tok.encode("a你")
    assert ids[0] < n
    assert [i - n for i in ids[1:]] == list("你".encode())
    assert char_tok.token_to_str(ids[1]) == "<0xE4>"
    assert char_tok.token_to_str(ids[0]) == "a"


def test_char_decode_invalid_bytes_and_ids(char_tok):
    n = char_tok.n_chars
    a = char_tok.encode("a")[0]
    assert char_tok.decode([a, n + 0xE4, a]) == "a\ufffda"  # truncated UTF-8 sequence
    assert char_tok.decode([a, char_tok.vocab_size + 5]) == "a\ufffd"  # outside the vocabulary
    assert char_tok.decode(torch.tensor(char_tok.encode("ab"))) == "ab"
    with pytest.raises(ValueError):
        char_tok.token_to_str(char_tok.vocab_size)


def test_char_round_trips_the_whole_corpus():
    tok = CharTokenizer.train([SHAKESPEARE])
    ids = tok.encode(SHAKESPEARE)
    assert len(ids) == len(SHAKESPEARE)
    assert tok.decode(ids) == SHAKESPEARE


def test_char_save_load(tmp_path, char_tok):
    path = tmp_path / "sub" / "tokenizer.json"
    char_tok.save(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["type"] == "lmlab-char" and raw["byte_fallback"] is True
    loaded = load_tokenizer(path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.chars == char_tok.chars
    assert loaded.encode(TRICKY[4]) == char_tok.encode(TRICKY[4])
    assert isinstance(load_tokenizer(tmp_path / "sub"), CharTokenizer)  # a directory works too


# ---------------------------------------------------------------- bpe


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trip(bpe_tok, text):
    assert bpe_tok.decode(bpe_tok.encode(text)) == text


def test_bpe_vocab_and_eos(bpe_tok):
    assert bpe_tok.vocab_size == 400
    assert bpe_tok.eos_id == bpe_tok.tokenizer.token_to_id("<|endoftext|>")
    assert bpe_tok.encode("<|endoftext|>") == [bpe_tok.eos_id]
    # BPE merges: common words compress below one token per character
    text = SAMPLE[:2000]
    assert len(bpe_tok.encode(text)) < 0.7 * len(text)
    assert bpe_tok.encode_batch(["hello", "你好"]) == [bpe_tok.encode("hello"), bpe_tok.encode("你好")]


def test_bpe_token_to_str_and_bad_ids(bpe_tok):
    ids = bpe_tok.encode(" the")
    assert "".join(bpe_tok.token_to_str(i) for i in ids) == " the"
    assert bpe_tok.decode([*ids, 10**6]) == " the\ufffd"


def test_bpe_save_load_and_hf_compat(tmp_path, bpe_tok):
    path = tmp_path / "tokenizer.json"
    bpe_tok.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    assert (loaded.vocab_size, loaded.eos_id) == (bpe_tok.vocab_size, bpe_tok.eos_id)
    assert loaded.to_str() == bpe_tok.to_str()
    hf = tokenizers.Tokenizer.from_file(str(path))
    for text in TRICKY:
        assert loaded.encode(text) == bpe_tok.encode(text)
        assert hf.encode(text).ids == bpe_tok.encode(text)


def test_bpe_vocab_too_small():
    with pytest.raises(ConfigError, match="257"):
        BPETokenizer.train(["abc"], vocab_size=100)


# ---------------------------------------------------------------- train / load


def test_train_tokenizer_kinds(tmp_path):
    char = train_tokenizer(TokenizerConfig(kind="char"), ["hello"])
    assert isinstance(char, CharTokenizer) and char.chars == ["e", "h", "l", "o"]
    bpe = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), [SAMPLE[:5000]])
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size <= 300
    with pytest.raises(ConfigError, match="char, bpe"):
        train_tokenizer(TokenizerConfig(kind="wordpiece"), ["hello"])
    char.save(tmp_path / "tok.json")
    again = train_tokenizer(TokenizerConfig(kind="bpe", path=str(tmp_path / "tok.json")), ["ignored"])
    assert isinstance(again, CharTokenizer) and again.chars == char.chars


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="not found.*missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_tokenizer(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(DataError, match="unknown tokenizer format"):
        load_tokenizer(other)
