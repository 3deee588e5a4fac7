"""BERT pretraining data: documents -> sentences -> WordPiece ids (cached) -> pairs -> masked batches.

Reading. ``data.path`` is a text file or a folder searched recursively for ``*.txt`` and ``*.txt.gz``
(sorted paths). Files are read as UTF-8 (a BOM dropped, invalid bytes become U+FFFD, CRLF -> LF).
A Project Gutenberg header and footer are stripped (``strip_gutenberg``).

Documents and sentences (a simple rule, ``split_documents``). A blank line ends a paragraph; a run of
two or more blank lines ends a *section* (chapters and headings in books); a file is made of sections.
A section of fewer than ``MIN_SECTION_SENTENCES`` sentences (a heading, a table of contents line) is
merged into the next one (the last into the previous one), and each section is then a *document*.
A paragraph's lines are joined with spaces and cut into sentences after ``.`` ``!`` ``?`` (and any
closing quotes or brackets) followed by a space and an upper-case letter, a digit or an opening
quote, except after a single capital (an initial) or a common abbreviation (Mr., Mrs., Dr., St., ...);
a sentence never crosses a paragraph.

Cache. ``PretrainingCorpus.build`` tokenizes every sentence once (no [CLS]/[SEP]) and writes
``out_dir/tokens.npy`` (all ids, uint16 or uint32), ``sentences.npy`` (token offset of each sentence,
plus the end), ``documents.npy`` (sentence offset of each document, plus the end) and ``meta.json``;
the same files (path, size, mtime) and the same tokenizer reuse it.

Split. ``holdout_documents``: a fraction ``val_fraction`` of the documents (at least one, and at least
one left to train on), drawn from a fixed seed, so the split depends only on the data.

Pairs (``make_pairs``; BERT's ``create_pretraining_data``). Each document is walked sentence by
sentence, filling a chunk up to a target length (``max_len - 3``; with probability ``short_seq_prob``
a random length 2 .. max_len - 3, drawn afresh for each pair, where BERT draws it once per document);
the chunk is cut at a random sentence boundary into segment A and segment B. With probability
``random_next_prob`` (0.5 with next-sentence prediction, 0 without), or always when the chunk is one
sentence, B is instead a run of sentences from a random other document of the split (from a random
sentence on, up to the length left) and the unused part of the chunk goes back to the document.
The longer segment is then cut, a token at a time from a random end, until the pair fits.
``[CLS] A [SEP] B [SEP]`` with segments 0 (through the first [SEP]) then 1.

Masking (``mask_tokens``): in each sequence, ``max(1, round(mask_prob × n))`` of its ``n`` tokens
other than [CLS] / [SEP] / [PAD] are selected; of those 80% become [MASK], 10% a random token (any id
but the five specials), 10% stay; the labels are the original ids there and -100 elsewhere.

Epochs (``PretrainingBatches``). Epoch ``e`` pairs the training documents with a generator seeded by
(seed, e), shuffles the pairs, sorts windows of 50 batches by length (so a batch pads little), cuts
them into batches of ``batch_size`` pairs (dropping the remainder) and shuffles the batches. Batch
``k`` of epoch ``e`` is masked with a generator seeded by (seed, e, k). So pairs and masks are fresh
each epoch and a step's batch is a pure function of (seed, step). Validation pairs and masks are drawn
once from a fixed seed (the same for every run on the same data and tokenizer).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lmlab.data.text import BUNDLED_SHAKESPEARE
from lmlab.errors import ConfigError, DataError

_FORMAT = 1
MIN_SECTION_SENTENCES = 8
"""A section with fewer sentences is merged into the next one (see the module docstring)."""
SPLIT_SEED = 0
"""The seed of the train / validation split of the documents (data only, not train.seed)."""
VAL_SEED = 1
"""The seed of the validation pairs and masks (fixed: comparable across runs)."""
VAL_MAX_PAIRS = 10_000
"""Validation uses at most this many pairs (a fixed seeded choice), so an evaluation stays cheap."""
BUCKET_BATCHES = 50
"""Pairs are sorted by length within windows of this many batches (dynamic padding wastes little)."""
IGNORE_INDEX = -100

# -- reading ---------------------------------------------------------------------------------------


def resolve_corpus_path(path: str | Path | None) -> Path:
    """``data.path`` as an existing path: None is the bundled tiny Shakespeare; a relative path that
    does not exist from the working directory is looked up in the shared data folder
    (``$LMLAB_DATA``, else ``../shared/data``; see ``lmlab.data.parallel.default_data_root``)."""
    from lmlab.data.parallel import default_data_root

    if path is None:
        return BUNDLED_SHAKESPEARE
    p = Path(path).expanduser()
    if p.exists():
        return p.resolve()
    if not p.is_absolute():
        shared = default_data_root() / p
        if shared.exists():
            return shared.resolve()
        raise DataError(
            f"data path not found: {path} (looked in {Path.cwd()} and in the shared data folder "
            f"{default_data_root()}; set $LMLAB_DATA or data.path=DIR)"
        )
    raise DataError(f"data path not found: {path}")


def list_corpus_files(path: str | Path | None) -> list[Path]:
    """A file, or the ``*.txt`` / ``*.txt.gz`` files under a folder (recursive, sorted), non-empty."""
    path = resolve_corpus_path(path)
    if path.is_file():
        if path.stat().st_size == 0:
            raise DataError(f"data file {path} is empty")
        return [path]
    files = sorted(
        (p for p in path.rglob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz"))),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not files:
        raise DataError(f"no .txt or .txt.gz files found under {path}")
    files = [p for p in files if p.stat().st_size > 0]
    if not files:
        raise DataError(f"data folder {path} is empty: all its .txt / .txt.gz files are empty")
    return files


def read_text(file: str | Path) -> str:
    """A UTF-8 text file (``.gz``: gzip), without a BOM, with LF line endings."""
    file = Path(file)
    try:
        if file.name.endswith(".gz"):
            with gzip.open(file, "rt", encoding="utf-8-sig", errors="replace") as f:
                return f.read()
        with open(file, encoding="utf-8-sig", errors="replace") as f:
            return f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {file}: {e}") from None


_PG_START = re.compile(r"^\W*START OF (THE|THIS) PROJECT GUTENBERG", re.I)
_PG_END = re.compile(
    r"^\W*END OF (THE|THIS) PROJECT GUTENBERG|^\W*End of (the )?Project Gutenberg|"
    r"^\W*START\W*THE SMALL PRINT",
    re.I,
)
_PG_MENTION = re.compile(r"Project Gutenberg", re.I)


def strip_gutenberg(text: str) -> str:
    """The text between a Project Gutenberg header and footer (other text is returned unchanged).

    The book starts after the ``*** START OF THE/THIS PROJECT GUTENBERG EBOOK ...`` line and ends
    before the first ``*** END OF ...`` / ``End of (the) Project Gutenberg ...`` line after it. An
    old-style "Etext" whose first line mentions Project Gutenberg but which has no START line starts
    after the paragraph holding the last mention of Project Gutenberg in its first 200 lines (at most
    its first half), and ends at the first later line mentioning Project Gutenberg.
    """
    lines = text.split("\n")
    start = next((i + 1 for i, line in enumerate(lines) if _PG_START.match(line)), None)
    old_style = False
    if start is None:
        first = next((line for line in lines if line.strip()), "")
        if not _PG_MENTION.search(first):
            return text
        old_style = True
        head = lines[: max(1, min(200, len(lines) // 2))]
        last = max(i for i, line in enumerate(head) if _PG_MENTION.search(line))
        start = last + 1
        while start < len(lines) and lines[start].strip():  # the rest of that paragraph
            start += 1
    end = len(lines)
    for i in range(start, len(lines)):
        if _PG_END.match(lines[i]) or (old_style and _PG_MENTION.search(lines[i])):
            end = i
            break
    return "\n".join(lines[start:end])


_ABBREVIATIONS = frozenset(
    "Mr Mrs Ms Dr St Mme Mlle Messrs Jr Sr Prof Rev Capt Col Gen Lt Sgt Hon Gov Sen Rep Esq Mt Ft".split()
)
_SENTENCE_END = re.compile(r"""[.!?]+["'”’)\]]*(?=\s+["'“‘(\[_]*[A-Z0-9])""")


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph (its lines joined with single spaces); see the module docstring."""
    text = " ".join(paragraph.split())
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if text[m.start()] == ".":
            space = text.rfind(" ", start, m.start())
            word = text[space + 1 if space >= 0 else start : m.start()].lstrip("\"'“‘([_")
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                continue
        out.append(text[start : m.end()])
        start = m.end() + 1
    if start < len(text):
        out.append(text[start:])
    return [s for s in (s.strip() for s in out) if s]


def split_documents(text: str) -> list[list[str]]:
    """The documents of one file's (cleaned) text, each a list of sentences (see the module docstring)."""
    sections: list[list[str]] = []
    section: list[str] = []
    paragraph: list[str] = []
    blank = 0

    def end_paragraph() -> None:
        if paragraph:
            section.extend(split_sentences(" ".join(paragraph)))
            paragraph.clear()

    for line in text.split("\n"):
        if not line.strip():
            blank += 1
            end_paragraph()
            continue
        if blank >= 2 and section:
            sections.append(section)
            section = []
        blank = 0
        paragraph.append(line)
    end_paragraph()
    if section:
        sections.append(section)
    docs: list[list[str]] = []
    pending: list[str] = []
    for sec in sections:
        pending = pending + sec
        if len(pending) >= MIN_SECTION_SENTENCES:
            docs.append(pending)
            pending = []
    if pending:
        if docs:
            docs[-1].extend(pending)
        else:
            docs.append(pending)
    return docs


def read_documents(path: str | Path | None) -> list[list[str]]:
    """All documents of the corpus at ``path`` (files in sorted order, sections in file order)."""
    docs: list[list[str]] = []
    for file in list_corpus_files(path):
        docs.extend(split_documents(strip_gutenberg(read_text(file))))
    if not docs:
        raise DataError(f"no text found in {path}: every file is empty or blank")
    return docs


def holdout_documents(
    n_docs: int, val_fraction: float, where: Any = "the corpus"
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) document indices, sorted: a seeded ``val_fraction`` of them held out (at least one)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if n_docs < 2:
        raise DataError(
            f"{where} holds {n_docs} document(s); masked-LM pretraining holds whole documents out for "
            f"validation, so it needs at least 2 (a document is a file, or a section of one after two or "
            f"more blank lines, of at least {MIN_SECTION_SENTENCES} sentences)"
        )
    n_val = min(max(1, round(n_docs * val_fraction)), n_docs - 1)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n_docs)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# -- the token cache -------------------------------------------------------------------------------


def _sources(files: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for p in files:
        st = p.stat()
        out.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _tokenizer_info(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": int(tokenizer.vocab_size),
        "sha256": hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest(),
    }


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


class PretrainingCorpus:
    """Tokenized documents: ``tokens`` (all ids), ``sentences`` (token offsets, n_sentences + 1) and
    ``documents`` (sentence offsets, n_documents + 1). Build and cache with ``build``; in memory with
    ``from_documents``."""

    def __init__(
        self,
        tokens: np.ndarray,
        sentences: np.ndarray,
        documents: np.ndarray,
        source_docs: np.ndarray | None = None,
        n_source_docs: int | None = None,
    ) -> None:
        self.tokens = tokens
        self.sentences = np.asarray(sentences, dtype=np.int64)
        self.documents = np.asarray(documents, dtype=np.int64)
        if len(self.documents) < 1 or self.documents[-1] != len(self.sentences) - 1:
            raise DataError("corrupt pretraining corpus: document offsets do not match the sentences")
        if self.sentences[-1] != len(self.tokens):
            raise DataError("corrupt pretraining corpus: sentence offsets do not match the tokens")
        n = len(self.documents) - 1
        self.source_docs = np.arange(n) if source_docs is None else np.asarray(source_docs, dtype=np.int64)
        """The index of each document among the documents read (before empty ones were dropped)."""
        self.n_source_docs = n if n_source_docs is None else int(n_source_docs)
        if len(self.source_docs) != n:
            raise DataError("corrupt pretraining corpus: source document ids do not match the documents")

    @property
    def n_documents(self) -> int:
        return len(self.documents) - 1

    def split(self, val_fraction: float, where: Any = "the corpus") -> tuple[np.ndarray, np.ndarray]:
        """(train, val) document indices: ``holdout_documents`` over the documents as read, so a
        document dropped for having no tokens does not move the split."""
        train, val = holdout_documents(self.n_source_docs, val_fraction, where)
        is_val = np.isin(self.source_docs, val)
        train_docs, val_docs = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        if len(train_docs) == 0 or len(val_docs) == 0:
            raise DataError(f"{where}: no {'training' if len(train_docs) == 0 else 'validation'} documents")
        return train_docs, val_docs

    def __repr__(self) -> str:
        return (f"PretrainingCorpus(documents={self.n_documents}, sentences={len(self.sentences) - 1}, "
                f"tokens={len(self.tokens)})")

    @classmethod
    def from_documents(
        cls, docs: Iterable[Sequence[str]], tokenizer: Any, chunk: int = 8192
    ) -> PretrainingCorpus:
        """Tokenize the sentences of ``docs`` (no special tokens); sentences with no tokens and
        documents with no sentences are dropped."""
        dtype = np.uint16 if tokenizer.vocab_size < 65536 else np.uint32
        pieces: list[np.ndarray] = []
        sent_lens: list[int] = []
        buffer: list[str] = []
        doc_sizes: list[int] = []

        def flush() -> None:
            if not buffer:
                return
            encoded = tokenizer.encode_batch(buffer, add_special_tokens=False)
            lens = [len(ids) for ids in encoded]
            flat = [i for ids in encoded for i in ids]
            pieces.append(np.asarray(flat, dtype=dtype))
            sent_lens.extend(lens)
            buffer.clear()

        for doc in docs:
            buffer.extend(doc)
            doc_sizes.append(len(doc))
            if len(buffer) >= chunk:
                flush()
        flush()
        lens = np.asarray(sent_lens, dtype=np.int64)
        # drop empty sentences, then empty documents
        doc_of_sentence = np.repeat(np.arange(len(doc_sizes)), doc_sizes)
        keep = lens > 0
        per_doc = np.bincount(doc_of_sentence[keep], minlength=len(doc_sizes))
        source_docs = np.flatnonzero(per_doc > 0)
        lens = lens[keep]
        sentences = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        documents = np.concatenate([[0], np.cumsum(per_doc[source_docs])]).astype(np.int64)
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
        return cls(tokens, sentences, documents, source_docs, len(doc_sizes))

    @classmethod
    def open(cls, out_dir: str | Path) -> PretrainingCorpus:
        out_dir = Path(out_dir)
        try:
            meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
            tokens = np.load(out_dir / "tokens.npy", mmap_mode="r")
            sentences = np.load(out_dir / "sentences.npy")
            documents = np.load(out_dir / "documents.npy")
            source_docs = np.load(out_dir / "source_docs.npy")
            n_source = int(meta["n_source_documents"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"corrupt or missing pretraining cache in {out_dir}: {e}") from None
        return cls(tokens, sentences, documents, source_docs, n_source)

    @staticmethod
    def cached(out_dir: str | Path, files: Sequence[Path], tokenizer: Any) -> PretrainingCorpus | None:
        """The cache in ``out_dir`` if it was built from these files with this tokenizer, else None."""
        meta_path = Path(out_dir) / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if (
            meta.get("format") != _FORMAT
            or meta.get("sources") != _sources(files)
            or meta.get("tokenizer") != _tokenizer_info(tokenizer)
            or meta.get("min_section_sentences") != MIN_SECTION_SENTENCES
        ):
            return None
        try:
            return PretrainingCorpus.open(out_dir)
        except DataError:
            return None

    def save(self, out_dir: str | Path, files: Sequence[Path], tokenizer: Any) -> None:
        """Write the cache (meta.json last, so a half-written cache is never reused)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "meta.json").unlink(missing_ok=True)
        _save_npy(out_dir / "tokens.npy", np.asarray(self.tokens))
        _save_npy(out_dir / "sentences.npy", self.sentences)
        _save_npy(out_dir / "documents.npy", self.documents)
        _save_npy(out_dir / "source_docs.npy", self.source_docs)
        meta = {
            "format": _FORMAT,
            "kind": "mlm-pretraining",
            "n_tokens": int(len(self.tokens)),
            "n_sentences": int(len(self.sentences) - 1),
            "n_documents": self.n_documents,
            "n_source_documents": self.n_source_docs,
            "min_section_sentences": MIN_SECTION_SENTENCES,
            "sources": _sources(files),
            "tokenizer": _tokenizer_info(tokenizer),
        }
        tmp = out_dir / f"meta.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp, out_dir / "meta.json")


# -- pairs -----------------------------------------------------------------------------------------


class Pairs(NamedTuple):
    """Sentence pairs as token ranges of a corpus: A = tokens[a_lo:a_hi], B = tokens[b_lo:b_hi]
    (B may be empty without next-sentence prediction); ``is_random`` is 1 where B is a random segment."""

    a_lo: np.ndarray
    a_hi: np.ndarray
    b_lo: np.ndarray
    b_hi: np.ndarray
    is_random: np.ndarray

    def __len__(self) -> int:
        return len(self.a_lo)

    @property
    def lengths(self) -> np.ndarray:
        """Sequence lengths with [CLS] and the [SEP]s."""
        lb = self.b_hi - self.b_lo
        return (self.a_hi - self.a_lo) + lb + 2 + (lb > 0)

    def take(self, idx: Any) -> Pairs:
        return Pairs(*(a[idx] for a in self))


def _truncate(la: int, lb: int, max_tokens: int) -> tuple[int, int]:
    """How many tokens to cut from A and from B (BERT: from the longer one, B when equal)."""
    excess = la + lb - max_tokens
    if excess <= 0:
        return 0, 0
    ra = rb = 0
    first = min(excess, abs(la - lb))
    if la > lb:
        ra = first
    else:
        rb = first
    rest = excess - first
    rb += (rest + 1) // 2
    ra += rest // 2
    return ra, rb


def make_pairs(
    corpus: PretrainingCorpus,
    doc_ids: Sequence[int] | np.ndarray,
    rng: np.random.Generator,
    max_len: int,
    short_seq_prob: float = 0.1,
    random_next_prob: float = 0.5,
) -> Pairs:
    """BERT's sentence pairs from the documents ``doc_ids`` of ``corpus`` (see the module docstring)."""
    max_tokens = max_len - 3
    if max_tokens < 2:
        raise ConfigError(f"the pretraining sequence length {max_len} is too short (need at least 5)")
    sent = corpus.sentences.tolist()
    docs_off = corpus.documents.tolist()
    doc_ids = [int(d) for d in doc_ids]
    n_split = len(doc_ids)
    out: list[tuple[int, int, int, int, int]] = []
    rand = rng.random
    integers = rng.integers
    for pos, d in enumerate(doc_ids):
        s_lo, s_hi = docs_off[d], docs_off[d + 1]
        target = max_tokens if rand() >= short_seq_prob else int(integers(2, max_tokens + 1))
        chunk_start, i, length = s_lo, s_lo, 0
        while i < s_hi:
            length += sent[i + 1] - sent[i]
            if i == s_hi - 1 or length >= target:
                n = i + 1 - chunk_start
                a_end = chunk_start + (int(integers(1, n)) if n >= 2 else 1)
                a_lo, a_hi = sent[chunk_start], sent[a_end]
                if (n == 1 and random_next_prob > 0) or rand() < random_next_prob:
                    is_random = 1
                    target_b = max(1, target - (a_hi - a_lo))
                    if n_split > 1:
                        j = int(integers(n_split - 1))
                        r = doc_ids[j + 1 if j >= pos else j]
                    else:  # a one-document split: a random place in the same document
                        r = d
                    r_lo, r_hi = docs_off[r], docs_off[r + 1]
                    k = int(integers(r_lo, r_hi))
                    b_lo = sent[k]
                    while k < r_hi:
                        k += 1
                        if sent[k] - b_lo >= target_b:
                            break
                    b_hi = sent[k]
                    i = a_end - 1  # the unused sentences of the chunk go back to the document
                else:
                    is_random = 0
                    b_lo, b_hi = sent[a_end], sent[i + 1]
                ra, rb = _truncate(a_hi - a_lo, b_hi - b_lo, max_tokens)
                if ra:
                    front = int(rng.binomial(ra, 0.5))
                    a_lo, a_hi = a_lo + front, a_hi - (ra - front)
                if rb:
                    front = int(rng.binomial(rb, 0.5))
                    b_lo, b_hi = b_lo + front, b_hi - (rb - front)
                out.append((a_lo, a_hi, b_lo, b_hi, is_random))
                chunk_start, length = i + 1, 0
                target = max_tokens if rand() >= short_seq_prob else int(integers(2, max_tokens + 1))
            i += 1
    arr = np.asarray(out, dtype=np.int64).reshape(-1, 5)
    return Pairs(*(arr[:, c].copy() for c in range(5)))


# -- batches ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecialIds:
    """The WordPiece ids masking needs, and the ids a random replacement is drawn from."""

    pad: int
    cls: int
    sep: int
    mask: int
    vocab_size: int
    specials: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: Any) -> SpecialIds:
        ids = {name: getattr(tokenizer, f"{name}_id", None) for name in ("pad", "cls", "sep", "mask")}
        missing = [f"[{k.upper()}]" for k, v in ids.items() if v is None]
        if missing:
            raise ConfigError(
                f"masked-LM pretraining needs a WordPiece tokenizer with [PAD] [CLS] [SEP] [MASK]; this "
                f"{type(tokenizer).__name__} lacks {', '.join(missing)} (set tokenizer.kind=wordpiece)"
            )
        unk = getattr(tokenizer, "unk_id", None)
        specials = tuple(sorted(set(ids.values()) | ({unk} if unk is not None else set())))
        return cls(vocab_size=int(tokenizer.vocab_size), specials=specials, **ids)

    @property
    def normal_ids(self) -> np.ndarray:
        keep = np.ones(self.vocab_size, dtype=bool)
        keep[list(self.specials)] = False
        return np.flatnonzero(keep)


class MaskedBatch(NamedTuple):
    """A batch of pairs as (B, T) tensors; ``labels`` holds the original id at the selected positions
    and -100 elsewhere; ``next_sentence_label`` (B,) is 0 where B follows A, 1 where it is random."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    next_sentence_label: torch.Tensor

    def rows(self, idx: Any) -> MaskedBatch:
        """The rows ``idx`` of the batch, cut to their longest sequence."""
        t = int(self.attention_mask[idx].sum(1).max()) if len(self.attention_mask[idx]) else 0
        return MaskedBatch(*(x[idx, :t] for x in self[:4]), self.next_sentence_label[idx])


def assemble(tokens: np.ndarray, pairs: Pairs, special: SpecialIds) -> tuple[np.ndarray, ...]:
    """``[CLS] A [SEP] B [SEP]`` for each pair, padded: (ids, types, attention, maskable), each (B, T)."""
    lengths = pairs.lengths
    b, t = len(pairs), int(lengths.max()) if len(pairs) else 0
    ids = np.full((b, t), special.pad, dtype=np.int64)
    types = np.zeros((b, t), dtype=np.int64)
    maskable = np.zeros((b, t), dtype=bool)
    for r, (a_lo, a_hi, b_lo, b_hi, _) in enumerate(zip(*pairs)):
        la, lb = a_hi - a_lo, b_hi - b_lo
        ids[r, 0] = special.cls
        ids[r, 1 : 1 + la] = tokens[a_lo:a_hi]
        ids[r, 1 + la] = special.sep
        maskable[r, 1 : 1 + la] = True
        if lb:
            ids[r, 2 + la : 2 + la + lb] = tokens[b_lo:b_hi]
            ids[r, 2 + la + lb] = special.sep
            types[r, 2 + la : 3 + la + lb] = 1
            maskable[r, 2 + la : 2 + la + lb] = True
    attention = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    return ids, types, attention, maskable


def mask_tokens(
    ids: np.ndarray,
    maskable: np.ndarray,
    rng: np.random.Generator,
    special: SpecialIds,
    mask_prob: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking of (B, T) ``ids`` where ``maskable`` -> (inputs, labels); see the module docstring."""
    n_cand = maskable.sum(1)
    k = np.minimum(np.maximum(1, np.floor(n_cand * mask_prob + 0.5)), n_cand).astype(np.int64)
    scores = np.where(maskable, rng.random(ids.shape), 2.0)
    rank = np.empty_like(ids)
    order = np.argsort(scores, axis=1, kind="stable")
    np.put_along_axis(rank, order, np.arange(ids.shape[1])[None, :].repeat(len(ids), 0), axis=1)
    selected = rank < k[:, None]
    u = rng.random(ids.shape)
    normal = special.normal_ids
    random_ids = normal[rng.integers(len(normal), size=ids.shape)]
    inputs = np.where(selected & (u < 0.8), special.mask, ids)
    inputs = np.where(selected & (u >= 0.8) & (u < 0.9), random_ids, inputs)
    labels = np.where(selected, ids, IGNORE_INDEX)
    return inputs, labels


def masked_batch(
    tokens: np.ndarray, pairs: Pairs, special: SpecialIds, rng: np.random.Generator, mask_prob: float
) -> MaskedBatch:
    """Assemble and mask ``pairs`` (rows sorted by length, longest first, so a split pads little)."""
    order = np.argsort(-pairs.lengths, kind="stable")
    pairs = pairs.take(order)
    ids, types, attention, maskable = assemble(tokens, pairs, special)
    inputs, labels = mask_tokens(ids, maskable, rng, special, mask_prob)
    return MaskedBatch(
        torch.from_numpy(inputs),
        torch.from_numpy(types),
        torch.from_numpy(attention),
        torch.from_numpy(labels),
        torch.from_numpy(pairs.is_random.copy()),
    )


class PretrainingBatches:
    """Training batches of BERT pairs for each step, and the fixed validation set (see the module
    docstring). ``train_docs`` / ``val_docs``: document indices of ``corpus``."""

    def __init__(
        self,
        corpus: PretrainingCorpus,
        train_docs: Sequence[int] | np.ndarray,
        val_docs: Sequence[int] | np.ndarray,
        special: SpecialIds,
        max_len: int,
        seed: int,
        mask_prob: float = 0.15,
        short_seq_prob: float = 0.1,
        next_sentence: bool = True,
    ) -> None:
        if not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"data.mask_prob must be in (0, 1), got {mask_prob}")
        if not 0.0 <= short_seq_prob <= 1.0:
            raise ConfigError(f"data.short_seq_prob must be in [0, 1], got {short_seq_prob}")
        self.corpus = corpus
        self.train_docs = np.asarray(train_docs, dtype=np.int64)
        self.val_docs = np.asarray(val_docs, dtype=np.int64)
        self.special = special
        self.max_len = max_len
        self.seed = seed
        self.mask_prob = mask_prob
        self.short_seq_prob = short_seq_prob
        self.random_next_prob = 0.5 if next_sentence else 0.0
        self._n_pairs: list[int] = []  # pairs in epoch e
        self._epoch: tuple[tuple[int, int], Pairs, list[np.ndarray]] | None = None
        self._global: tuple[tuple[int, int], MaskedBatch] | None = None
        self._val: MaskedBatch | None = None

    def epoch_pairs(self, epoch: int) -> Pairs:
        """The training pairs of ``epoch`` (in document order)."""
        rng = np.random.default_rng([self.seed, 1, epoch])
        return make_pairs(self.corpus, self.train_docs, rng, self.max_len, self.short_seq_prob,
                          self.random_next_prob)

    def _n_steps(self, n_pairs: int, batch_size: int) -> int:
        return max(1, n_pairs // batch_size)

    def epoch_plan(self, epoch: int, batch_size: int) -> tuple[Pairs, list[np.ndarray]]:
        """(pairs, batches) of ``epoch``: each batch an array of ``batch_size`` pair indices."""
        key = (epoch, batch_size)
        if self._epoch is not None and self._epoch[0] == key:
            return self._epoch[1], self._epoch[2]
        pairs = self.epoch_pairs(epoch)
        n = len(pairs)
        if n == 0:
            raise DataError("the training documents give no sentence pairs")
        while len(self._n_pairs) <= epoch:  # (only when asked for an epoch out of order)
            self._n_pairs.append(-1)
        self._n_pairs[epoch] = n
        rng = np.random.default_rng([self.seed, 2, epoch])
        order = rng.permutation(n)
        if n < batch_size:  # a tiny corpus: one batch, the pairs repeated
            order = np.resize(order, batch_size)
        lengths = pairs.lengths
        window = batch_size * BUCKET_BATCHES
        for lo in range(0, len(order), window):
            part = order[lo : lo + window]
            order[lo : lo + window] = part[np.argsort(lengths[part], kind="stable")]
        n_steps = self._n_steps(len(order), batch_size)
        batches = [order[k * batch_size : (k + 1) * batch_size] for k in range(n_steps)]
        batches = [batches[k] for k in rng.permutation(n_steps)]
        self._epoch = (key, pairs, batches)
        return pairs, batches

    def locate(self, step: int, batch_size: int) -> tuple[int, int]:
        """(epoch, batch index in the epoch) of ``step``."""
        epoch, first = 0, 0
        while True:
            if epoch >= len(self._n_pairs) or self._n_pairs[epoch] < 0:
                self.epoch_plan(epoch, batch_size)
            n_steps = self._n_steps(max(self._n_pairs[epoch], batch_size), batch_size)
            if step < first + n_steps:
                return epoch, step - first
            first += n_steps
            epoch += 1

    def steps_per_epoch(self, batch_size: int, epoch: int = 0) -> int:
        self.epoch_plan(epoch, batch_size)
        return self._n_steps(max(self._n_pairs[epoch], batch_size), batch_size)

    def global_batch(self, step: int, batch_size: int) -> MaskedBatch:
        """The whole batch of ``batch_size`` pairs of ``step`` (rows longest first)."""
        key = (step, batch_size)
        if self._global is not None and self._global[0] == key:
            return self._global[1]
        epoch, k = self.locate(step, batch_size)
        pairs, batches = self.epoch_plan(epoch, batch_size)
        rng = np.random.default_rng([self.seed, 3, epoch, k])
        batch = masked_batch(self.corpus.tokens, pairs.take(batches[k]), self.special, rng, self.mask_prob)
        self._global = (key, batch)
        return batch

    def val_pairs(self) -> Pairs:
        """The validation pairs (fixed; at most ``VAL_MAX_PAIRS``)."""
        rng = np.random.default_rng([VAL_SEED, 1])
        pairs = make_pairs(self.corpus, self.val_docs, rng, self.max_len, self.short_seq_prob,
                           self.random_next_prob)
        if len(pairs) > VAL_MAX_PAIRS:
            pick = np.random.default_rng([VAL_SEED, 2]).choice(len(pairs), VAL_MAX_PAIRS, replace=False)
            keep = np.sort(pick)
            pairs = pairs.take(keep)
        return pairs

    def val_set(self) -> MaskedBatch:
        """All validation pairs as one masked batch with fixed masks (rows longest first)."""
        if self._val is None:
            pairs = self.val_pairs()
            if len(pairs) == 0:
                raise DataError("the validation documents give no sentence pairs")
            self._val = masked_batch(self.corpus.tokens, pairs, self.special,
                                     np.random.default_rng([VAL_SEED, 3]), self.mask_prob)
        return self._val

    def val_batches(self, batch_size: int) -> Iterator[MaskedBatch]:
        """The validation set in batches of ``batch_size`` pairs of similar length (deterministic)."""
        val = self.val_set()
        n = len(val.next_sentence_label)
        for lo in range(0, n, batch_size):
            yield val.rows(slice(lo, min(n, lo + batch_size)))


def iter_training_text(docs: Sequence[Sequence[str]], train_docs: Iterable[int]) -> Iterator[str]:
    """The training documents' text, one document (its sentences a line each) at a time."""
    for d in train_docs:
        yield "\n".join(docs[int(d)])


__all__ = [
    "MaskedBatch",
    "Pairs",
    "PretrainingBatches",
    "PretrainingCorpus",
    "SpecialIds",
    "assemble",
    "holdout_documents",
    "iter_training_text",
    "list_corpus_files",
    "make_pairs",
    "mask_tokens",
    "masked_batch",
    "read_documents",
    "read_text",
    "resolve_corpus_path",
    "split_documents",
    "split_sentences",
    "strip_gutenberg",
]
