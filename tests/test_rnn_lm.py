"""Recurrent language models (family 'rnn'): the state as a decoding cache, generation, a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.config import build_config, load_config
from lmlab.errors import ConfigError
from lmlab.generate import generate
from lmlab.models import build_model
from lmlab.models.rnn import RNNLM, RNNConfig
from lmlab.runs import train_run

ASSET = Path(lmlab.__file__).parent / "assets" / "tinyshakespeare.txt"
CELLS = ["rnn", "lstm", "gru"]



def tiny(cell: str, **kw) -> RNNLM:
    torch.manual_seed(0)
    cfg = dict(cell=cell, vocab_size=11, n_embd=8, n_layer=2, **kw)
    return RNNLM(RNNConfig(**cfg)).eval()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "extra", [{}, {"hidden": 12}, {"hidden": 12, "tie_weights": False}, {"fused": False}]
)
def test_incremental_decoding_equals_full_forward(cell, extra):
    model = tiny(cell, **extra)
    idx = torch.randint(0, 11, (3, 9))
    with torch.no_grad():
        full = model(idx)
        assert full.shape == (3, 9, 11)
        cache = model.new_cache(3)
        assert cache.length == 0
        parts = [model(idx[:, :4], cache=cache)]
        assert cache.length == 4
        parts += [model(idx[:, t : t + 1], cache=cache) for t in range(4, 9)]
        assert cache.length == 9
        torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(idx, last_only=True), full[:, -1:], atol=1e-6, rtol=1e-6)
        cache.reset()
        assert cache.length == 0 and cache.state is None
        torch.testing.assert_close(model(idx, cache=cache), full, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_fused_and_step_models_agree(cell):
    model = tiny(cell)
    idx = torch.randint(0, 11, (2, 6))
    with torch.no_grad():
        fused = model(idx)
        model.rnn.fused = False
        torch.testing.assert_close(model(idx), fused, atol=1e-5, rtol=1e-5)


def test_cache_reorder_keeps_rows():
    model = tiny("lstm")
    idx = torch.randint(0, 11, (3, 5))
    with torch.no_grad():
        cache = model.new_cache(3)
        model(idx, cache=cache)
        cache.reorder(torch.tensor([2, 0]))
        nxt = torch.randint(0, 11, (2, 1))
        got = model(nxt, cache=cache)
        want = model(torch.cat([idx[[2, 0]], nxt], dim=1))[:, -1:]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_generate_with_and_without_cache_agree(cell):
    model = tiny(cell)
    prompt = torch.randint(0, 11, (2, 4))
    a = generate(model, prompt, max_new_tokens=12, temperature=0, use_cache=True)
    b = generate(model, prompt, max_new_tokens=12, temperature=0, use_cache=False)
    assert a.shape == (2, 16)
    assert torch.equal(a, b)


def test_config_checks_and_registry():
    with pytest.raises(ConfigError, match="cell"):
        RNNLM(RNNConfig(cell="transformer", vocab_size=5))
    with pytest.raises(ConfigError, match="vocab_size"):
        RNNLM(RNNConfig())
    model = build_model("rnn", RNNConfig(cell="gru", vocab_size=7, n_embd=4))
    assert isinstance(model, RNNLM)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.config.block_size >= 100_000  # no window: generation never slides


@pytest.mark.parametrize("name", ["shakespeare-char-rnn", "shakespeare-char-lstm", "shakespeare-char-gru"])
def test_recipes_build(name):
    cfg = load_config(name)
    assert cfg.family == "rnn" and cfg.model.cell == name.rsplit("-", 1)[1]
    assert cfg.data.block_size == 128
    model = build_model("rnn", RNNConfig(**{**vars(cfg.model), "vocab_size": 65}))  # tiny Shakespeare
    assert 150_000 < model.num_params() < 300_000


def test_tiny_train_run_lowers_the_loss_and_generates(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text(ASSET.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    cfg = build_config(
        {
            "family": "rnn",
            "model": {"cell": "lstm", "n_embd": 32, "n_layer": 1},
            "tokenizer": {"kind": "char"},
            "data": {"path": str(text), "block_size": 32},
            "train": {
                "max_steps": 30,
                "batch_size": 8,
                "lr": 1e-2,
                "warmup_steps": 2,
                "log_interval": 1,
                "eval_interval": 0,
                "progress": False,
            },
        }
    )
    run_dir = tmp_path / "run"
    train_run(cfg, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 10
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    pipe = lmlab.load(run_dir)
    assert isinstance(pipe.model, RNNLM)
    out = pipe.generate("ab", max_new_tokens=10, temperature=0)
    assert isinstance(out, str) and len(out) > 0
