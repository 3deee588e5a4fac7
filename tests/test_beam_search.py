"""Beam search and greedy search: a hand-checked toy distribution, beam 1 = greedy, batching,
and cached Transformer decoding = full recomputation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lmlab.errors import GenerationError
from lmlab.generate import (
    beam_decode,
    beam_search,
    greedy_decode,
    greedy_search,
    length_penalty,
)
from lmlab.models.transformer import Transformer, TransformerConfig

PAD, BOS, EOS, A, B = 0, 1, 2, 3, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------
# A fake decoder with fixed next-token probabilities given the tokens so far
# ---------------------------------------------------------------------------------------------------

# prefix (generated tokens) -> {token: probability}; anything else gets a tiny probability
TABLE: dict[tuple[int, ...], dict[int, float]] = {
    (): {A: 0.6, B: 0.4},
    (A,): {A: 0.55, EOS: 0.40, B: 0.05},
    (B,): {EOS: 0.9, A: 0.05, B: 0.05},
    (A, A): {EOS: 0.99, A: 0.01},
    (A, B): {EOS: 1.0},
}
# greedy: A (0.6), A (0.55), EOS (0.99)    -> [A, A], P = 0.3267, |Y| = 3
# beam 2: B EOS (0.36) beats A A EOS (0.3267) on log-probability, but not after the length penalty
P_B, P_AA = 0.4 * 0.9, 0.6 * 0.55 * 0.99


class FakeState:
    """Rows of token histories; ``reorder`` keeps rows (the DecoderState protocol)."""

    def __init__(self, n_rows: int) -> None:
        self.rows: list[list[int]] = [[] for _ in range(n_rows)]
        self.calls = 0

    def reorder(self, index: Tensor) -> None:
        self.rows = [list(self.rows[i]) for i in index.tolist()]


def fake_step(tokens: Tensor, state: FakeState) -> Tensor:
    assert tokens.shape == (len(state.rows), 1)
    state.calls += 1
    logits = torch.full((len(state.rows), 5), math.log(1e-9))
    for r, tok in enumerate(tokens[:, 0].tolist()):
        if tok != BOS:
            state.rows[r].append(tok)
        for t, p in TABLE.get(tuple(state.rows[r]), {EOS: 1.0}).items():
            logits[r, t] = math.log(p)
    return logits


def test_length_penalty_formula():
    assert length_penalty(7, 0.0) == 1.0
    assert length_penalty(1, 1.0) == 1.0
    assert length_penalty(7, 0.6) == pytest.approx((12 / 6) ** 0.6)


def test_hand_checked_beam_differs_from_greedy():
    greedy = greedy_search(fake_step, FakeState(1), 1, 10, BOS, EOS)
    assert greedy == [[A, A]]
    hyps = beam_search(fake_step, FakeState(2), 1, 2, 10, BOS, EOS, length_penalty_alpha=0.0, n_best=2)[0]
    assert [h.tokens for h in hyps] == [[B], [A, A]]
    assert all(h.finished for h in hyps)
    assert hyps[0].log_prob == pytest.approx(math.log(P_B), abs=1e-6)
    assert hyps[1].log_prob == pytest.approx(math.log(P_AA), abs=1e-6)
    assert hyps[0].score == pytest.approx(hyps[0].log_prob)


def test_length_penalty_changes_the_winner():
    # α = 1: score(B EOS) = log 0.36 / (7/6) = -0.876 < score(A A EOS) = log 0.3267 / (8/6) = -0.839
    hyps = beam_search(fake_step, FakeState(2), 1, 2, 10, BOS, EOS, length_penalty_alpha=1.0, n_best=2)[0]
    assert [h.tokens for h in hyps] == [[A, A], [B]]
    assert hyps[0].score == pytest.approx(math.log(P_AA) / (8 / 6), abs=1e-6)
    assert hyps[1].score == pytest.approx(math.log(P_B) / (7 / 6), abs=1e-6)
    # the paper's α = 0.6 is not enough here
    best = beam_search(fake_step, FakeState(2), 1, 2, 10, BOS, EOS, length_penalty_alpha=0.6)[0][0]
    assert best.tokens == [B]


def test_beam_one_is_greedy_on_the_toy():
    hyps = beam_search(fake_step, FakeState(1), 1, 1, 10, BOS, EOS, length_penalty_alpha=0.6)
    assert hyps[0][0].tokens == [A, A]


def test_max_len_cuts_unfinished_hypotheses():
    hyps = beam_search(fake_step, FakeState(2), 1, 2, 1, BOS, EOS, length_penalty_alpha=0.0, n_best=2)[0]
    assert [h.tokens for h in hyps] == [[A], [B]]
    assert not any(h.finished for h in hyps)
    assert greedy_search(fake_step, FakeState(1), 1, 1, BOS, EOS) == [[A]]


def test_bad_arguments():
    with pytest.raises(GenerationError, match="beam_size"):
        beam_search(fake_step, FakeState(1), 1, 0, 5, BOS, EOS)
    with pytest.raises(GenerationError, match="n_best"):
        beam_search(fake_step, FakeState(2), 1, 2, 5, BOS, EOS, n_best=3)
    with pytest.raises(GenerationError, match="max_len"):
        greedy_search(fake_step, FakeState(1), 1, 0, BOS, EOS)


# ---------------------------------------------------------------------------------------------------
# With a (random, untrained) Transformer
# ---------------------------------------------------------------------------------------------------

V = 12


class EosTransformer(Transformer):
    """An untrained Transformer whose EOS logit grows with the target position, so that sentences
    end, at different lengths (the cached and the full computation get the same bonus)."""

    def decode(self, tgt, memory, src_padding_mask=None, cache=None, need_weights=False,
               tgt_padding_mask=None):
        offset = cache.length if cache is not None else 0
        logits = super().decode(tgt, memory, src_padding_mask, cache, need_weights, tgt_padding_mask)
        bonus = torch.zeros(logits.size(-1))
        bonus[EOS] = 1.0
        positions = torch.arange(offset, offset + tgt.size(1), dtype=logits.dtype)
        return logits + 0.7 * (positions - 4)[:, None] * bonus


def model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=32, n_heads=4, n_encoder_layers=2,
               n_decoder_layers=2, d_ff=64, dropout=0.0, max_len=32, tie_output=False)
    cfg.update(kw)
    return EosTransformer(TransformerConfig(**cfg)).eval()


def sources(n: int = 6, seed: int = 1) -> tuple[Tensor, Tensor, list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, V, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]
    width = max(len(r) for r in rows)
    src = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    return src, src == PAD, rows


def test_beam_one_equals_greedy_transformer():
    m = model()
    src, mask, _ = sources()
    greedy = greedy_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=15)
    beam = beam_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=15, beam_size=1)
    assert [h[0].tokens for h in beam] == greedy
    lengths = {len(g) for g in greedy}
    assert len(lengths) > 1 and min(lengths) < 14  # some stop at EOS, at different steps


def test_batched_equals_per_sentence():
    m = model()
    src, mask, rows = sources()
    batched = beam_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=15, beam_size=3, n_best=3)
    greedy = greedy_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=15)
    for i, row in enumerate(rows):
        single = beam_decode(m, [row], bos_id=BOS, eos_id=EOS, max_len=15, beam_size=3, n_best=3)[0]
        assert [h.tokens for h in single] == [h.tokens for h in batched[i]]
        for a, b in zip(single, batched[i]):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert a.finished == b.finished
        assert greedy_decode(m, [row], bos_id=BOS, eos_id=EOS, max_len=15)[0] == greedy[i]
    # lists of ids with pad_id are padded the same way as the tensor
    from_lists = beam_decode(m, rows, pad_id=PAD, bos_id=BOS, eos_id=EOS, max_len=15, beam_size=3, n_best=3)
    assert [[h.tokens for h in s] for s in from_lists] == [[h.tokens for h in s] for s in batched]


def test_beam_scores_are_model_log_probs():
    """A hypothesis' log_prob is the model's log-probability of its tokens (+ EOS) by teacher forcing."""
    m = model()
    src, mask, _ = sources(3)
    hyps = beam_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=15, beam_size=4, n_best=4,
                       length_penalty_alpha=0.6)
    for i in range(3):
        scores = [h.score for h in hyps[i]]
        assert scores == sorted(scores, reverse=True)
        for h in hyps[i]:
            y = h.tokens + ([EOS] if h.finished else [])
            tgt_in = torch.tensor([[BOS] + y[:-1]])
            with torch.no_grad():
                logp = torch.log_softmax(m(src[i : i + 1], tgt_in, mask[i : i + 1]), -1)[0]
            expected = logp.gather(-1, torch.tensor(y)[:, None]).sum().item()
            assert h.log_prob == pytest.approx(expected, abs=1e-4)
            assert h.score == pytest.approx(expected / length_penalty(len(y), 0.6), abs=1e-4)


class FullRecompute:
    """Decoder state without a cache: re-run the whole target prefix at every step."""

    def __init__(self, m: Transformer, src: Tensor, mask: Tensor, expand: int) -> None:
        self.m = m
        self.memory = m.encode(src, mask).repeat_interleave(expand, 0)
        self.mask = mask.repeat_interleave(expand, 0)
        self.prefix = torch.empty(self.memory.size(0), 0, dtype=torch.long)

    def reorder(self, index: Tensor) -> None:
        self.memory, self.mask, self.prefix = self.memory[index], self.mask[index], self.prefix[index]

    def step(self, tokens: Tensor, state: FullRecompute) -> Tensor:
        state.prefix = torch.cat([state.prefix, tokens], dim=1)
        return state.m.decode(state.prefix, state.memory, state.mask)[:, -1]


def test_cached_decoding_equals_full_recomputation():
    m = model(seed=3)
    src, mask, _ = sources(4, seed=5)
    with torch.no_grad():
        state = FullRecompute(m, src, mask, 3)
        full = beam_search(state.step, state, 4, 3, 12, BOS, EOS, length_penalty_alpha=0.6, n_best=3)
        state = FullRecompute(m, src, mask, 1)
        full_greedy = greedy_search(state.step, state, 4, 12, BOS, EOS)
    cached = beam_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=12, beam_size=3, n_best=3)
    assert [[h.tokens for h in s] for s in cached] == [[h.tokens for h in s] for s in full]
    for s, t in zip(cached, full):
        for a, b in zip(s, t):
            assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
    assert greedy_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=12) == full_greedy


def test_decoding_restores_training_mode_and_default_max_len():
    m = model()
    m.train()
    src, mask, _ = sources(2)
    out = greedy_decode(m, src, mask, bos_id=BOS, eos_id=EOS)  # max_len: source length + 50, within 32
    assert m.training
    assert all(len(o) <= 32 for o in out)
    with pytest.raises(GenerationError, match="pad_id"):
        greedy_decode(m, [[3, 4], [5]], bos_id=BOS, eos_id=EOS)
