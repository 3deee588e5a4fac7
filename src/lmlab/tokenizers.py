"""Tokenizers: characters with UTF-8 byte fallback, and byte-level BPE (GPT-2 style).

Both round-trip any Unicode text exactly and share one small protocol: ``vocab_size``, ``eos_id``,
``encode``, ``encode_batch``, ``decode``, ``token_to_str``, ``save`` / ``to_str`` (a ``tokenizer.json``).
``train_tokenizer`` builds one from a config and a stream of text; ``load_tokenizer`` reads either back.

Ids that are not in the vocabulary (e.g. sampled from a model whose embedding table is padded past
``vocab_size``) decode to U+FFFD instead of raising.

``WordPieceTokenizer`` is BERT's (lowercasing and accent stripping when uncased, so it does not
round-trip text); its ``encode`` adds [CLS] / [SEP] and takes an optional second sentence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from lmlab.config import TokenizerConfig
from lmlab.errors import ConfigError, DataError

EOS_TOKEN = "<|endoftext|>"
TOKENIZER_KINDS = ("char", "bpe")
_EOS_CANDIDATES = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>")
_REPLACEMENT = "\ufffd"
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # BERT's, ids 0..4 when trained


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



def _hf_decode(tok: Tokenizer, ids: list[int], vocab_size: int, skip_special_tokens: bool, sep: str) -> str:
    """``tok.decode(ids)``, except that ids outside the vocabulary show as U+FFFD (HF silently drops
    them); the decoded runs between them are joined with ``sep``."""
    if all(0 <= i < vocab_size for i in ids):
        return tok.decode(ids, skip_special_tokens=skip_special_tokens)
    parts: list[str] = []
    run: list[int] = []
    for i in ids:
        if 0 <= i < vocab_size:
            run.append(i)
            continue
        if run:
            parts.append(tok.decode(run, skip_special_tokens=skip_special_tokens))
            run = []
        parts.append(_REPLACEMENT)
    if run:
        parts.append(tok.decode(run, skip_special_tokens=skip_special_tokens))
    return sep.join(parts)

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
        return _hf_decode(self.tokenizer, _as_list(ids), self.vocab_size, skip_special_tokens=False, sep="")

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


class WordPieceTokenizer:
    """BERT's WordPiece (uncased or cased), a thin wrapper of a Hugging Face ``tokenizers.Tokenizer``:
    BertNormalizer, BertPreTokenizer, WordPiece with ``##`` continuations, and the post-processor
    ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` (segments 0 then 1).

    Unlike the other tokenizers, ``encode`` adds [CLS] / [SEP] by default (as BERT expects);
    ``encode_padded`` gives the padded (input_ids, token_type_ids, attention_mask) tensors a batch needs.
    """

    def __init__(self, tokenizer: Tokenizer):
        tokenizer.no_padding()  # padding and truncation are the caller's business (encode_padded)
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eos_id: int | None = None
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            tokenizer.token_to_id(t) for t in WORDPIECE_SPECIALS
        )
        normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
        self.lowercase: bool = bool(normalizer.get("lowercase", False))

    @staticmethod
    def _assemble(
        model: models.WordPiece, lowercase: bool, strip_accents: bool | None = None, chinese: bool = True
    ) -> Tokenizer:
        tok = Tokenizer(model)
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=chinese, strip_accents=strip_accents, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        return tok

    @staticmethod
    def _add_post_processor(tok: Tokenizer) -> Tokenizer:
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise DataError("a WordPiece vocabulary needs the [CLS] and [SEP] tokens")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return tok

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, lowercase: bool = True) -> WordPieceTokenizer:
        """Train on an iterator of text chunks; ids 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK]."""
        if vocab_size <= len(WORDPIECE_SPECIALS):
            raise ConfigError(f"tokenizer.vocab_size={vocab_size} is too small for wordpiece")
        tok = cls._assemble(models.WordPiece(unk_token="[UNK]"), lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(WORDPIECE_SPECIALS), show_progress=False
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(cls._add_post_processor(tok))

    @classmethod
    def from_file(cls, path: str | Path) -> WordPieceTokenizer:
        """A ``tokenizer.json`` (e.g. a Hugging Face BERT's)."""
        return cls(Tokenizer.from_file(str(path)))

    @classmethod
    def from_vocab(
        cls,
        path: str | Path,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        handle_chinese_chars: bool = True,
    ) -> WordPieceTokenizer:
        """BERT's ``vocab.txt`` (one token a line, the line number its id), built as transformers builds
        it; ``lowercase`` is the tokenizer_config's ``do_lower_case`` (strip_accents None: as lowercase)."""
        with open(path, encoding="utf-8") as f:
            vocab = {token.rstrip("\n"): i for i, token in enumerate(f.readlines())}
        tok = cls._assemble(
            models.WordPiece(vocab, unk_token="[UNK]"), lowercase, strip_accents, handle_chinese_chars
        )
        present = [t for t in WORDPIECE_SPECIALS if t in vocab]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in present])
        return cls(cls._add_post_processor(tok))

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, pair, add_special_tokens=add_special_tokens).ids

    def encode_with_types(self, text: str, pair: str | None = None) -> tuple[list[int], list[int]]:
        """(ids, token_type_ids) of ``[CLS] text [SEP]`` or ``[CLS] text [SEP] pair [SEP]``."""
        e = self.tokenizer.encode(text, pair)
        return e.ids, e.type_ids

    def encode_batch(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, add_special_tokens: bool = True
    ) -> list[list[int]]:
        inputs: list[Any] = list(texts) if pairs is None else list(zip(texts, pairs, strict=True))
        return [e.ids for e in self.tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)]

    def encode_padded(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, max_length: int | None = None
    ) -> dict[str, Any]:
        """A batch as torch tensors (B, T): ``input_ids`` (padded with [PAD]), ``token_type_ids`` and
        ``attention_mask`` (1 at real tokens), each sequence cut to ``max_length`` tokens if given
        (the longer of a pair first, keeping [CLS] / [SEP])."""
        import torch

        inputs: list[Any] = list(texts) if pairs is None else list(zip(texts, pairs, strict=True))
        if max_length:
            self.tokenizer.enable_truncation(max_length)
        try:
            encs = self.tokenizer.encode_batch(inputs)
        finally:
            self.tokenizer.no_truncation()
        t = max((len(e.ids) for e in encs), default=0)
        ids = torch.full((len(encs), t), self.pad_id or 0, dtype=torch.long)
        types = torch.zeros((len(encs), t), dtype=torch.long)
        mask = torch.zeros((len(encs), t), dtype=torch.long)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = torch.tensor(e.ids, dtype=torch.long)
            types[i, :n] = torch.tensor(e.type_ids, dtype=torch.long)
            mask[i, :n] = 1
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (``##`` pieces joined to the previous word); unknown ids show as U+FFFD."""
        return _hf_decode(self.tokenizer, _as_list(ids), self.vocab_size, skip_special_tokens, sep=" ")

    def token_to_str(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return self.tokenizer.id_to_token(token_id) or ""

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


AnyTokenizer = CharTokenizer | BPETokenizer | WordPieceTokenizer


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> AnyTokenizer:
    """Train a tokenizer of ``cfg.kind`` on ``texts``, or load ``cfg.path`` when it is set."""
    if cfg.path:
        return load_tokenizer(cfg.path)
    if cfg.kind == "char":
        return CharTokenizer.train(texts)
    if cfg.kind == "bpe":
        return BPETokenizer.train(texts, cfg.vocab_size)
    if cfg.kind == "wordpiece":
        raise ConfigError(
            "tokenizer.kind 'wordpiece' is BERT's (family bert: masked-LM pretraining and fine-tuning train "
            f"it themselves); language models and translation train one of: {', '.join(TOKENIZER_KINDS)}"
        )
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
    if isinstance(raw.get("model"), dict) and raw["model"].get("type") == "WordPiece":
        try:
            return WordPieceTokenizer.from_file(path)
        except Exception as e:  # the HF parser raises plain Exception subclasses
            raise DataError(f"cannot load WordPiece tokenizer {path}: {e}") from None
    if "model" in raw:
        try:
            return BPETokenizer.from_file(path)
        except Exception as e:  # the HF parser raises plain Exception subclasses
            raise DataError(f"cannot load Hugging Face tokenizer {path}: {e}") from None
    raise DataError(
        f"{path}: unknown tokenizer format (neither lmlab-char nor a Hugging Face tokenizer.json)"
    )
