"""The RNN encoder-decoder (models/seq2seq.py): shapes, source padding (zero attention, no effect),
attention weights, fused == step-by-step, incremental == teacher-forced decoding, beam search (beam
1 == greedy, scores == model log-probabilities), learning to reverse sequences, config errors, the
recipes, and `lmlab train / translate / eval / attention` end to end on tiny inline files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.cli import main
from lmlab.config import build_config, list_recipes, load_config, load_raw
from lmlab.errors import ConfigError
from lmlab.generate import beam_decode, greedy_decode
from lmlab.models import build_model
from lmlab.models.seq2seq import ATTENTIONS, Seq2Seq, Seq2SeqConfig, Seq2SeqDecoderState
from lmlab.tasks.translation import label_smoothed_nll
from lmlab.translate import TranslationPipeline

V_SRC, V_TGT = 17, 13
PAD, BOS, EOS = 10, 11, 12  # target side (tokens 0..9)
RECIPES = ("multi30k-en-de-lstm", "multi30k-en-de-lstm-attention")



def tiny(seed: int = 0, **kw) -> Seq2Seq:
    cfg = dict(src_vocab_size=V_SRC, tgt_vocab_size=V_TGT, d_emb=8, d_hidden=12, n_layers=2, dropout=0.0,
               max_len=32)
    cfg.update(kw)
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(**cfg)).double().eval()


def sources(lengths=(7, 4, 2), seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded sources (B, S) with padding mask; the padding holds token 16."""
    g = torch.Generator().manual_seed(seed)
    s = max(lengths)
    src = torch.randint(0, 16, (len(lengths), s), generator=g)
    mask = torch.arange(s)[None, :] >= torch.tensor(lengths)[:, None]
    return src.masked_fill(mask, 16), mask


ALL = [(a, feed) for a in ATTENTIONS for feed in ((True, False) if a.startswith("luong") else (True,))]


# ---------------------------------------------------------------------------------------------------
# the model


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention,feed", ALL)
def test_shapes_padding_and_attention_weights(cell, attention, feed):
    m = tiny(cell=cell, attention=attention, input_feeding=feed, bidirectional=cell != "rnn")
    src, mask = sources()
    tgt = torch.randint(0, 10, (3, 5))
    logits = m(src, tgt, mask)
    assert logits.shape == (3, 5, V_TGT) and logits.dtype == torch.float64
    # what stands in the padding changes nothing
    other = src.masked_fill(mask, 3)
    torch.testing.assert_close(m(other, tgt, mask), logits, atol=1e-12, rtol=0)
    memory = m.encode(src, mask)
    assert memory.states.shape == (3, 7, 12)
    assert memory.states[mask].abs().max() == 0  # padded encoder states are zeros
    out, weights = m.decode(tgt, memory, need_weights=True)
    torch.testing.assert_close(out, logits)
    if attention == "none":
        assert weights == {"cross": []} and m.cross_attention_shape == (0, 0)
        return
    assert m.cross_attention_shape == (1, 1)
    (alpha,) = weights["cross"]
    assert alpha.shape == (3, 1, 5, 7)  # (B, heads, T, S)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 1, 5, dtype=torch.float64))
    padded = mask[:, None, :].expand(3, 5, 7)
    assert bool((alpha[:, 0][padded] == 0).all())  # exactly zero on padding
    assert bool((alpha[:, 0][~padded] > 0).all())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention,feed", [("none", True), ("bahdanau", True), ("luong-general", True),
                                            ("luong-dot", False)])
def test_fused_and_step_paths_agree(cell, attention, feed):
    """fused=True (torch's kernels, packed sources) and fused=False (the equations, masked steps)
    give the same logits and gradients with the same parameters."""
    m = tiny(cell=cell, attention=attention, input_feeding=feed)
    src, mask = sources()
    tgt = torch.randint(0, 10, (3, 6))
    results = []
    for fused in (True, False):
        m.encoder.fused = m.decoder.fused = fused
        m.zero_grad()
        logits = m(src, tgt, mask)
        logits.pow(2).mean().backward()
        results.append((logits.detach(), [p.grad.clone() for p in m.parameters()]))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-9)
    step = Seq2Seq(dataclasses.replace(m.config, fused=False)).double()
    assert not step.encoder.fused and not step.decoder.fused


@pytest.mark.parametrize("attention,feed", ALL)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_incremental_decoding_equals_teacher_forcing(attention, feed, bidirectional):
    m = tiny(attention=attention, input_feeding=feed, bidirectional=bidirectional, cell="lstm")
    src, mask = sources()
    tgt = torch.randint(0, 10, (3, 6))
    full = m(src, tgt, mask)  # (3, 6, V)
    with torch.inference_mode():
        state = m.start_decoding(src, mask, 10)
        steps = torch.stack([m.decode_step(tgt[:, t : t + 1], state) for t in range(6)], dim=1)
        torch.testing.assert_close(steps, full, atol=1e-12, rtol=1e-10)
        # beams: expand 2 copies per sentence, then reorder (drop, swap, repeat rows) between steps
        state = m.start_decoding(src, mask, 10, expand=2)
        assert isinstance(state, Seq2SeqDecoderState) and state.rnn[0].shape == (2, 6, 12)
        assert (state.memory is None) == (attention == "none")
        out0 = m.decode_step(tgt[:, :1].repeat_interleave(2, 0), state)
        torch.testing.assert_close(out0[::2], full[:, 0])
        torch.testing.assert_close(out0[1::2], full[:, 0])
        state.reorder(torch.tensor([4, 0, 5]))  # rows of sentences 2, 0, 2
        out1 = m.decode_step(tgt[[2, 0, 2], 1:2], state)
        torch.testing.assert_close(out1, full[[2, 0, 2], 1])
        state.reorder(torch.tensor([1, 1, 0, 2]))  # sentence 0 twice, then 2 twice
        out2 = m.decode_step(tgt[[0, 0, 2, 2], 2:3], state)
        torch.testing.assert_close(out2, full[[0, 0, 2, 2], 2])
        if attention == "luong-dot":
            assert state.keys is state.memory  # dot attention reads the states themselves


@pytest.mark.parametrize("attention", ["bahdanau", "luong-general", "none"])
def test_beam_one_is_greedy_and_beam_scores_are_log_probs(attention):
    m = tiny(seed=3, attention=attention, d_hidden=16, n_layers=1).float()
    with torch.no_grad():  # sharpen the untrained model so that sentences end at different lengths
        m.out_proj.bias[EOS] += 1.5
    src, mask = sources((6, 3, 5, 2), seed=4)
    greedy = greedy_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=12)
    beam1 = beam_decode(m, src, mask, bos_id=BOS, eos_id=EOS, beam_size=1, max_len=12)
    assert [h[0].tokens for h in beam1] == greedy
    found = beam_decode(m, src, mask, bos_id=BOS, eos_id=EOS, beam_size=3, n_best=3, max_len=12)
    assert m.training is False
    for b, hyps in enumerate(found):
        assert len(hyps) == 3 and hyps[0].score >= hyps[-1].score
        for h in hyps:  # the search's log-probability is the model's, recomputed by teacher forcing
            ys = h.tokens + ([EOS] if h.finished else [])
            tgt_in = torch.tensor([[BOS] + ys[:-1]])
            with torch.no_grad():
                logp = torch.log_softmax(m(src[b : b + 1], tgt_in, mask[b : b + 1]).float(), -1)[0]
            expected = float(logp[torch.arange(len(ys)), torch.tensor(ys)].sum())
            assert h.log_prob == pytest.approx(expected, abs=1e-4)


def _reversal_batch(g: torch.Generator, n: int) -> tuple[torch.Tensor, ...]:
    """Sources of 3..7 digits + EOS; targets: the digits reversed."""
    lens = torch.randint(3, 8, (n,), generator=g).tolist()
    s = max(lens) + 1
    src, tgt_in, tgt_out = (torch.full((n, s), PAD) for _ in range(3))
    for i, n_i in enumerate(lens):
        x = torch.randint(0, 10, (n_i,), generator=g)
        src[i, :n_i], src[i, n_i] = x, EOS
        tgt_in[i, 0], tgt_in[i, 1 : n_i + 1] = BOS, x.flip(0)
        tgt_out[i, :n_i], tgt_out[i, n_i] = x.flip(0), EOS
    return src, src == PAD, tgt_in, tgt_out


def test_attention_model_learns_to_reverse_sequences():
    """200 Adam steps of 32 random sequences: the attention model reverses unseen ones exactly."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = Seq2Seq(Seq2SeqConfig(src_vocab_size=13, tgt_vocab_size=13, d_emb=32, d_hidden=64, dropout=0.0,
                              attention="bahdanau", max_len=16))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(200):
        src, mask, tgt_in, tgt_out = _reversal_batch(g, 32)
        loss = label_smoothed_nll(m(src, tgt_in, mask), tgt_out, 0.0, PAD)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    src, mask, _, tgt_out = _reversal_batch(torch.Generator().manual_seed(99), 200)
    hyps = greedy_decode(m, src, mask, bos_id=BOS, eos_id=EOS, max_len=16)
    refs = [[t for t in row.tolist() if t not in (PAD, EOS)] for row in tgt_out]
    exact = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
    assert exact >= 0.9, exact


def test_shared_embeddings_and_bridge():
    m = tiny(src_vocab_size=V_TGT, share_embeddings=True, bidirectional=True, cell="lstm", d_emb=12)
    assert m.src_emb.weight is m.tgt_emb.weight is m.out_proj.weight and m.proj is None
    assert m.num_params() == sum(p.numel() for p in m.parameters())
    assert len(m.bridge) == 2 and len(m.bridge_cell) == 2  # one W_b, W_c per layer
    uni = tiny(bidirectional=False, tie_output=False)
    assert uni.bridge is None and uni.out_proj.weight is not uni.tgt_emb.weight
    src, mask = sources()
    memory = uni.encode(src, mask)
    _, (h, c) = uni.encoder(uni.src_emb(src), padding_mask=mask)
    torch.testing.assert_close(memory.init[0], h)  # unidirectional: the final states, copied
    torch.testing.assert_close(memory.init[1], c)


# ---------------------------------------------------------------------------------------------------
# config and recipes


def test_config_errors_name_the_valid_choices():
    base = load_raw("multi30k-en-de-lstm-attention")
    with pytest.raises(ConfigError) as e:
        build_config(base, ["model.attention=additive"])
    assert "model.attention" in str(e.value) and "none, bahdanau, luong-dot, luong-general" in str(e.value)
    with pytest.raises(ConfigError, match="lstm, gru, rnn"):
        build_config(base, ["model.cell=transformer"])
    with pytest.raises(ConfigError, match="even"):
        build_config(base, ["model.d_hidden=511"])
    with pytest.raises(ConfigError, match="did you mean 'n_layers'"):
        build_config(base, ["model.n_layer=2"])
    with pytest.raises(ConfigError, match="dropout"):
        build_config(base, ["model.dropout=1.5"])
    with pytest.raises(ConfigError, match="share_embeddings"):
        build_config(base, ["tokenizer.joint=false"])
    with pytest.raises(ConfigError, match="src_vocab_size"):
        Seq2Seq(Seq2SeqConfig())
    with pytest.raises(ConfigError, match="joint vocabulary"):
        Seq2Seq(Seq2SeqConfig(src_vocab_size=5, tgt_vocab_size=6, share_embeddings=True))
    assert build_config(base, ["model.attention=luong-dot", "model.cell=gru"]).model.attention == "luong-dot"


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_build(name):
    cfg = load_config(name)
    assert cfg.family == "seq2seq" and cfg.task == "translation" and name in list_recipes()
    assert cfg.model.attention == ("none" if name == "multi30k-en-de-lstm" else "bahdanau")
    assert cfg.model.cell == "lstm" and cfg.model.bidirectional and cfg.model.fused
    assert cfg.tokenizer.joint == cfg.model.share_embeddings and cfg.tokenizer.vocab_size == 8000
    assert (cfg.data.corpus, cfg.data.src_lang, cfg.data.tgt_lang) == ("multi30k", "en", "de")
    t = cfg.train
    assert t.optimizer == "adam" and t.keep_checkpoints >= 5 and t.max_steps >= 5 * t.checkpoint_interval
    model = build_model(cfg.family, dataclasses.replace(cfg.model, src_vocab_size=8003, tgt_vocab_size=8003))
    assert 3_000_000 < model.num_params() < 15_000_000


# ---------------------------------------------------------------------------------------------------
# end to end through the command line

SUBJECTS = [("a dog", "ein hund"), ("a cat", "eine katze"), ("the man", "der mann"),
            ("the woman", "die frau"), ("a child", "ein kind")]
VERBS = [("runs", "rennt"), ("sleeps", "schläft"), ("eats", "isst"), ("sings", "singt"),
         ("reads", "liest"), ("swims", "schwimmt"), ("plays", "spielt"), ("jumps", "springt")]
PAIRS = [(f"{se} {ve}", f"{sd} {vd}") for se, sd in SUBJECTS for ve, vd in VERBS]  # 40 pairs
TINY = ["model.d_emb=16", "model.d_hidden=24", "model.d_attention=16", "model.max_len=32", "data.max_len=32",
        "tokenizer.vocab_size=300", "train.batch_size=256", "train.warmup_steps=2", "train.log_interval=1",
        "train.eval_interval=0", "train.progress=false", "train.precision=fp32", "train.device=cpu"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path



@pytest.fixture(scope="module")
def corpus_args(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("pairs")
    train, valid = [p for i, p in enumerate(PAIRS) if i % 5], PAIRS[::5]
    args = ["data.corpus=files"]
    for split, pairs in (("train", train), ("valid", valid), ("test", valid[:4])):
        args.append(f"data.{split}_src={write_lines(d / f'{split}.en', [s for s, _ in pairs])}")
        args.append(f"data.{split}_tgt={write_lines(d / f'{split}.de', [t for _, t in pairs])}")
    return args


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_args) -> Path:
    out = tmp_path_factory.mktemp("seq2seq") / "run"
    args = ["multi30k-en-de-lstm-attention", *corpus_args, *TINY, "train.max_steps=4",
            "train.checkpoint_interval=2", "train.bleu_sentences=4"]
    assert main(["train", *args, "--out", str(out)]) == 0
    return out


def test_train_translate_eval_attention(cli, run, tmp_path):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and {"val_loss", "val_bleu"} <= set(records[-1])
    p = lmlab.load(run)
    assert isinstance(p, TranslationPipeline) and isinstance(p.model, Seq2Seq)
    assert p.config.family == "seq2seq" and p.config.model.src_vocab_size == 303
    rc, out, err = cli("translate", run, "a dog runs")
    assert rc == 0, err
    assert out.rstrip("\n") == p.translate("a dog runs")
    assert p.translate(["a cat sleeps", "", "the man reads"], beam=2)[1] == ""
    rc, out, err = cli("eval", run, "--split", "test", "--json", "--beam", "1")
    assert rc == 0, err
    assert set(json.loads(out)) == {"bleu", "chrf", "signature"}
    png = tmp_path / "align.png"
    rc, out, err = cli("attention", run, "a dog runs", "--out", png)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in out
    from lmlab.explain import cross_attention

    weights, rows, cols = cross_attention(p, "a dog runs", head=0)
    assert weights.shape == (len(rows), len(cols)) and cols[-1] == "</s>"
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(rows)))
    rc, _, err = cli("attention", run, "a dog", "--out", png, "--layer", "1")
    assert rc == 2 and "1 layers with cross-attention" in err
    rc, _, err = cli("attention", run, "a dog", "--out", png, "--head", "1")
    assert rc == 2 and "1 heads" in err


def test_fixed_context_run_translates_and_has_no_map(cli, corpus_args, tmp_path):
    out = tmp_path / "fixed"
    rc, _, err = cli("train", "multi30k-en-de-lstm", *corpus_args, *TINY, "model.n_layers=1",
                           "train.max_steps=2", "--out", out)
    assert rc == 0, err
    p = lmlab.load(out)
    assert p.config.model.attention == "none" and isinstance(p.translate("a cat eats", beam=2), str)
    rc, _, err = cli("attention", out, "a dog", "--out", tmp_path / "x.png")
    assert rc == 2 and "no attention over the source" in err and "model.attention=none" in err
