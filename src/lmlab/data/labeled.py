"""Labelled data for fine-tuning an encoder: sentence classification (one sentence or a pair) and
token tagging (BIO tags, CoNLL files), encoded for BERT, in length-bucketed batches.

Three steps:

* Reading: ``LabeledTexts`` (texts, optional second texts, labels) from a tab-separated file, and
  ``TaggedSentences`` (words and their tags) from a CoNLL-style file (``token TAB tag`` a line; any
  whitespace-only line ends a sentence; ``-DOCSTART-`` lines are skipped). The bundled datasets
  (``DATASETS``: sst2, rte, mrpc, wnut17 in ``../shared/data`` or ``$LMLAB_DATA``) are read with
  their own column layouts; ``files`` reads your own (``data.train_file`` / ``valid_file`` /
  ``test_file``). A label outside the label set is a ConfigError naming the label, the file and the line.
* Encoding (``encode_classification`` / ``encode_tagging``) with the run's WordPiece tokenizer:
  ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` with segment ids 0 / 1. A tagged word's tag goes to
  its first sub-token; the other sub-tokens (and [CLS] / [SEP]) get ``IGNORE`` (-100) and count for
  nothing. Sequences longer than ``max_len`` tokens are truncated (the longer text of a pair first),
  and a warning gives how many; a word cut off (or one the tokenizer turns into nothing, e.g. a lone
  zero-width character) is predicted ``O`` when scoring.
* Batches: ``epoch_batches`` shuffles the examples with (seed, epoch), sorts pools of 50 batches by
  length and cuts them into batches, then shuffles the batches, so each batch holds sequences of
  similar length (little padding) while every epoch differs. ``collate`` pads a batch only to its
  own longest sequence (dynamic padding).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.errors import ConfigError, DataError

IGNORE = -100
"""The label of positions that count for nothing (padding, [CLS]/[SEP], non-first sub-tokens)."""

POOL_BATCHES = 50
"""Batches per length-sorting pool of ``epoch_batches``."""

SPLITS = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "dev": "valid",
    "validation": "valid",
    "test": "test",
}


# ---------------------------------------------------------------------------------------------------
# the bundled datasets
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A bundled dataset: its task, folder, files and label set."""

    name: str
    task: str
    """'classification' or 'tagging'."""
    folder: str
    """Its folder under the shared data root."""
    files: dict[str, str]
    """split (train, valid, test) -> file name."""
    labels: tuple[str, ...]
    """The label set as written in the files (tagging: the tags, O first)."""
    names: dict[str, str] = field(default_factory=dict)
    """File label -> the name shown to users (default: the label itself)."""
    positive: str | None = None
    """The positive class (a file label) whose F1 is reported (MRPC)."""
    columns: tuple[int, int | None, int] = (0, None, 1)
    """Classification: the columns of text, second text (None: single sentences) and label."""
    unlabeled: dict[str, str] = field(default_factory=dict)
    """split -> why it cannot be scored (GLUE withholds the test labels)."""

    def label_names(self) -> list[str]:
        return [self.names.get(label, label) for label in self.labels]


def _bio(types: Sequence[str]) -> tuple[str, ...]:
    return ("O", *[f"{p}-{t}" for t in types for p in ("B", "I")])


DATASETS: dict[str, DatasetSpec] = {
    "sst2": DatasetSpec(
        "sst2",
        "classification",
        "sst2",
        {"train": "train.tsv", "valid": "dev.tsv"},
        ("0", "1"),
        names={"0": "negative", "1": "positive"},
        columns=(0, None, 1),
        unlabeled={"test": "SST-2's test split has no labels (GLUE withholds them): use --split dev"},
    ),
    "rte": DatasetSpec(
        "rte",
        "classification",
        "rte",
        {"train": "train.tsv", "valid": "dev.tsv"},
        ("entailment", "not_entailment"),
        columns=(1, 2, 3),
        unlabeled={"test": "RTE's test split has no labels (GLUE withholds them): use --split dev"},
    ),
    "mrpc": DatasetSpec(
        "mrpc",
        "classification",
        "mrpc",
        {"train": "train.tsv", "valid": "dev.tsv", "test": "msr_paraphrase_test.txt"},
        ("0", "1"),
        names={"0": "not_equivalent", "1": "equivalent"},
        positive="1",
        columns=(3, 4, 0),
    ),
    "wnut17": DatasetSpec(
        "wnut17",
        "tagging",
        "wnut17",
        {"train": "wnut17train.conll", "valid": "emerging.dev.conll", "test": "emerging.test.annotated"},
        _bio(("corporation", "creative-work", "group", "location", "person", "product")),
    ),
}
DATASET_NAMES = (*DATASETS, "files")


def dataset_task(name: str) -> str | None:
    """'classification' or 'tagging' for a bundled dataset; None for 'files' (either)."""
    return DATASETS[name].task if name in DATASETS else None


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------


@dataclass
class LabeledTexts:
    """Classification examples: ``text[i]`` (and ``text2[i]`` for pairs) has label ``labels[i]``
    (as written in the file); ``lines[i]`` is its line number in ``source``."""

    text: list[str]
    text2: list[str] | None
    labels: list[str]
    lines: list[int]
    source: str = ""
    n_empty_skipped: int = 0

    def __len__(self) -> int:
        return len(self.text)

    def select(self, index: Sequence[int]) -> LabeledTexts:
        pick = list(index)
        return LabeledTexts(
            [self.text[i] for i in pick],
            None if self.text2 is None else [self.text2[i] for i in pick],
            [self.labels[i] for i in pick],
            [self.lines[i] for i in pick],
            self.source,
        )


@dataclass
class TaggedSentences:
    """Tagging examples: sentence ``i`` is ``words[i]`` with tags ``tags[i]``; ``lines[i]`` is the
    line of its first word in ``source``."""

    words: list[list[str]]
    tags: list[list[str]]
    lines: list[int]
    source: str = ""

    def __len__(self) -> int:
        return len(self.words)

    def select(self, index: Sequence[int]) -> TaggedSentences:
        pick = list(index)
        return TaggedSentences(
            [self.words[i] for i in pick],
            [self.tags[i] for i in pick],
            [self.lines[i] for i in pick],
            self.source,
        )


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _unknown_label(label: str, path: Any, line: int, labels: Sequence[str]) -> ConfigError:
    shown = ", ".join(repr(x) for x in labels[:20]) + (" ..." if len(labels) > 20 else "")
    return ConfigError(f"{path}, line {line}: label {label!r} is not in the label set ({shown})")


def check_labels(data: LabeledTexts | TaggedSentences, labels: Sequence[str]) -> None:
    """ConfigError naming the first label of ``data`` outside ``labels``, with its file and line."""
    valid = set(labels)
    if isinstance(data, LabeledTexts):
        for label, line in zip(data.labels, data.lines):
            if label not in valid:
                raise _unknown_label(label, data.source, line, labels)
        return
    for tags, line in zip(data.tags, data.lines):
        for k, tag in enumerate(tags):
            if tag not in valid:
                raise _unknown_label(tag, data.source, _tag_line(data, line, k), labels)


def _tag_line(data: TaggedSentences, first_line: int, k: int) -> int:
    """The line of word ``k`` of the sentence starting at ``first_line`` (words are one a line)."""
    return first_line + k


_HEADER_TEXT = ("text", "sentence", "sentence1", "text_a", "text1", "question", "premise", "#1 string")
_HEADER_TEXT2 = ("text2", "sentence2", "text_b", "pair", "hypothesis", "#2 string")


def read_labeled_tsv(
    path: str | Path,
    columns: tuple[int, int | None, int] | None = None,
    header: bool | None = None,
) -> LabeledTexts:
    """Classification examples from a tab-separated UTF-8 file (a BOM is ignored; quotes are plain
    characters). ``columns``: (text, second text or None, label) column indices. Without them, a
    header line naming a ``label`` column (and ``text`` / ``sentence``, optionally ``text2`` /
    ``sentence2``) picks the columns; without a header, two columns are ``text TAB label`` and three
    ``text TAB text2 TAB label``. ``header``: whether the first line is a header (None: a header when it
    names a ``label`` column, or always with ``columns``). Rows with an empty text are skipped (counted);
    a row with too few columns is a DataError naming the file and line."""
    path = Path(path)
    lines = _lines(_read_text(path))
    if not lines:
        raise DataError(f"{path} is empty")
    first = [c.strip().lower() for c in lines[0].split("\t")]
    has_header = header if header is not None else (columns is not None or "label" in first)
    start = 1 if has_header else 0
    if columns is None:
        if has_header:
            if "label" not in first:
                raise DataError(f"{path}: the header line names no 'label' column ({lines[0]!r})")
            label_col = first.index("label")
            text_col = next((first.index(n) for n in _HEADER_TEXT if n in first), None)
            if text_col is None:
                others = [i for i in range(len(first)) if i != label_col]
                if not others:
                    raise DataError(f"{path}: the header line names no text column")
                text_col = others[0]
            text2_col = next((first.index(n) for n in _HEADER_TEXT2 if n in first), None)
        else:
            width = len(lines[0].split("\t"))
            if width == 2:
                text_col, text2_col, label_col = 0, None, 1
            elif width == 3:
                text_col, text2_col, label_col = 0, 1, 2
            else:
                raise DataError(
                    f"{path}, line 1: expected 'text TAB label' or 'text TAB text2 TAB label' (or a header "
                    f"line naming the columns), got {width} columns"
                )
        columns = (text_col, text2_col, label_col)
    text_col, text2_col, label_col = columns
    need = max(c for c in columns if c is not None) + 1
    text: list[str] = []
    text2: list[str] | None = [] if text2_col is not None else None
    labels: list[str] = []
    where: list[int] = []
    skipped = 0
    for n, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < need:
            raise DataError(
                f"{path}, line {n}: expected at least {need} tab-separated columns, got {len(cols)}"
            )
        a = cols[text_col].strip()
        b = cols[text2_col].strip() if text2_col is not None else ""
        if not a or (text2 is not None and not b):
            skipped += 1
            continue
        text.append(a)
        if text2 is not None:
            text2.append(b)
        labels.append(cols[label_col].strip())
        where.append(n)
    if not text:
        raise DataError(f"{path}: no examples")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} rows with an empty text", stacklevel=2)
    return LabeledTexts(text, text2, labels, where, str(path), skipped)


def read_conll(path: str | Path) -> TaggedSentences:
    """Tagged sentences from a CoNLL-style file: one ``token TAB tag`` a line (without a TAB, the
    first and last whitespace-separated fields; with more columns, e.g. CoNLL-2003's POS and chunk
    columns, the first and the last); any whitespace-only line ends a sentence; ``-DOCSTART-`` lines
    are skipped. A line with a single field is a DataError naming the file and line."""
    path = Path(path)
    words: list[list[str]] = []
    tags: list[list[str]] = []
    first_lines: list[int] = []
    cur_w: list[str] = []
    cur_t: list[str] = []
    start = 0

    def flush() -> None:
        nonlocal cur_w, cur_t
        if cur_w:
            words.append(cur_w)
            tags.append(cur_t)
            first_lines.append(start)
        cur_w, cur_t = [], []

    for n, line in enumerate(_lines(_read_text(path)), 1):
        if not line.strip():
            flush()
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2 or not cols[0] or not cols[-1]:
            raise DataError(f"{path}, line {n}: expected 'token TAB tag', got {line!r}")
        if not cur_w:
            start = n
        cur_w.append(cols[0])
        cur_t.append(cols[-1])
    flush()
    if not words:
        raise DataError(f"{path}: no tagged sentences")
    # Words are one a line from the sentence's first line, so the line of word k is start + k.
    return TaggedSentences(words, tags, first_lines, str(path))


def default_root(dataset: str, root: str | None) -> Path:
    """The folder of a bundled dataset: ``root`` if given, else $LMLAB_DATA/<folder> or
    ../shared/data/<folder>."""
    from lmlab.data.parallel import default_data_root

    if root:
        return Path(root).expanduser()
    return default_data_root() / DATASETS[dataset].folder


def split_name(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; valid: train, dev (valid), test")
    return SPLITS[split]


def load_labeled_split(
    data: Any, split: str, task: str = "classification"
) -> LabeledTexts | TaggedSentences | None:
    """The examples of ``split`` (train, valid / dev, test) of a fine-tuning data config
    (``lmlab.config.DataConfig``: dataset, root, train_file / valid_file / test_file), or None for a
    ``files`` split without a file (valid: a held-out part of train; test: none). ``task`` says how
    to read your own files (tagging: CoNLL; classification: TSV). Labels are not checked here
    (``check_labels``)."""
    split = split_name(split)
    name = data.dataset
    if name in DATASETS:
        spec = DATASETS[name]
        if split in spec.unlabeled:
            raise DataError(spec.unlabeled[split])
        base = default_root(name, data.root)
        path = base / spec.files[split]
        if not path.is_file():
            raise DataError(
                f"{spec.name} not found: {path} does not exist. Pass data.root=DIR (the folder holding "
                f"{spec.files['train']}), or set LMLAB_DATA to the folder holding {spec.folder}/"
            )
        if spec.task == "tagging":
            return read_conll(path)
        return read_labeled_tsv(path, columns=spec.columns, header=True)
    if name != "files":
        raise ConfigError(f"unknown data.dataset '{name}'; valid: {', '.join(DATASET_NAMES)}")
    path = getattr(data, f"{split}_file", None)
    if not path:
        return None
    return read_for_task(Path(path), task)


def read_for_task(path: str | Path, task: str) -> LabeledTexts | TaggedSentences:
    """A user file read as the task expects: CoNLL tagged sentences for tagging, TSV otherwise."""
    return read_conll(path) if task == "tagging" else read_labeled_tsv(path)


def label_set(train: LabeledTexts | TaggedSentences) -> list[str]:
    """The labels of a training split, sorted (tagging: O first, then by type, B- before I-)."""
    if isinstance(train, LabeledTexts):
        return sorted(set(train.labels))
    seen = {t for sentence in train.tags for t in sentence}

    def key(tag: str) -> tuple[int, str, str]:
        if tag == "O":
            return (0, "", "")
        prefix, _, etype = tag.partition("-")
        return (1, etype or prefix, prefix if etype else "")

    return sorted(seen, key=key)


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a seeded ``fraction`` of ``n`` examples (at least 1) held out."""
    n_val = min(max(1, round(n * fraction)), n - 1)
    if n_val < 1:
        raise DataError(
            f"{n} training example(s): too few to hold out a validation split (give data.valid_file)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ---------------------------------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """Encoded examples as flat arrays: example ``i`` is ``ids[offsets[i]:offsets[i+1]]`` with segment
    ids ``types[...]``. Classification: ``labels[i]`` is its class. Tagging: ``labels[...]`` (aligned
    with ``ids``) holds the tag of each word's first sub-token and IGNORE elsewhere, and sentence
    ``i``'s word ``k`` sits at position ``word_pos[word_offsets[i] + k]`` of its sequence (-1 when it
    was cut off or has no sub-token)."""

    ids: np.ndarray
    types: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    pad_id: int
    n_truncated: int = 0
    word_pos: np.ndarray | None = None
    word_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def tagging(self) -> bool:
        return self.word_pos is not None

    def words_of(self, i: int) -> np.ndarray:
        assert self.word_pos is not None and self.word_offsets is not None
        return self.word_pos[self.word_offsets[i] : self.word_offsets[i + 1]]


def _special_ids(tokenizer: Any) -> tuple[int, int, int]:
    ids = tuple(getattr(tokenizer, k, None) for k in ("cls_id", "sep_id", "pad_id"))
    if None in ids or not hasattr(tokenizer, "tokenizer"):
        raise ConfigError(
            f"fine-tuning needs BERT's WordPiece tokenizer with [CLS], [SEP] and [PAD], not "
            f"{type(tokenizer).__name__}"
        )
    return ids  # type: ignore[return-value]


def _check_max_len(max_len: int, pair: bool) -> None:
    if max_len < (4 if pair else 3):
        raise ConfigError(f"data.max_len={max_len} leaves no room for text besides [CLS] / [SEP]")


def _truncate_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths of a pair cut to ``budget`` tokens, the longer text first (as transformers' longest_first)."""
    excess = la + lb - budget
    if excess <= 0:
        return la, lb
    if la >= lb:
        cut = min(excess, la - lb)
        la, excess = la - cut, excess - cut
    else:
        cut = min(excess, lb - la)
        lb, excess = lb - cut, excess - cut
    return la - (excess + 1) // 2, lb - excess // 2


def _warn_truncated(n: int, total: int, max_len: int, source: str, what: str) -> None:
    if n:
        where = f"{source}: " if source else ""
        warnings.warn(
            f"{where}{n} of {total} {what} are longer than data.max_len={max_len} tokens and were truncated",
            stacklevel=3,
        )


def encode_classification(
    data: LabeledTexts, tokenizer: Any, labels: Sequence[str], max_len: int, warn: bool = True
) -> Encoded:
    """``[CLS] text [SEP]`` (or ``[CLS] text [SEP] text2 [SEP]``, segments 0 then 1), cut to ``max_len``
    tokens; ``labels`` is the label set (a label outside it is a ConfigError with its file and line)."""
    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    pair = data.text2 is not None
    _check_max_len(max_len, pair)
    check_labels(data, labels)
    index = {label: k for k, label in enumerate(labels)}
    hf = tokenizer.tokenizer
    a_ids = [e.ids for e in hf.encode_batch(data.text, add_special_tokens=False)]
    b_ids = [e.ids for e in hf.encode_batch(data.text2, add_special_tokens=False)] if pair else None
    seqs: list[list[int]] = []
    segs: list[int] = []  # length of segment 0 per example
    truncated = 0
    for i, a in enumerate(a_ids):
        if b_ids is None:
            if len(a) > max_len - 2:
                a = a[: max_len - 2]
                truncated += 1
            seq = [cls_id, *a, sep_id]
            segs.append(len(seq))
        else:
            b = b_ids[i]
            la, lb = _truncate_pair(len(a), len(b), max_len - 3)
            if (la, lb) != (len(a), len(b)):
                truncated += 1
            seq = [cls_id, *a[:la], sep_id, *b[:lb], sep_id]
            segs.append(la + 2)
        seqs.append(seq)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
    pos = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)
    types = (pos >= np.repeat(np.asarray(segs, dtype=np.int64), lengths)).astype(np.int8)
    y = np.asarray([index[label] for label in data.labels], dtype=np.int64)
    if warn:
        _warn_truncated(truncated, len(seqs), max_len, data.source, "examples")
    return Encoded(ids, types, offsets, y, pad_id, truncated)


def encode_words(
    sentences: Sequence[Sequence[str]], tokenizer: Any, max_len: int
) -> tuple[list[list[int]], list[list[int]], int]:
    """Pre-split words -> (token ids ``[CLS] ... [SEP]`` cut to ``max_len``, each word's position (-1:
    cut off or no sub-token), the number of sentences truncated)."""
    cls_id, sep_id, _ = _special_ids(tokenizer)
    _check_max_len(max_len, False)
    encs = tokenizer.tokenizer.encode_batch(
        [list(s) for s in sentences], is_pretokenized=True, add_special_tokens=False
    )
    all_ids, all_pos, truncated = [], [], 0
    for words, e in zip(sentences, encs):
        ids = e.ids
        if len(ids) > max_len - 2:
            ids = ids[: max_len - 2]
            truncated += 1
        pos = [-1] * len(words)
        for t, w in enumerate(e.word_ids[: len(ids)]):
            if w is not None and pos[w] < 0:
                pos[w] = t + 1  # after [CLS]
        all_ids.append([cls_id, *ids, sep_id])
        all_pos.append(pos)
    return all_ids, all_pos, truncated


def encode_tagging(
    data: TaggedSentences, tokenizer: Any, labels: Sequence[str], max_len: int, warn: bool = True
) -> Encoded:
    """``[CLS] sub-tokens [SEP]`` per sentence, the tag on each word's first sub-token, cut to ``max_len``."""
    _, _, pad_id = _special_ids(tokenizer)
    check_labels(data, labels)
    index = {label: k for k, label in enumerate(labels)}
    seqs, positions, truncated = encode_words(data.words, tokenizer, max_len)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
    y = np.full(int(offsets[-1]), IGNORE, dtype=np.int64)
    for i, (pos, tags) in enumerate(zip(positions, data.tags)):
        base = int(offsets[i])
        for p, tag in zip(pos, tags):
            if p >= 0:
                y[base + p] = index[tag]
    n_words = np.fromiter((len(p) for p in positions), dtype=np.int64, count=len(positions))
    word_offsets = np.zeros(len(positions) + 1, dtype=np.int64)
    np.cumsum(n_words, out=word_offsets[1:])
    word_pos = np.fromiter((p for ps in positions for p in ps), dtype=np.int64, count=int(word_offsets[-1]))
    if warn:
        _warn_truncated(truncated, len(seqs), max_len, data.source, "sentences")
    return Encoded(
        ids, np.zeros(len(ids), dtype=np.int8), offsets, y, pad_id, truncated, word_pos, word_offsets
    )


# ---------------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------------


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of epoch ``epoch``: a pure function of (lengths, batch_size, seed, epoch).

    The examples are shuffled with (seed, epoch), cut into pools of ``POOL_BATCHES`` batches, each
    pool sorted by length and cut into batches of ``batch_size`` (so a batch holds similar lengths),
    and the batches are shuffled. Every epoch has ``max(1, n // batch_size)`` full batches (the few
    examples left over differ from epoch to epoch); with fewer than ``batch_size`` examples, one batch
    holds them all. Each batch is in length order.
    """
    n = len(lengths)
    if n == 0:
        raise DataError("no training examples")
    size = min(batch_size, n)
    n_batches = max(1, n // size)
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(n)[: n_batches * size]
    pool = POOL_BATCHES * size
    batches: list[np.ndarray] = []
    for lo in range(0, len(perm), pool):
        chunk = perm[lo : lo + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[k : k + size] for k in range(0, len(chunk), size))
    order = rng.permutation(len(batches))
    return [batches[k] for k in order]


def eval_batches(lengths: np.ndarray, max_tokens: int = 8192, max_sentences: int = 128) -> list[np.ndarray]:
    """Deterministic evaluation batches: indices in length order, each batch at most ``max_sentences``
    sequences and ``max_tokens`` padded tokens."""
    order = np.argsort(lengths, kind="stable")
    out: list[np.ndarray] = []
    cur: list[int] = []
    longest = 0
    for i in order.tolist():
        ln = int(lengths[i])
        if cur and (len(cur) >= max_sentences or max(longest, ln) * (len(cur) + 1) > max_tokens):
            out.append(np.asarray(cur, dtype=np.int64))
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, ln)
    if cur:
        out.append(np.asarray(cur, dtype=np.int64))
    return out


def collate(enc: Encoded, index: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """Examples ``index`` of ``enc`` padded to their longest (dynamic padding): ``input_ids``,
    ``token_type_ids``, ``attention_mask`` (1 at real tokens; None when nothing is padded, so the
    model takes its unmasked attention path), ``labels`` ((B,) or, for tagging, (B, T) with IGNORE at
    padding) and ``n_tokens`` (real tokens, an int)."""
    idx = np.asarray(index, dtype=np.int64)
    starts = enc.offsets[idx]
    lens = enc.offsets[idx + 1] - starts
    t = int(lens.max())
    pos = np.arange(t)
    real = pos[None, :] < lens[:, None]
    flat = np.minimum(starts[:, None] + pos[None, :], len(enc.ids) - 1)
    ids = np.where(real, enc.ids[flat], enc.pad_id).astype(np.int64)
    types = np.where(real, enc.types[flat], 0).astype(np.int64)
    if enc.tagging:
        labels = torch.from_numpy(np.where(real, enc.labels[flat], IGNORE))
    else:
        labels = torch.from_numpy(enc.labels[idx])
    padded = not bool(real.all())
    return {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(real.astype(np.int64)) if padded else None,
        "labels": labels,
        "n_tokens": int(lens.sum()),
    }


# ---------------------------------------------------------------------------------------------------
# splitting text into words (tagging raw text)
# ---------------------------------------------------------------------------------------------------

_WORD = re.compile(r"https?://\S+|[@#]?\w+(?:['’.\-]\w+)*|\S", re.UNICODE)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """``text`` cut into words as tagged corpora tokenise (``New York!`` -> New, York, !), each with its
    character span (start, end): URLs, @mentions and #hashtags stay whole, and so do words joined by
    an apostrophe, hyphen or dot; any other punctuation character is a word of its own."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "IGNORE",
    "DatasetSpec",
    "Encoded",
    "LabeledTexts",
    "TaggedSentences",
    "check_labels",
    "collate",
    "dataset_task",
    "default_root",
    "encode_classification",
    "encode_tagging",
    "encode_words",
    "epoch_batches",
    "eval_batches",
    "holdout",
    "label_set",
    "load_labeled_split",
    "read_conll",
    "read_for_task",
    "read_labeled_tsv",
    "split_words",
]
