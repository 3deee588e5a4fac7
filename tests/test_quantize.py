"""Tests for lmlab.quantize: int8 linear layers, a quantized GPT's logits and greedy tokens, the KV cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.generate import generate
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.quantize import (
    METHODS,
    DynamicInt8Linear,
    WeightOnlyInt8Linear,
    quantize_int8,
    quantize_weight_int8,
)

# dynamic: activations are rounded to int8 too, so its error is a few times that of weight-only
LOGIT_TOLERANCE = {"dynamic": 0.05, "weight_only": 0.02}



def tiny(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm()).item()


def test_weight_quantization_per_channel():
    w = torch.randn(6, 10) * torch.arange(1, 7)[:, None]  # rows of very different ranges
    q, s = quantize_weight_int8(w)
    assert q.dtype == torch.int8 and s.shape == (6,)
    assert q.abs().amax(dim=1).tolist() == [127] * 6  # every row uses the full range
    assert (q.float() * s[:, None] - w).abs().max() <= s.max() / 2 + 1e-6  # rounding error <= half a step


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_close_to_float(method, bias):
    torch.manual_seed(0)
    lin = nn.Linear(64, 48, bias=bias)
    x = torch.randn(3, 5, 64)
    q = quantize_int8(nn.Sequential(lin), method)[0]
    assert isinstance(q, DynamicInt8Linear if method == "dynamic" else WeightOnlyInt8Linear)
    with torch.inference_mode():
        y, yq = lin(x), q(x)
    assert yq.shape == y.shape and yq.dtype == torch.float32
    assert rel_error(y, yq) < LOGIT_TOLERANCE[method] / 2


@pytest.mark.parametrize("method", METHODS)
def test_gpt_logits_close(method):
    m = tiny()
    q = quantize_int8(m, method)
    x = torch.randint(0, 50, (4, 24))
    with torch.inference_mode():
        ref, out = m(x), q(x)
    assert rel_error(ref, out) < LOGIT_TOLERANCE[method]
    assert (ref.argmax(-1) == out.argmax(-1)).float().mean() >= 0.9
    # every linear layer is int8, the output projection included; no float nn.Linear is left
    assert not any(type(mod) is nn.Linear for mod in q.modules())
    assert not isinstance(q.lm_head, nn.Linear)
    # the original is untouched (a copy was quantized), weight tying included
    assert type(m.lm_head) is nn.Linear and m.lm_head.weight is m.tok_emb.weight
    assert not q.training


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_tokens_mostly_equal(method, seed):
    m = tiny(seed)
    q = quantize_int8(m, method)
    prompt = torch.randint(0, 50, (4, 4), generator=torch.Generator().manual_seed(seed))
    ref = generate(m, prompt, 20, temperature=0)
    out = generate(q, prompt, 20, temperature=0)
    assert out.shape == ref.shape
    assert torch.equal(out[:, :4], prompt)
    assert (out == ref)[:, 4:].float().mean() >= 0.8


@pytest.mark.parametrize("method", METHODS)
def test_cache_path(method):
    """The quantized model follows the Model protocol: incremental decoding with the KV cache works."""
    q = quantize_int8(tiny(), method)
    x = torch.randint(0, 50, (2, 12))
    with torch.inference_mode():
        full = q(x)
        cache = q.new_cache(2)
        steps = [q(x[:, :5], cache=cache)] + [q(x[:, i : i + 1], cache=cache) for i in range(5, 12)]
    assert cache.length == 12
    incremental = torch.cat(steps, dim=1)
    # dynamic quantization scales activations by the range of each call's input, so the two differ
    # by rounding; weight-only differs only by float summation order
    assert rel_error(full, incremental) < (LOGIT_TOLERANCE[method] if method == "dynamic" else 1e-5)
    prompt = x[:, :3]
    cached = generate(q, prompt, 15, temperature=0, use_cache=True)
    recomputed = generate(q, prompt, 15, temperature=0, use_cache=False)
    assert cached.shape == (2, 18)
    agree = (cached == recomputed)[:, 3:].float().mean()
    assert agree == 1.0 if method == "weight_only" else agree >= 0.8
    # sampling and the sliding window (past block_size) work too
    sampled = generate(q, prompt, 40, temperature=1.0, top_k=10, seed=3)
    assert sampled.shape == (2, 43) and int(sampled.max()) < 50


def test_inplace_and_untied():
    m = tiny(tie_weights=False)
    q = quantize_int8(m, inplace=True)
    assert q is m and isinstance(m.lm_head, DynamicInt8Linear)
    assert not any(p.requires_grad for p in q.parameters())


def test_errors():
    with pytest.raises(ValueError, match="unknown int8 method"):
        quantize_int8(tiny(), method="int4")
    m = tiny().to(torch.device("meta"))
    with pytest.raises(ValueError, match="CPU"):
        quantize_int8(m)


def test_pipeline_and_cli_quantize(tmp_path, capsys):
    import lmlab
    from lmlab.cli import main
    from lmlab.errors import ConfigError
    from lmlab.interop import hf_run_config, save_run
    from lmlab.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["to be or not to be, that is the question\n"])
    model = tiny(vocab_size=tok.vocab_size)
    run_dir = save_run(model, tok, hf_run_config(model, tok), tmp_path / "run")
    ref = lmlab.load(run_dir)
    p = lmlab.load(run_dir, quantize="int8")
    assert isinstance(p.model.lm_head, DynamicInt8Linear) and type(ref.model.lm_head) is nn.Linear
    assert p.device == torch.device("cpu")
    text = p.generate("to be", max_new_tokens=12, temperature=0)
    assert isinstance(text, str) and len(text) > 0
    with pytest.raises(ConfigError, match="int4"):
        lmlab.load(run_dir, quantize="int4")
    assert (
        main(
            [
                "generate",
                str(run_dir),
                "--prompt",
                "to be",
                "--max-new-tokens",
                "8",
                "--temperature",
                "0",
                "--quantize",
                "int8",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("to be")
