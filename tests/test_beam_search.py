"""Beam search and greedy search: a hand-checked toy distribution, beam 1 = greedy, batching,
and cached Transformer decoding = full recomputation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lmlab.errors import GenerationError
from lmlab.generate import (
    Hypothesis,
    beam_decode,
    beam_search,
    greedy_decode,
    greedy_search,
    length_penalty,
)
from lmlab.models.transformer import Transformer, TransformerConfig

PAD, BOS, EOS, A, B = 0, 1, 2, 3, 4



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


# ---------------------------------------------------------------------------------------------------
# The optimised search (step 0 on one row per sentence, exact early stop, shared encoder output)
# gives the hypotheses of a straightforward beam search
# ---------------------------------------------------------------------------------------------------


def reference_beam_search(step_fn, state, batch_size, beam_size, max_len, bos_id, eos_id,
                          length_penalty_alpha=0.6, n_best=1):
    """Beam search written plainly: K rows per sentence from step 0 (beams 1.. start at -inf), top 2K
    over (beam × vocabulary), a sentence stops at K finished hypotheses or at max_len."""
    k = beam_size
    finals = [[] for _ in range(batch_size)]
    active = list(range(batch_size))
    scores = torch.full((batch_size, k), float("-inf"))
    scores[:, 0] = 0.0
    history = torch.empty(batch_size * k, 0, dtype=torch.long)
    tokens = torch.full((batch_size * k, 1), bos_id, dtype=torch.long)
    calls = 0
    for t in range(max_len):
        logits = step_fn(tokens, state)
        calls += 1
        n_act, vocab = len(active), logits.size(-1)
        logp = torch.log_softmax(logits.float(), dim=-1).view(n_act, k, vocab)
        cand = (scores.unsqueeze(-1) + logp).view(n_act, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=1)
        top_beam, top_tok = top_idx // vocab, top_idx % vocab
        is_eos = top_tok == eos_id
        for a in range(n_act):
            for j in range(k):
                b = active[a]
                if is_eos[a, j] and torch.isfinite(top_scores[a, j]) and len(finals[b]) < k:
                    lp = float(top_scores[a, j])
                    toks = history[a * k + int(top_beam[a, j])].tolist()
                    finals[b].append(Hypothesis(toks, lp, lp / length_penalty(t + 1, length_penalty_alpha),
                                                True))
        pos = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :k]
        scores = top_scores.gather(1, pos)
        new_tok = top_tok.gather(1, pos)
        rows = (torch.arange(n_act) * k)[:, None] + top_beam.gather(1, pos)
        history = torch.cat([history[rows.view(-1)], new_tok.view(-1, 1)], dim=1)
        keep = [a for a, b in enumerate(active) if len(finals[b]) < k]
        if not keep or t == max_len - 1:
            break
        ka = torch.tensor(keep)
        rows, scores, new_tok = rows[ka], scores[ka], new_tok[ka]
        history = history.view(n_act, k, -1)[ka].view(len(keep) * k, -1)
        active = [active[a] for a in keep]
        state.reorder(rows.view(-1))
        tokens = new_tok.reshape(-1, 1)
    for a, b in enumerate(active):
        for j in range(k):
            if len(finals[b]) >= k:
                break
            lp = float(scores[a, j])
            if lp > float("-inf"):
                toks = history[a * k + j].tolist()
                finals[b].append(Hypothesis(toks, lp, lp / length_penalty(len(toks), length_penalty_alpha),
                                            False))
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finals], calls


class CountingStep:
    def __init__(self, m: Transformer) -> None:
        self.m, self.calls, self.rows = m, 0, 0

    def __call__(self, tokens: Tensor, state) -> Tensor:
        self.calls += 1
        self.rows += tokens.size(0)
        return self.m.decode_step(tokens, state)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beam_size,n_best,alpha", [(2, 1, 0.6), (4, 1, 0.6), (4, 2, 1.0), (3, 3, 0.0),
                                                    (5, 1, -0.3)])
def test_optimised_search_equals_reference(seed, beam_size, n_best, alpha):
    m = model(seed=seed)
    src, mask, _ = sources(7, seed=seed + 10)
    with torch.inference_mode():
        state = m.start_decoding(src, mask, 14, expand=beam_size)
        ref, ref_calls = reference_beam_search(
            m.decode_step, state, 7, beam_size, 14, BOS, EOS, alpha, n_best
        )
        step = CountingStep(m)
        state = m.start_decoding(src, mask, 14, expand=beam_size)
        fast = beam_search(step, state, 7, beam_size, 14, BOS, EOS, alpha, n_best)
    assert [[h.tokens for h in s] for s in fast] == [[h.tokens for h in s] for s in ref]
    for s, r in zip(fast, ref):
        for a, b in zip(s, r):
            assert a.finished == b.finished
            assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
            assert a.score == pytest.approx(b.score, abs=1e-4)
    assert step.calls <= ref_calls
    assert step.rows < ref_calls * 7 * beam_size  # step 0 runs one row per sentence


def test_early_stop_saves_steps_on_the_toy():
    """With α = 0 the first finished hypothesis (B EOS, 0.36) beats every live beam after step 2
    (A A: 0.33), so the search stops although it has only 1 of 2 finished hypotheses."""
    state = FakeState(2)
    best = beam_search(fake_step, state, 1, 2, 10, BOS, EOS, length_penalty_alpha=0.0)[0]
    assert [h.tokens for h in best] == [[B]]
    state_ref = FakeState(2)
    ref, calls = reference_beam_search(fake_step, state_ref, 1, 2, 10, BOS, EOS, 0.0)
    assert [h.tokens for h in ref[0]] == [[B]]
    assert state.calls < calls


def test_transformer_state_shares_memory_and_falls_back():
    """Beams share their sentence's encoder output (grouped cross-attention); an index that breaks
    the blocks of K rows falls back to one memory row per decoding row; the logits stay those of
    each row's own history."""
    m = model(seed=4)
    src, mask, _ = sources(3, seed=2)
    tgt = torch.randint(3, V, (3, 4))
    with torch.no_grad():
        full = m(src, tgt, mask)  # (3, 4, V)
        state = m.start_decoding(src, mask, 8, expand=2)
        assert state.memory.shape[0] == 3 and state.group == 2 and state.n_rows == 6
        out0 = m.decode_step(tgt[:, :1].repeat_interleave(2, 0), state)
        torch.testing.assert_close(out0[::2], full[:, 0], atol=1e-5, rtol=1e-5)
        state.reorder(torch.tensor([4, 5, 0, 1]))  # sentence 1 dropped, sentences 2 and 0 swapped
        assert state.group == 2 and state.memory.shape[0] == 2
        out1 = m.decode_step(tgt[[2, 2, 0, 0], 1:2], state)
        torch.testing.assert_close(out1[[0, 2]], full[[2, 0], 1], atol=1e-5, rtol=1e-5)
        state.reorder(torch.tensor([2, 0, 1]))  # not blocks of 2: one memory row per decoding row
        assert state.group == 1 and state.memory.shape[0] == 3
        out2 = m.decode_step(tgt[[0, 2, 2], 2:3], state)
        torch.testing.assert_close(out2, full[[0, 2, 2], 2], atol=1e-5, rtol=1e-5)
        state.reorder(torch.tensor([1, 1, 0, 0]))  # blocks again
        assert state.group == 2 and state.memory.shape[0] == 2
        out3 = m.decode_step(tgt[[2, 2, 0, 0], 3:4], state)
        torch.testing.assert_close(out3[[0, 2]], full[[2, 0], 3], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="rows"):
            m.decode_step(tgt[:3, :1], state)


def test_grouped_cross_attention_equals_expanded():
    from lmlab.nn.attention import MultiHeadAttention

    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, fused=False).eval()
    x = torch.randn(6, 2, 16)  # 3 contexts × 2 query rows each, 2 positions
    ctx = torch.randn(3, 5, 16)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    with torch.no_grad():
        grouped, wg = mha(x, context=ctx, padding_mask=pad, need_weights=True)
        expanded, we = mha(x, context=ctx.repeat_interleave(2, 0), padding_mask=pad.repeat_interleave(2, 0),
                           need_weights=True)
    torch.testing.assert_close(grouped, expanded, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(wg, we, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="grouped"):
        mha(torch.randn(4, 1, 16), context=ctx)


@pytest.mark.parametrize("chunk", [16, 128])
@pytest.mark.parametrize("shape,n", [((3, 32012), 8), ((5, 1000), 4), ((2, 130), 6), ((4, 20), 3)])
def test_chunked_topk_equals_topk(shape, n, chunk):
    from lmlab.generate import _topk_rows

    g = torch.Generator().manual_seed(sum(shape))
    x = torch.log_softmax(3 * torch.randn(*shape, generator=g), dim=-1)
    x[0, 5] = float("-inf")
    values, index = _topk_rows(x, n, chunk)
    ref_values, ref_index = x.topk(n, dim=1)
    assert torch.equal(values, ref_values) and torch.equal(index, ref_index)
    # the best values in the last, partial chunk are found too
    x[1, -1] = 10.0
    assert _topk_rows(x, n, chunk)[1][1, 0] == shape[1] - 1
