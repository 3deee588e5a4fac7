"""Translating with a trained encoder-decoder run: its tokenizers, batched beam search, and scores.

A translation run directory holds one joint tokenizer (``tokenizer.json``, both languages: the
paper's shared BPE vocabulary, needed for ``model.share_embeddings``) or one per side
(``tokenizer_src.json`` + ``tokenizer_tgt.json``, ``tokenizer.joint: false``). Both are trained on
the training split only. Special ids come after each side's vocabulary (``SpecialIds.after``).

Text the tokenizers never saw in training is still encoded: byte-level BPE has no unknown token
(every UTF-8 byte is in its vocabulary, so a new character becomes its bytes), and the character
tokenizer falls back to UTF-8 byte tokens. The model has simply not learnt much about such tokens.

``TranslationPipeline`` (what ``lmlab.load`` gives for a translation run) translates text in
length-sorted batches with beam search (beam 4, length penalty α = 0.6 as in the paper; beam 1 is
greedy search) and scores the detokenised output with sacreBLEU (``lmlab.metrics.bleu``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.config import RunConfig, TokenizerConfig
from lmlab.data.parallel import N_SPECIAL, ParallelText, SpecialIds, load_split, read_parallel
from lmlab.errors import ConfigError, DataError, GenerationError
from lmlab.pipeline import Pipeline

JOINT_TOKENIZER_FILE = "tokenizer.json"
SRC_TOKENIZER_FILE = "tokenizer_src.json"
TGT_TOKENIZER_FILE = "tokenizer_tgt.json"
TOKENIZER_FILES = (JOINT_TOKENIZER_FILE, SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE)


def bleu_tokenize_for(lang: str | None) -> str | None:
    """sacreBLEU's tokenizer for a target language: ``zh`` for Chinese, else the default (13a)."""
    if lang and lang.lower().split("-")[0].split("_")[0] in ("zh", "cmn"):
        return "zh"
    return None


@dataclass
class TranslationTokenizers:
    """The source and target tokenizers of a translation run (the same object when ``joint``)."""

    src: Any
    tgt: Any
    joint: bool

    @property
    def src_special(self) -> SpecialIds:
        return SpecialIds.after(self.src.vocab_size)

    @property
    def tgt_special(self) -> SpecialIds:
        return SpecialIds.after(self.tgt.vocab_size)

    @property
    def src_vocab_size(self) -> int:
        """The model's source vocabulary: the tokenizer's plus pad, bos, eos."""
        return self.src.vocab_size + N_SPECIAL

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.vocab_size + N_SPECIAL

    @staticmethod
    def files(joint: bool) -> tuple[str, ...]:
        return (JOINT_TOKENIZER_FILE,) if joint else (SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE)

    @classmethod
    def exist(cls, run_dir: str | Path, joint: bool) -> bool:
        return all((Path(run_dir) / f).is_file() for f in cls.files(joint))

    @classmethod
    def train(cls, cfg: TokenizerConfig, text: ParallelText) -> TranslationTokenizers:
        """Train on the pairs of ``text`` (the training split): one tokenizer on both sides, or one
        per side (the source with ``src_kind`` / ``src_vocab_size`` / ``src_path``)."""
        from lmlab.tokenizers import train_tokenizer

        if cfg.joint:
            tok = train_tokenizer(cfg, iter([*text.src, *text.tgt]))
            return cls(tok, tok, True)
        src_cfg = TokenizerConfig(
            kind=cfg.src_kind or cfg.kind,
            vocab_size=cfg.src_vocab_size or cfg.vocab_size,
            path=cfg.src_path,
        )
        return cls(train_tokenizer(src_cfg, iter(text.src)), train_tokenizer(cfg, iter(text.tgt)), False)

    def save(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        if self.joint:
            self.src.save(run_dir / JOINT_TOKENIZER_FILE)
        else:
            self.src.save(run_dir / SRC_TOKENIZER_FILE)
            self.tgt.save(run_dir / TGT_TOKENIZER_FILE)

    @classmethod
    def load(cls, run_dir: str | Path, joint: bool) -> TranslationTokenizers:
        from lmlab.tokenizers import load_tokenizer

        run_dir = Path(run_dir)
        missing = [f for f in cls.files(joint) if not (run_dir / f).is_file()]
        if missing:
            raise DataError(
                f"{run_dir} is a translation run without its tokenizer file(s) {', '.join(missing)} "
                "(tokenizer.joint=" + ("true" if joint else "false") + ")"
            )
        if joint:
            tok = load_tokenizer(run_dir / JOINT_TOKENIZER_FILE)
            return cls(tok, tok, True)
        src, tgt = (load_tokenizer(run_dir / f) for f in (SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE))
        return cls(src, tgt, False)


# ---------------------------------------------------------------------------------------------------
# search


def _banned_mask(model_vocab: int, special: SpecialIds, device: torch.device) -> Tensor:
    """(V_model,) True for the ids a translation may not contain: pad, bos and any id past the
    tokenizer's vocabulary (a model vocabulary padded larger) -- everything special but EOS."""
    banned = torch.zeros(model_vocab, dtype=torch.bool, device=device)
    banned[special.pad :] = True
    banned[special.eos] = False
    return banned


def search(
    model: nn.Module,
    sources: Sequence[Sequence[int]],
    src_special: SpecialIds,
    tgt_special: SpecialIds,
    beam: int = 4,
    length_penalty: float = 0.6,
    max_len: int | None = None,
    batch_size: int = 64,
) -> list[list[int]]:
    """Target ids (without BOS/EOS) for each source id list (without EOS: it is added here).

    Sentences are sorted by length and decoded ``batch_size`` at a time; ``beam=1`` is greedy
    search. ``max_len``: the most target tokens, EOS included (default: the batch's source length +
    50), within the model's positions. The model never produces pad, bos or ids past the vocabulary.
    """
    from lmlab.generate import beam_search, greedy_search

    for name, value in (("beam", beam), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenerationError(f"{name} must be an integer >= 1, got {value!r}")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise GenerationError(f"max_len must be an integer >= 1 or None, got {max_len!r}")
    if not isinstance(length_penalty, (int, float)) or isinstance(length_penalty, bool):
        raise GenerationError(f"length_penalty must be a number, got {length_penalty!r}")
    device = next(model.parameters()).device
    positions = int(model.config.max_len)
    out: list[list[int]] = [[] for _ in sources]
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    banned = _banned_mask(int(model.config.tgt_vocab_size), tgt_special, device).nonzero().view(-1)

    buffer: list[Tensor] = []  # reused between steps: fresh memory each step costs page faults

    def step(tokens: Tensor, state: Any) -> Tensor:
        logits = model.decode_step(tokens, state)
        n = logits.size(0)
        if not buffer or buffer[0].size(0) < n or buffer[0].shape[1:] != logits.shape[1:] \
                or buffer[0].dtype != logits.dtype or buffer[0].device != logits.device:
            buffer[:] = [torch.empty_like(logits)]
        out = buffer[0][:n].copy_(logits)  # a copy with the few banned columns at -inf
        return out.index_fill_(-1, banned, float("-inf"))

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                rows = order[lo : lo + batch_size]
                width = max(len(sources[i]) for i in rows) + 1
                src = torch.full((len(rows), width), src_special.pad, dtype=torch.long)
                for r, i in enumerate(rows):
                    ids = list(sources[i])
                    src[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    src[r, len(ids)] = src_special.eos
                src = src.to(device)
                mask = src == src_special.pad
                limit = min(positions, max_len if max_len is not None else width + 50)
                if beam == 1:
                    state = model.start_decoding(src, mask, limit, expand=1)
                    hyps = greedy_search(
                        step, state, len(rows), limit, tgt_special.bos, tgt_special.eos, device
                    )
                else:
                    state = model.start_decoding(src, mask, limit, expand=beam)
                    found = beam_search(
                        step, state, len(rows), beam, limit, tgt_special.bos, tgt_special.eos,
                        float(length_penalty), 1, device,
                    )
                    hyps = [h[0].tokens if h else [] for h in found]
                for r, i in enumerate(rows):
                    out[i] = hyps[r]
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------------
# the pipeline


class TranslationPipeline(Pipeline):
    """A translation run: the encoder-decoder model, its tokenizers and config.

    ``tokenizer`` is the target side's, ``src_tokenizer`` the source side's (the same for a joint
    vocabulary). ``translate`` turns text into text; ``evaluate`` gives BLEU / chrF.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizers: TranslationTokenizers,
        config: RunConfig,
        path: Path | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        super().__init__(model, tokenizers.tgt, config, path, checkpoint)
        self.tokenizers = tokenizers
        self.src_tokenizer = tokenizers.src

    def __repr__(self) -> str:
        d = self.config.data
        return (f"TranslationPipeline({self.config.family}, {d.src_lang or 'src'}->{d.tgt_lang or 'tgt'}, "
                f"checkpoint={self.checkpoint}, device={self.device})")

    @property
    def bleu_tokenize(self) -> str | None:
        """sacreBLEU's tokenizer for this run's target language (``zh`` for Chinese, else 13a)."""
        return bleu_tokenize_for(self.config.data.tgt_lang)

    def generate(self, *args: Any, **kwargs: Any) -> str:
        raise GenerationError(
            "this is a translation run: use translate(text) (the command line: lmlab translate RUN_DIR TEXT)"
        )

    def encode_sources(self, texts: Sequence[str]) -> list[list[int]]:
        """Source ids of each text (stripped), cut to the model's positions with a warning."""
        keep = int(self.model.config.max_len) - 1  # + EOS
        ids = [self.src_tokenizer.encode(t.strip()) for t in texts]
        long = sum(len(s) > keep for s in ids)
        if long:
            warnings.warn(
                f"truncated {long} of {len(ids)} source sentences to {keep} tokens "
                f"(model.max_len={keep + 1} with the end-of-sentence token)",
                UserWarning,
                stacklevel=3,
            )
            ids = [s[:keep] for s in ids]
        return ids

    def translate_ids(
        self,
        texts: Sequence[str],
        beam: int = 4,
        length_penalty: float = 0.6,
        max_len: int | None = None,
        batch_size: int = 64,
    ) -> list[list[int]]:
        """Target ids (without BOS/EOS) of each text; empty (or all-space) texts give []."""
        ids = self.encode_sources(texts)
        todo = [i for i, s in enumerate(ids) if s]
        out: list[list[int]] = [[] for _ in ids]
        found = search(
            self.model, [ids[i] for i in todo], self.tokenizers.src_special, self.tokenizers.tgt_special,
            beam=beam, length_penalty=length_penalty, max_len=max_len, batch_size=batch_size,
        )
        for i, hyp in zip(todo, found):
            out[i] = hyp
        return out

    def translate(
        self,
        texts: str | Sequence[str],
        beam: int = 4,
        length_penalty: float = 0.6,
        max_len: int | None = None,
        batch_size: int = 64,
    ) -> str | list[str]:
        """Translate one text (-> str) or a list of texts (-> list of str), detokenised.

        Beam search with ``beam`` beams and the GNMT length penalty α = ``length_penalty`` (the
        paper's 4 and 0.6); ``beam=1`` is greedy search. ``max_len``: the most target tokens with
        EOS (default: source length + 50). Texts are decoded ``batch_size`` at a time, sorted by
        length; an empty text translates to ''. Sources longer than the model's positions are
        truncated (a warning says how many).
        """
        single = isinstance(texts, str)
        items = [texts] if single else texts
        if not isinstance(items, Sequence) or not all(isinstance(t, str) for t in items):
            raise GenerationError("translate() takes a string or a list of strings")
        hyps = self.translate_ids(list(items), beam, length_penalty, max_len, batch_size)
        out = [self.tokenizer.decode(h).strip() if h else "" for h in hyps]
        return out[0] if single else out

    def default_split(self) -> str:
        """test where the run's corpus has one (multi30k: test2016; tatoeba-cmn: the seeded test
        split; files: data.test_src/test_tgt or test_tsv), else valid."""
        d = self.config.data
        if d.corpus == "files" and not (d.test_tsv or d.test_src):
            return "valid"
        return "test"

    def evaluate(  # type: ignore[override]
        self,
        split: str | None = None,
        *,
        src: str | Path | None = None,
        ref: str | Path | None = None,
        beam: int = 4,
        length_penalty: float = 0.6,
        max_len: int | None = None,
        batch_size: int = 64,
    ) -> dict[str, Any]:
        """BLEU and chrF (sacreBLEU, on detokenised text) of translations of a split of the run's
        corpus (``split``: train, valid, test / test2016; default ``default_split()``) or of the
        aligned files ``src`` / ``ref`` (one sentence a line; pairs with an empty side skipped, with
        a warning). Returns ``lmlab.metrics.bleu``'s dict plus ``sentences`` and ``split``.
        """
        from lmlab.metrics import bleu

        if (src is None) != (ref is None):
            raise ConfigError("scoring files needs both src (the sources) and ref (their translations)")
        if src is not None and split is not None:
            raise ConfigError("give either a split or src + ref files, not both")
        if src is not None:
            text = read_parallel(src, ref)  # type: ignore[arg-type]
            where = f"{src} -> {ref}"
        else:
            split = split or self.default_split()
            text = load_split(self.config.data, split)
            where = split
        if text.n_empty_skipped:
            skipped = text.n_empty_skipped
            warnings.warn(f"{text.source}: skipped {skipped} pairs with an empty side", stacklevel=2)
        hyps = self.translate(text.src, beam, length_penalty, max_len, batch_size)
        assert isinstance(hyps, list)
        scores = bleu(hyps, text.tgt, tokenize=self.bleu_tokenize)
        scores.update(sentences=len(hyps), split=where, hypotheses=hyps)
        return scores


__all__ = [
    "TOKENIZER_FILES",
    "TranslationPipeline",
    "TranslationTokenizers",
    "bleu_tokenize_for",
    "search",
]
