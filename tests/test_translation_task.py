"""The translation task: label smoothing, deterministic token-budget batches, evaluation, and a few
Trainer steps (Noam schedule) of a tiny Transformer on 20 sentence pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmlab.config import TrainConfig
from lmlab.data.parallel import ParallelText, SpecialIds, collate, encode_pairs
from lmlab.errors import ConfigError
from lmlab.models.transformer import Transformer, TransformerConfig
from lmlab.tasks.translation import TranslationTask, label_smoothed_nll
from lmlab.tokenizers import CharTokenizer
from lmlab.train import Trainer, read_metrics

EN = [
    "a dog runs", "a cat sleeps", "two men walk", "a girl sings", "the boy reads",
    "a woman cooks", "the man swims", "a child plays", "two dogs run", "the cat eats",
    "a bird flies", "the girl jumps", "a man sits", "the woman reads", "a boy runs",
    "two cats sleep", "the dog eats", "a child sings", "the bird sings", "a man walks",
]
DE = [
    "ein hund rennt", "eine katze schläft", "zwei männer gehen", "ein mädchen singt", "der junge liest",
    "eine frau kocht", "der mann schwimmt", "ein kind spielt", "zwei hunde rennen", "die katze frisst",
    "ein vogel fliegt", "das mädchen springt", "ein mann sitzt", "die frau liest", "ein junge rennt",
    "zwei katzen schlafen", "der hund frisst", "ein kind singt", "der vogel singt", "ein mann geht",
]



@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothed_nll_matches_torch(eps):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    target = torch.randint(0, 10, (3, 5))
    target[0, 3:] = 10  # padding
    target[2, 4] = 10
    ours = label_smoothed_nll(logits, target, eps, ignore_index=10)
    ref = F.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=10, label_smoothing=eps)
    torch.testing.assert_close(ours, ref)
    g1 = torch.autograd.grad(ours, logits)[0]
    g2 = torch.autograd.grad(ref, logits)[0]
    torch.testing.assert_close(g1, g2)
    ref_sum = F.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=10, label_smoothing=eps,
                              reduction="sum")
    torch.testing.assert_close(label_smoothed_nll(logits, target, eps, 10, reduction="sum"), ref_sum)
    per = label_smoothed_nll(logits, target, eps, 10, reduction="none")
    assert per.shape == (3, 5) and float(per[0, 4].detach()) == 0.0


def test_label_smoothing_formula():
    """(1 - ε)·(-log p_y) + ε·mean(-log p): with uniform logits the loss is log V whatever ε."""
    logits = torch.zeros(1, 1, 8)
    for eps in (0.0, 0.1, 0.5):
        assert label_smoothed_nll(logits, torch.tensor([[3]]), eps).item() == pytest.approx(np.log(8))
    logits = torch.tensor([[[2.0, 0.0, 0.0, 0.0]]])
    lp = torch.log_softmax(logits, -1)[0, 0]
    expected = 0.9 * -lp[0] + 0.1 * -lp.mean()
    assert label_smoothed_nll(logits, torch.tensor([[0]]), 0.1).item() == pytest.approx(expected.item())


def _data(max_len: int = 32):
    tok = CharTokenizer.train(EN + DE)
    sp = SpecialIds.after(tok.vocab_size)
    train = encode_pairs(ParallelText(EN, DE), tok, max_len=max_len)
    val = encode_pairs(ParallelText(EN[:6], DE[:6]), tok, max_len=max_len)
    return tok, sp, train, val


def _model(tok, dropout: float = 0.0) -> Transformer:
    torch.manual_seed(0)
    v = tok.vocab_size + 3
    cfg = TransformerConfig.named("tiny", src_vocab_size=v, tgt_vocab_size=v, d_model=32, n_heads=4,
                                  d_ff=64, n_encoder_layers=1, n_decoder_layers=1, dropout=dropout,
                                  max_len=32, share_embeddings=True)
    return Transformer(cfg)


def test_batches_are_deterministic_and_split_over_micro_batches():
    _, sp, train, val = _data()
    budget = 64
    task = TranslationTask(train, val, sp, seed=3, min_sentences=1)
    n_buckets = len(task.buckets(budget))
    assert n_buckets > 4
    # one epoch visits every pair once, each step within the token budget
    seen = []
    for step in range(n_buckets):
        b = task.batch(step, 0, 1, 0, 1, budget)
        assert b.src.size(0) * max(b.src.size(1), b.tgt_in.size(1)) <= budget
        seen += [tuple(r) for r in b.src.tolist()]
    assert len(seen) == 20 and len(set(seen)) == 20
    # the same step gives the same batch; a fresh task (a resumed run) too
    again = TranslationTask(train, val, sp, seed=3, min_sentences=1)
    for step in (0, 5, n_buckets + 2):
        assert all(torch.equal(x, y) for x, y in zip(task.batch(step, 0, 1, 0, 1, budget),
                                                     again.batch(step, 0, 1, 0, 1, budget)))
    # epochs visit the buckets in different orders
    orders = [task.epoch_order(e, budget).tolist() for e in range(4)]
    assert len({tuple(o) for o in orders}) > 1 and all(sorted(o) == list(range(n_buckets)) for o in orders)


def test_micro_batches_and_ranks_partition_the_step():
    _, sp, train, val = _data()
    task = TranslationTask(train, val, sp, seed=3, min_sentences=4)
    assert min(len(b) for b in task.buckets(96)) >= 4  # small buckets merged into their neighbours

    def sentences(batches):
        return sorted(tuple(t for t in row if t != sp.pad) for b in batches for row in b.tgt_out.tolist())

    for step in range(6):
        whole = sentences([task.batch(step, 0, 1, 0, 1, 96)])
        for n_micro, world in ((2, 1), (1, 2), (2, 2)):
            parts = [task.batch(step, m, n_micro, r, world, 96) for m in range(n_micro) for r in range(world)]
            assert all(p.src.size(0) >= 1 for p in parts)
            assert sentences(parts) == whole
    with pytest.raises(ConfigError, match="min_sentences"):
        task.batch(0, 0, 50, 0, 1, 96)


def test_loss_and_evaluate():
    tok, sp, train, val = _data()
    model = _model(tok)
    task = TranslationTask(train, val, sp, seed=0, label_smoothing=0.1, bleu_sentences=4,
                           tgt_decode=tok.decode)
    b = task.batch(0, 0, 1, 0, 1, 128)
    loss, n = task.loss(model, b)
    assert int(n) == int((b.tgt_out != sp.pad).sum())
    logits = model(b.src, b.tgt_in, b.src_padding_mask)
    ref = F.cross_entropy(logits.flatten(0, 1), b.tgt_out.flatten(), ignore_index=sp.pad, label_smoothing=0.1)
    torch.testing.assert_close(loss, ref)
    model.train()
    out = task.evaluate(model)
    assert model.training
    assert set(out) >= {"val_loss", "val_nll", "val_ppl", "val_bleu", "val_chrf"}
    assert out["val_ppl"] == pytest.approx(np.exp(out["val_nll"]))
    assert out["val_loss"] > out["val_nll"] * 0.5
    # the exact mean over every validation target token, however the batches fall
    model.eval()
    with torch.no_grad():
        nll, count = 0.0, 0
        for i in range(len(val)):
            one = collate(val, [i], sp)
            lg = model(one.src, one.tgt_in, one.src_padding_mask)
            nll += F.cross_entropy(lg[0], one.tgt_out[0], reduction="sum").item()
            count += one.tgt_out.numel()
    assert out["val_nll"] == pytest.approx(nll / count, rel=1e-5)


def test_a_few_noam_steps_reduce_the_loss(tmp_path):
    tok, sp, train, val = _data()
    model = _model(tok, dropout=0.1)
    task = TranslationTask(train, val, sp, seed=0)
    cfg = TrainConfig(max_steps=40, batch_size=128, optimizer="adam", schedule="noam", lr=2.0,
                      warmup_steps=10, beta2=0.98, eps=1e-9, weight_decay=0.0, grad_clip=0.0,
                      log_interval=5, eval_interval=0, precision="fp32", device="cpu", progress=False,
                      seed=0)
    trainer = Trainer(model, task, cfg, tmp_path / "run")
    first = task.evaluate(model)["val_loss"]
    result = trainer.fit()
    history = read_metrics(tmp_path / "run")
    losses = [r["loss"] for r in history]
    assert losses[-1] < losses[0] - 0.2
    assert result["val_loss"] < first - 1.0
    # the Noam schedule: warmup then decay, peak at warmup_steps
    lrs = [r["lr"] for r in history]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs)
