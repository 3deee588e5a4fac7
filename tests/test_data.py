import json

import numpy as np
import pytest
import torch

from lmlab.data import (
    BUNDLED_SHAKESPEARE,
    TokenData,
    iter_eval_batches,
    iter_file_chunks,
    iter_text,
    list_text_files,
    n_windows,
    random_blocks,
)
from lmlab.errors import ConfigError, DataError
from lmlab.tokenizers import BPETokenizer, CharTokenizer

SAMPLE = BUNDLED_SHAKESPEARE.read_text(encoding="utf-8")[:20_000]


@pytest.fixture
def corpus(tmp_path):
    """A folder with two non-empty .txt files (one nested), an empty one and a non-.txt file."""
    root = tmp_path / "corpus"
    (root / "b_dir").mkdir(parents=True)
    (root / "a.txt").write_text(SAMPLE[:7000], encoding="utf-8")
    (root / "b_dir" / "c.txt").write_text("你好，世界 🙂👍🏽\n" + SAMPLE[7000:12000], encoding="utf-8")
    (root / "empty.txt").write_text("")
    (root / "notes.md").write_text("not text data")
    return root


def full_text(root) -> str:
    return "\n\n".join(p.read_text(encoding="utf-8") for p in list_text_files(root))


class CountingTokenizer(CharTokenizer):
    calls = 0

    def encode(self, text):
        CountingTokenizer.calls += 1
        return super().encode(text)


# ---------------------------------------------------------------- files and streaming


def test_list_text_files(corpus):
    files = list_text_files(corpus)
    assert [p.relative_to(corpus).as_posix() for p in files] == ["a.txt", "b_dir/c.txt"]
    assert list_text_files(corpus / "a.txt") == [corpus / "a.txt"]
    assert list_text_files(None) == [BUNDLED_SHAKESPEARE]


def test_list_text_files_errors(tmp_path):
    with pytest.raises(DataError, match="not found.*nope"):
        list_text_files(tmp_path / "nope")
    (tmp_path / "x.md").write_text("hi")
    with pytest.raises(DataError, match="no .txt files"):
        list_text_files(tmp_path)
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        list_text_files(tmp_path)
    with pytest.raises(DataError, match="e.txt is empty"):
        list_text_files(tmp_path / "e.txt")


def test_iter_text_streams_in_bounded_chunks(corpus):
    chunks = list(iter_text(corpus, chunk_chars=500))
    assert "".join(chunks) == full_text(corpus)
    assert len(chunks) > 20
    assert max(len(c) for c in chunks) <= 1000


def test_chunk_cuts_keep_bpe_tokens_stable(tmp_path):
    bpe = BPETokenizer.train([SAMPLE], vocab_size=400)
    text = SAMPLE[:8000] + "  a  \n\n\n  b\n \n" * 30 + "x" * 700 + " y. " * 50
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    chunks = list(iter_file_chunks(path, chunk_chars=300))
    assert len(chunks) > 10 and "".join(chunks) == text
    streamed = [i for c in chunks for i in bpe.encode(c)]
    assert streamed == bpe.encode(text)


# ---------------------------------------------------------------- TokenData


def test_build_split_and_meta(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    tok = CharTokenizer.train([SAMPLE])
    data = TokenData.build(path, tok, tmp_path / "cache", val_fraction=0.1)
    n = len(SAMPLE)
    assert data.n_tokens == n
    assert isinstance(data.train, np.memmap) and isinstance(data.val, np.memmap)
    assert data.tokens.dtype == np.uint16
    assert len(data.train) == int(n * 0.9) and len(data.train) + len(data.val) == n
    assert tok.decode(data.train) == SAMPLE[: int(n * 0.9)]
    assert tok.decode(data.val) == SAMPLE[int(n * 0.9) :]
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["n_tokens"] == n
    assert meta["sources"][0]["size"] == path.stat().st_size
    assert meta["tokenizer"]["vocab_size"] == tok.vocab_size

    reopened = TokenData.open(tmp_path / "cache")
    assert np.array_equal(reopened.val, data.val)
    assert len(TokenData.open(tmp_path / "cache", val_fraction=0.5).val) == n - int(n * 0.5)


def test_streamed_build_equals_one_shot(corpus, tmp_path):
    text = full_text(corpus)
    tok = CharTokenizer.train([SAMPLE])  # no CJK / emoji: those take the byte fallback
    data = TokenData.build(corpus, tok, tmp_path / "cache", chunk_chars=257)
    assert data.tokens.tolist() == tok.encode(text)
    assert tok.decode(data.tokens) == text


def test_bpe_build_separates_documents_with_eos(corpus, tmp_path):
    tok = BPETokenizer.train(iter_text(corpus), vocab_size=350)
    data = TokenData.build(corpus, tok, tmp_path / "cache", chunk_chars=400)
    texts = [p.read_text(encoding="utf-8") for p in list_text_files(corpus)]
    assert data.tokens.tolist() == tok.encode(texts[0]) + [tok.eos_id] + tok.encode(texts[1])


def test_cache_reuse_and_invalidation(corpus, tmp_path):
    tok = CountingTokenizer.train([SAMPLE])
    cache = tmp_path / "cache"
    TokenData.build(corpus, tok, cache)
    calls = CountingTokenizer.calls
    assert calls > 0
    again = TokenData.build(corpus, tok, cache, val_fraction=0.2)
    assert CountingTokenizer.calls == calls  # reused: nothing re-encoded
    assert again.val_fraction == 0.2 and TokenData.open(cache).val_fraction == 0.2

    (corpus / "a.txt").write_text("changed text", encoding="utf-8")
    changed = TokenData.build(corpus, tok, cache)
    assert CountingTokenizer.calls > calls
    assert tok.decode(changed.tokens).startswith("changed text\n\n")

    other = CharTokenizer.train(["abc"])  # another tokenizer invalidates the cache too
    assert TokenData.build(corpus, other, cache).meta["tokenizer"]["vocab_size"] == other.vocab_size


def test_uint32_for_large_vocab(tmp_path):
    class BigVocab:
        vocab_size = 70_000
        eos_id = None

        def encode(self, text):
            return [65_536 + ord(c) % 1000 for c in text]

    path = tmp_path / "t.txt"
    path.write_text("hello world", encoding="utf-8")
    data = TokenData.build(path, BigVocab(), tmp_path / "cache")
    assert data.tokens.dtype == np.uint32
    assert data.tokens.tolist() == BigVocab().encode("hello world")


def test_open_errors(tmp_path):
    with pytest.raises(DataError, match="no token cache"):
        TokenData.open(tmp_path)
    path = tmp_path / "t.txt"
    path.write_text(SAMPLE[:1000], encoding="utf-8")
    tok = CharTokenizer.train([SAMPLE])
    TokenData.build(path, tok, tmp_path / "cache")
    with open(tmp_path / "cache" / "tokens.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="truncated"):
        TokenData.open(tmp_path / "cache")
    assert TokenData.build(path, tok, tmp_path / "cache").n_tokens == 1000  # a broken cache is rebuilt
    with pytest.raises(ConfigError, match="val_fraction"):
        TokenData.build(path, tok, tmp_path / "cache", val_fraction=1.0)


def test_too_short_split(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(SAMPLE[:1000], encoding="utf-8")
    data = TokenData.build(path, CharTokenizer.train([SAMPLE]), tmp_path / "cache")
    data.check_block_size(99)  # val has exactly 100 tokens
    with pytest.raises(
        DataError, match=r"validation split has 100 tokens.*block_size=100 needs at least 101"
    ):
        data.check_block_size(100)
    with pytest.raises(DataError, match="train split has 900 tokens"):
        data.check_block_size(2000)


# ---------------------------------------------------------------- batches


def test_random_blocks():
    arr = np.arange(1000, dtype=np.uint16)
    x, y = random_blocks(arr, 5, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # contiguous windows of arange, shifted by one
    x2, _ = random_blocks(arr, 5, 16, torch.Generator().manual_seed(0))
    x3, _ = random_blocks(arr, 5, 16, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    with pytest.raises(DataError, match="too few"):
        random_blocks(arr[:16], 1, 16, torch.Generator())


@pytest.mark.parametrize("n", [2, 17, 33, 34, 100])
def test_eval_windows_cover_every_token_once(n):
    arr = (np.arange(n) * 7 % 101).astype(np.uint16)
    batches = list(iter_eval_batches(arr, block_size=8, batch_size=3))
    xs = torch.cat([x.reshape(-1) for x, _ in batches])
    ys = torch.cat([y.reshape(-1) for _, y in batches])
    assert xs.tolist() == arr[:-1].tolist() and ys.tolist() == arr[1:].tolist()
    assert sum(x.shape[0] for x, _ in batches) == n_windows(n, 8) == -(-(n - 1) // 8)
    assert all(x.shape[0] <= 3 for x, _ in batches)


def test_invalid_utf8_is_replaced(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok \xff\xfe end\r\nline")
    assert "".join(iter_text(path)) == "ok \ufffd\ufffd end\nline"
