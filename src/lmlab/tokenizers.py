"""Tokenizers: characters with UTF-8 byte fallback, and byte-level BPE (GPT-2 style).

Both round-trip any Unicode text exactly and share one small protocol: ``vocab_size``, ``eos_id``,
``encode``, ``encode_batch``, ``decode``, ``token_to_str``, ``save`` / ``to_str`` (a ``tokenizer.json``).
``train_tokenizer`` builds one from a config and a stream of text; ``load_tokenizer`` reads either back.

Ids that are not in the vocabulary (e.g. sampled from a model whose embedding table is padded past
``vocab_size``) decode to U+FFFD instead of raising.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmlab.config import TokenizerConfig
from lmlab.errors import ConfigError, DataError

EOS_TOKEN = "<|endoftext|>"
TOKENIZER_KINDS = ("char", "bpe")
_EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>")
_REPLACEMENT = "\ufffd"


def _as_list(ids: Any) -> list[int]:
    """Accept a list, numpy array or torch tensor of ids."""
    return ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]


class CharTokenizer:
    """One token per character seen in training, then 256 byte tokens ``<0x00>``..``<0xFF>``.

    A character outside the vocabulary is encoded as its UTF-8 bytes, so any text round-trips.
    """

    def __init__(self, chars: Sequence[str]):
        chars = sorted(set(chars))
        if any(len(c) != 1 for c in chars):
            raise DataError("CharTokenizer: every vocabulary entry must be a single character")
        self.chars: list[str] = chars
        self.n_chars = len(chars)
        self.vocab_size: int = self.n_chars + 256
        self.eos_id: int | None = None
        self._codepoints = np.array([ord(c) for c in chars], dtype="<u4")  # sorted, like chars
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        """The vocabulary is the sorted set of characters of the (streamed) texts."""
        seen: set[str] = set()
        for chunk in texts:
            seen.update(chunk)
        return cls(sorted(seen))

    def _fallback(self, ch: str) -> list[int]:
        return [self.n_chars + b for b in ch.encode("utf-8", "surrogatepass")]

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        if self.n_chars == 0:
            pos = np.zeros(len(cps), dtype=np.int64)
            hit = np.zeros(len(cps), dtype=bool)
        else:
            pos = np.minimum(np.searchsorted(self._codepoints, cps), self.n_chars - 1)
            hit = self._codepoints[pos] == cps
        ids = pos.tolist()
        if hit.all():
            return ids
        out: list[int] = []
        start = 0
        for i in np.flatnonzero(~hit).tolist():  # characters outside the vocabulary: UTF-8 bytes
            out.extend(ids[start:i])
            out.extend(self._fallback(text[i]))
            start = i + 1
        out.extend(ids[start:])
        return out

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Any) -> str:
        ids = _as_list(ids)
        if not ids:
            return ""
        if min(ids) >= 0 and max(ids) < self.n_chars:  # fast path: no byte tokens
            cps = self._codepoints[np.asarray(ids, dtype=np.int64)]
            return cps.tobytes().decode("utf-32-le", "surrogatepass")
        out: list[str] = []
        pending = bytearray()
        for i in ids:
            if 0 <= i < self.n_chars:
                if pending:
                    out.append(pending.decode("utf-8", "replace"))
                    pending.clear()
                out.append(self.chars[i])
            elif self.n_chars <= i < self.vocab_size:
                pending.append(i - self.n_chars)
            else:
                if pending:
                    out.append(pending.decode("utf-8", "replace"))
                    pending.clear()
                out.append(_REPLACEMENT)
        if pending:
            out.append(pending.decode("utf-8", "replace"))
        return "".join(out)

    def token_to_str(self, token_id: int) -> str:
        """The character, or ``<0xAB>`` for a byte token."""
        if 0 <= token_id < self.n_chars:
            return self.chars[token_id]
        if self.n_chars <= token_id < self.vocab_size:
            return f"<0x{token_id - self.n_chars:02X}>"
        raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")

    def to_str(self) -> str:
        return json.dumps(
            {"type": "lmlab-char", "chars": self.chars, "byte_fallback": True}, ensure_ascii=False
        )

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_str(), encoding="utf-8")

    def __repr__(self) -> str:
        return f"CharTokenizer(n_chars={self.n_chars}, vocab_size={self.vocab_size})"


class BPETokenizer:
    """Byte-level BPE (ByteLevel pre-tokenizer and decoder, ``<|endoftext|>``), a thin wrapper of
    a Hugging Face ``tokenizers.Tokenizer``; ``save`` writes the standard HF ``tokenizer.json``."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_id: int | None = None
        for name in _EOS_CANDIDATES:
            if (tid := tokenizer.token_to_id(name)) is not None:
                self.eos_id = tid
                break

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Train on an iterator of text chunks (streamed: the corpus need not fit in memory)."""
        if vocab_size < 257:
            raise ConfigError(
                f"tokenizer.vocab_size={vocab_size} is too small for bpe: it needs at least 257 "
                "(256 bytes + <|endoftext|>)"
            )
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> BPETokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Any) -> str:
        ids = _as_list(ids)
        if all(0 <= i < self.vocab_size for i in ids):
            return self.tokenizer.decode(ids, skip_special_tokens=False)
        # HF silently drops unknown ids; show them as U+FFFD instead.
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if 0 <= i < self.vocab_size:
                run.append(i)
            else:
                parts.append(self.tokenizer.decode(run, skip_special_tokens=False) if run else "")
                parts.append(_REPLACEMENT)
                run = []
        parts.append(self.tokenizer.decode(run, skip_special_tokens=False) if run else "")
        return "".join(parts)

    def token_to_str(self, token_id: int) -> str:
        """The token's text, or its raw byte-level form (e.g. 'Ġ' pieces) if it is a partial character."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        if _REPLACEMENT in text or not text:
            return self.tokenizer.id_to_token(token_id) or text
        return text

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id})"


AnyTokenizer = CharTokenizer | BPETokenizer


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> AnyTokenizer:
    """Train a tokenizer of ``cfg.kind`` on ``texts``, or load ``cfg.path`` when it is set."""
    if cfg.path:
        return load_tokenizer(cfg.path)
    if cfg.kind == "char":
        return CharTokenizer.train(texts)
    if cfg.kind == "bpe":
        return BPETokenizer.train(texts, cfg.vocab_size)
    raise ConfigError(f"unknown tokenizer.kind '{cfg.kind}'; valid kinds: {', '.join(TOKENIZER_KINDS)}")


def load_tokenizer(path: str | Path) -> AnyTokenizer:
    """Read a tokenizer.json written by either tokenizer (or any HF tokenizer.json, wrapped as BPE).

    ``path`` may also be a directory holding a ``tokenizer.json`` (e.g. a run directory).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"tokenizer file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read tokenizer {path}: {e}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a tokenizer.json (expected a JSON object)")
    if raw.get("type") == "lmlab-char":
        chars = raw.get("chars")
        if not isinstance(chars, list):
            raise DataError(f"{path}: lmlab-char tokenizer without a 'chars' list")
        return CharTokenizer(chars)
    if "model" in raw:
        try:
            return BPETokenizer.from_file(path)
        except Exception as e:  # the HF parser raises plain Exception subclasses
            raise DataError(f"cannot load Hugging Face tokenizer {path}: {e}") from None
    raise DataError(
        f"{path}: unknown tokenizer format (neither lmlab-char nor a Hugging Face tokenizer.json)"
    )
