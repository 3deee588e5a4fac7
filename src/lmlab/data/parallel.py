"""Parallel text for translation: aligned sentence pairs -> token ids -> token-budget batches.

Three steps, one class each:

* ``ParallelText``: the sentence pairs as text, read from two aligned files (line i of one is the
  translation of line i of the other; ``.gz`` files are read transparently) or from one
  tab-separated file. Pairs with an empty side are skipped and counted. Loaders for the bundled
  corpora: ``load_multi30k`` (English-German image captions) and ``load_tatoeba_cmn`` (English-Chinese).
* ``TokenPairs``: both sides encoded with a tokenizer and cut to a maximum length (with a warning
  saying how many were cut), stored as two flat id arrays with offsets.
* Batches: ``token_budget_batches`` sorts the pairs by length and fills each batch up to a token
  budget, ``max(source, target tokens) × sentences ≤ max_tokens`` (fairseq's ``--max-tokens``), so
  batches of short sentences hold many and batches of long ones few; ``collate`` pads a batch into
  a ``TranslationBatch`` with padding masks.

Special tokens: tokenizers have no padding or begin/end-of-sentence tokens, so three ids are added
after the tokenizer's vocabulary (``SpecialIds.after(vocab_size)``): pad = V, bos = V + 1, eos = V + 2,
and the model's vocabulary is V + 3. A source sentence is fed as ``x EOS``; the decoder reads
``BOS y`` and predicts ``y EOS``.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from lmlab.errors import DataError

log = logging.getLogger("lmlab")

N_SPECIAL = 3
"""Ids added after a tokenizer's vocabulary: pad, bos, eos."""

MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr", "test2016": "test_2016_flickr",
                   "test_2016_flickr": "test_2016_flickr"}


class Encoder(Protocol):
    """What encoding needs from a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class SpecialIds:
    """The padding, begin-of-sentence and end-of-sentence ids of one side's vocabulary."""

    pad: int
    bos: int
    eos: int

    @classmethod
    def after(cls, vocab_size: int) -> SpecialIds:
        """pad = V, bos = V + 1, eos = V + 2 for a tokenizer with V tokens (model vocabulary V + 3)."""
        return cls(vocab_size, vocab_size + 1, vocab_size + 2)


# ---------------------------------------------------------------------------------------------------
# Text pairs
# ---------------------------------------------------------------------------------------------------


@dataclass
class ParallelText:
    """Aligned sentence pairs: ``src[i]`` translates to ``tgt[i]``."""

    src: list[str]
    tgt: list[str]
    source: str = ""
    """Where the pairs came from (file names), for messages."""
    n_empty_skipped: int = 0
    """Pairs dropped because one side (or both) was empty."""

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            where = self.source or "parallel text"
            raise DataError(f"{where}: {len(self.src)} sources but {len(self.tgt)} targets")

    def __len__(self) -> int:
        return len(self.src)

    def select(self, index: Sequence[int] | slice) -> ParallelText:
        """The pairs at ``index`` (a slice or a list of positions)."""
        if isinstance(index, slice):
            return ParallelText(self.src[index], self.tgt[index], self.source)
        return ParallelText([self.src[i] for i in index], [self.tgt[i] for i in index], self.source)

    def reversed(self) -> ParallelText:
        """The other translation direction (target -> source)."""
        return ParallelText(self.tgt, self.src, self.source, self.n_empty_skipped)


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (``.gz`` decompressed), without line endings."""
    if not path.is_file():
        raise DataError(f"parallel data file not found: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    return [line.removesuffix("\r") for line in lines]


def _drop_empty(src: list[str], tgt: list[str], source: str) -> ParallelText:
    src = [s.strip() for s in src]
    tgt = [t.strip() for t in tgt]
    keep = [i for i, (s, t) in enumerate(zip(src, tgt)) if s and t]
    skipped = len(src) - len(keep)
    if skipped:
        log.info("%s: skipped %d pairs with an empty side", source, skipped)
        src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    if not src:
        raise DataError(f"{source}: no sentence pairs (every line is empty)")
    return ParallelText(src, tgt, source, skipped)


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> ParallelText:
    """Two aligned files, one sentence per line (``.gz`` allowed). Whitespace around a sentence is
    stripped; pairs with an empty side are skipped (counted in ``n_empty_skipped`` and logged).

    Files with different line counts are a ``DataError`` naming both files and their counts.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src, tgt = _read_lines(src_path), _read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"parallel files are not aligned: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}"
        )
    return _drop_empty(src, tgt, f"{src_path} + {tgt_path}")


def read_tsv(path: str | Path, src_column: int = 0, tgt_column: int = 1) -> ParallelText:
    """One file of tab-separated columns (extra columns allowed); ``src_column`` / ``tgt_column``
    pick the two sides. A non-empty line without enough columns is a ``DataError`` naming it."""
    path = Path(path)
    src, tgt = [], []
    need = max(src_column, tgt_column) + 1
    for n, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            src.append("")
            tgt.append("")
            continue
        cols = line.split("\t")
        if len(cols) < need:
            raise DataError(
                f"{path}, line {n}: expected at least {need} tab-separated columns, got {len(cols)}"
            )
        src.append(cols[src_column])
        tgt.append(cols[tgt_column])
    return _drop_empty(src, tgt, str(path))


def default_data_root() -> Path:
    """The shared data folder: ``$LMLAB_DATA`` if set, else ``../shared/data`` next to the repository
    (or, for an installed package, relative to the working directory)."""
    env = os.environ.get("LMLAB_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    for candidate in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "data"


def load_multi30k(
    split: str = "train",
    src_lang: str = "en",
    tgt_lang: str = "de",
    root: str | Path | None = None,
    variant: str = "raw",
) -> ParallelText:
    """Multi30k task 1 (Elliott et al., 2016): 29,000 / 1,014 / 1,000 caption pairs (train / val / test).

    ``split``: train, val or test (= test2016, ``test_2016_flickr``). ``variant``: ``raw`` (the
    original text, ``raw/<split>.<lang>.gz``) or ``tok`` (lowercased, Moses-tokenised,
    ``tok/<split>.lc.norm.tok.<lang>``). ``root`` defaults to ``default_data_root()/multi30k``.
    """
    if split not in MULTI30K_SPLITS:
        raise DataError(f"unknown Multi30k split '{split}'; valid: train, val, test")
    for lang in (src_lang, tgt_lang):
        if lang not in ("en", "de"):
            raise DataError(f"Multi30k language '{lang}' is not available here; valid: en, de")
    base = Path(root) if root is not None else default_data_root() / "multi30k"
    name = MULTI30K_SPLITS[split]
    if variant == "raw":
        paths = [base / "raw" / f"{name}.{lang}.gz" for lang in (src_lang, tgt_lang)]
    elif variant == "tok":
        paths = [base / "tok" / f"{name}.lc.norm.tok.{lang}" for lang in (src_lang, tgt_lang)]
    else:
        raise DataError(f"unknown Multi30k variant '{variant}'; valid: raw, tok")
    return read_parallel(*paths)


_CJK_START = re.compile(r"^(.*?\S)\s+([\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef].*)$")


def load_tatoeba_cmn(path: str | Path | None = None, direction: str = "en-zh") -> ParallelText:
    """Tatoeba English-Mandarin pairs (manythings.org ``cmn.txt``: English TAB Chinese TAB attribution).

    ``direction``: ``en-zh`` or ``zh-en``. Two lines of the shared copy separate the sides with
    spaces instead of a TAB; they are split where the Chinese text begins. There is no official
    split: use ``ParallelText.select`` (e.g. with a seeded permutation) for train/val/test.
    """
    if direction not in ("en-zh", "zh-en"):
        raise DataError(f"unknown direction '{direction}'; valid: en-zh, zh-en")
    path = Path(path) if path is not None else default_data_root() / "tatoeba_cmn_eng" / "cmn.txt"
    en, zh = [], []
    for n, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            en.append("")
            zh.append("")
            continue
        cols = line.split("\t")
        if len(cols) == 1 or (len(cols) == 2 and cols[1].startswith("CC-BY")):  # no TAB before the Chinese
            m = _CJK_START.match(cols[0])
            if m is None:
                raise DataError(f"{path}, line {n}: cannot find the English/Chinese boundary")
            cols = [m.group(1), m.group(2)]
        en.append(cols[0])
        zh.append(cols[1])
    text = _drop_empty(en, zh, str(path))
    return text if direction == "en-zh" else text.reversed()


TATOEBA_SPLIT_SEED = 20240601
TATOEBA_HELD_OUT = 1000
"""Distinct English sentences held out for each of valid and test (with all their translations)."""


def tatoeba_splits(
    path: str | Path | None = None,
    direction: str = "en-zh",
    seed: int = TATOEBA_SPLIT_SEED,
    n_valid: int = TATOEBA_HELD_OUT,
    n_test: int = TATOEBA_HELD_OUT,
) -> dict[str, ParallelText]:
    """A fixed train / valid / test split of the Tatoeba English-Mandarin pairs.

    Tatoeba has no official split, so this one is drawn from ``seed`` over the *distinct English
    sentences* (27,661 in the shared copy): ``n_valid`` of them go to valid and ``n_test`` to test,
    each with all of its Chinese translations, so no English sentence of valid/test occurs in
    training. With the defaults the shared ``cmn.txt`` (29,155 pairs) gives 27,046 / 1,054 / 1,055
    pairs. The split depends only on the file's content and the seed.
    """
    text = load_tatoeba_cmn(path, "en-zh")
    groups = sorted(set(text.src))
    if len(groups) <= n_valid + n_test:
        raise DataError(
            f"{text.source}: {len(groups)} distinct English sentences, too few to hold out "
            f"{n_valid} + {n_test} for valid and test"
        )
    perm = np.random.default_rng(seed).permutation(len(groups))
    which = {groups[i]: "valid" for i in perm[:n_valid]}
    which.update({groups[i]: "test" for i in perm[n_valid : n_valid + n_test]})
    index: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for i, en in enumerate(text.src):
        index[which.get(en, "train")].append(i)
    out = {}
    for name, idx in index.items():
        part = text.select(idx)
        part.source = f"{text.source} ({name} split)"
        out[name] = part if direction == "en-zh" else part.reversed()
    out["train"].n_empty_skipped = text.n_empty_skipped
    return out


SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "dev": "valid", "test": "test",
               "test2016": "test", "test_2016_flickr": "test"}
"""Split names accepted by ``load_split`` -> the canonical train / valid / test."""


def holdout_index(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) positions: a seeded ``fraction`` of ``n`` pairs (at least one) held out."""
    if n < 2:
        raise DataError(f"{n} sentence pair(s): at least 2 are needed to hold out a validation split")
    n_valid = min(n - 1, max(1, round(n * fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def load_split(data: Any, split: str) -> ParallelText:
    """The sentence pairs of ``split`` (train, valid/val, test/test2016) of a translation data config
    (``lmlab.config.DataConfig``: corpus, src_lang, tgt_lang, root, the file keys, val_fraction).

    ``files`` without validation files hold out a seeded ``val_fraction`` of the training pairs.
    A corpus that is not where it should be is a ``DataError`` naming the path and how to pass another.
    """
    if split not in SPLIT_NAMES:
        raise DataError(f"unknown split '{split}'; valid: train, valid (val), test (test2016)")
    split = SPLIT_NAMES[split]
    corpus = data.corpus
    if corpus == "multi30k":
        base = Path(data.root).expanduser() if data.root else default_data_root() / "multi30k"
        if not (base / "raw").is_dir():
            raise DataError(
                f"Multi30k not found: {base / 'raw'} does not exist. Pass data.root=DIR (the folder "
                "holding raw/train.en.gz), or set LMLAB_DATA to the folder holding multi30k/"
            )
        name = {"train": "train", "valid": "val", "test": "test"}[split]
        return load_multi30k(name, data.src_lang, data.tgt_lang, root=base)
    if corpus == "tatoeba-cmn":
        base = Path(data.root).expanduser() if data.root else default_data_root() / "tatoeba_cmn_eng"
        path = base if base.is_file() else base / "cmn.txt"
        if not path.is_file():
            raise DataError(
                f"Tatoeba English-Mandarin not found: {path} does not exist. Pass data.root=DIR (the "
                "folder holding cmn.txt), or set LMLAB_DATA to the folder holding tatoeba_cmn_eng/"
            )
        return tatoeba_splits(path, f"{data.src_lang}-{data.tgt_lang}")[split]
    if corpus != "files":
        raise DataError(f"unknown data.corpus '{corpus}'; valid: multi30k, tatoeba-cmn, files")

    def files(name: str) -> ParallelText | None:
        tsv, src, tgt = (getattr(data, f"{name}_{k}", None) for k in ("tsv", "src", "tgt"))
        if tsv:
            return read_tsv(tsv)
        if src and tgt:
            return read_parallel(src, tgt)
        return None

    if split == "test":
        test = files("test")
        if test is None:
            raise DataError(
                "this run has no test split: set data.test_src + data.test_tgt (or data.test_tsv), or "
                "score a file pair with --src FILE --ref FILE"
            )
        return test
    valid = files("valid")
    if split == "valid" and valid is not None:
        return valid
    train = files("train")
    if train is None:
        raise DataError("data.corpus=files needs data.train_src + data.train_tgt, or data.train_tsv")
    if valid is not None:
        return train
    keep, held = holdout_index(len(train), data.val_fraction)
    part = train.select(held if split == "valid" else keep)
    part.source = f"{train.source} ({split} split: {len(held)} of {len(train)} pairs held out)"
    part.n_empty_skipped = train.n_empty_skipped if split == "train" else 0
    return part


# ---------------------------------------------------------------------------------------------------
# Token ids
# ---------------------------------------------------------------------------------------------------


def _flatten(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    parts = [np.asarray(s, dtype=np.int32) for s in seqs if len(s)]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return flat, offsets


class TokenPairs:
    """Encoded pairs: flat int32 id arrays with offsets (no special tokens stored).

    ``src_lens`` / ``tgt_lens`` are the lengths *as fed to the model*: source + EOS, target + BOS
    (decoder input) = target + EOS (decoder output).
    """

    def __init__(self, src: list[list[int]], tgt: list[list[int]]) -> None:
        if len(src) != len(tgt):
            raise DataError(f"{len(src)} source but {len(tgt)} target sentences")
        self.src_ids, self.src_offsets = _flatten(src)
        self.tgt_ids, self.tgt_offsets = _flatten(tgt)
        self.src_lens = np.diff(self.src_offsets) + 1
        self.tgt_lens = np.diff(self.tgt_offsets) + 1

    def __len__(self) -> int:
        return len(self.src_lens)

    def src(self, i: int) -> np.ndarray:
        return self.src_ids[self.src_offsets[i] : self.src_offsets[i + 1]]

    def tgt(self, i: int) -> np.ndarray:
        return self.tgt_ids[self.tgt_offsets[i] : self.tgt_offsets[i + 1]]

    @property
    def n_tgt_tokens(self) -> int:
        """Target tokens the decoder predicts (EOS included)."""
        return int(self.tgt_lens.sum())

    def __repr__(self) -> str:
        return f"TokenPairs({len(self)} pairs, {int(self.src_lens.sum())} + {self.n_tgt_tokens} tokens)"


def _encode_all(tokenizer: Encoder, texts: list[str]) -> list[list[int]]:
    batch = getattr(tokenizer, "encode_batch", None)
    return list(batch(texts)) if batch is not None else [tokenizer.encode(t) for t in texts]


def encode_pairs(
    text: ParallelText,
    src_tokenizer: Encoder,
    tgt_tokenizer: Encoder | None = None,
    max_len: int = 256,
) -> TokenPairs:
    """Encode both sides (``tgt_tokenizer`` defaults to ``src_tokenizer``: a joint vocabulary).

    ``max_len`` is the most positions of either side *with* its special token, so each sentence
    keeps at most ``max_len - 1`` tokens; longer ones are truncated with a warning saying how many.
    """
    if max_len < 2:
        raise DataError(f"max_len must be >= 2 (a token and EOS), got {max_len}")
    tgt_tokenizer = tgt_tokenizer or src_tokenizer
    src = _encode_all(src_tokenizer, text.src)
    tgt = _encode_all(tgt_tokenizer, text.tgt)
    keep = max_len - 1
    n_src = sum(len(s) > keep for s in src)
    n_tgt = sum(len(t) > keep for t in tgt)
    if n_src or n_tgt:
        warnings.warn(
            f"{text.source or 'parallel text'}: truncated {n_src} source and {n_tgt} target sentences "
            f"of {len(src)} to {keep} tokens (max_len={max_len} with the end-of-sentence token)",
            UserWarning,
            stacklevel=2,
        )
        src = [s[:keep] for s in src]
        tgt = [t[:keep] for t in tgt]
    return TokenPairs(src, tgt)


# ---------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------


class TranslationBatch(NamedTuple):
    """A padded batch. Masks are True at padding (the convention of ``torch.nn``)."""

    src: Tensor  # (B, S): source + EOS, padded
    src_padding_mask: Tensor  # (B, S)
    tgt_in: Tensor  # (B, T): BOS + target (decoder input), padded
    tgt_out: Tensor  # (B, T): target + EOS (what is predicted), padded
    tgt_padding_mask: Tensor  # (B, T)

    @property
    def n_tokens(self) -> int:
        """Target tokens that count in the loss."""
        return int((~self.tgt_padding_mask).sum())


def token_budget_batches(
    src_lens: np.ndarray,
    tgt_lens: np.ndarray,
    max_tokens: int,
    seed: int | None = None,
    max_sentences: int = 0,
) -> list[np.ndarray]:
    """Group pair indices into batches with ``max(src, tgt length) × sentences ≤ max_tokens``.

    Pairs are sorted by source length, then target length (ties in a random order drawn from
    ``seed``, or by index when None), and batches are filled greedily along that order, so each
    holds sentences of similar length and little padding. A pair longer than ``max_tokens`` gets a
    batch of its own. ``max_sentences > 0`` also caps the sentences per batch. The batches come
    out in length order; shuffle their order per epoch (``TranslationTask`` does).
    """
    if max_tokens < 1:
        raise DataError(f"max_tokens must be >= 1, got {max_tokens}")
    n = len(src_lens)
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(tgt_lens[order], kind="stable")]
    order = order[np.argsort(src_lens[order], kind="stable")]
    longest = np.maximum(src_lens, tgt_lens)[order]
    batches: list[np.ndarray] = []
    start, width = 0, 0
    for i in range(n):
        w = max(width, int(longest[i]))
        size = i - start + 1
        if size > 1 and (w * size > max_tokens or (max_sentences and size > max_sentences)):
            batches.append(order[start:i])
            start, w = i, int(longest[i])
        width = w
    if n:
        batches.append(order[start:n])
    return batches


def collate(pairs: TokenPairs, index: Sequence[int] | np.ndarray, src_special: SpecialIds,
            tgt_special: SpecialIds | None = None) -> TranslationBatch:
    """Pad the pairs at ``index`` into a ``TranslationBatch`` (source + EOS; BOS + target; target + EOS)."""
    tgt_special = tgt_special or src_special
    index = [int(i) for i in index]
    b = len(index)
    s_len = max(int(pairs.src_lens[i]) for i in index)
    t_len = max(int(pairs.tgt_lens[i]) for i in index)
    src = np.full((b, s_len), src_special.pad, dtype=np.int64)
    tgt_in = np.full((b, t_len), tgt_special.pad, dtype=np.int64)
    tgt_out = np.full((b, t_len), tgt_special.pad, dtype=np.int64)
    for row, i in enumerate(index):
        s, t = pairs.src(i), pairs.tgt(i)
        src[row, : len(s)] = s
        src[row, len(s)] = src_special.eos
        tgt_in[row, 0] = tgt_special.bos
        tgt_in[row, 1 : len(t) + 1] = t
        tgt_out[row, : len(t)] = t
        tgt_out[row, len(t)] = tgt_special.eos
    src_t, tgt_in_t, tgt_out_t = torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out)
    s_lens = torch.tensor([int(pairs.src_lens[i]) for i in index])
    t_lens = torch.tensor([int(pairs.tgt_lens[i]) for i in index])
    src_mask = torch.arange(s_len)[None, :] >= s_lens[:, None]  # (B, S) True at padding
    tgt_mask = torch.arange(t_len)[None, :] >= t_lens[:, None]  # (B, T)
    return TranslationBatch(src_t, src_mask, tgt_in_t, tgt_out_t, tgt_mask)


def describe(pairs: TokenPairs) -> dict[str, Any]:
    """Sizes for logs: pairs, tokens per side, mean and max lengths."""
    return {
        "pairs": len(pairs),
        "src_tokens": int(pairs.src_lens.sum()),
        "tgt_tokens": pairs.n_tgt_tokens,
        "src_len_mean": float(pairs.src_lens.mean()) if len(pairs) else 0.0,
        "tgt_len_mean": float(pairs.tgt_lens.mean()) if len(pairs) else 0.0,
        "src_len_max": int(pairs.src_lens.max()) if len(pairs) else 0,
        "tgt_len_max": int(pairs.tgt_lens.max()) if len(pairs) else 0,
    }
