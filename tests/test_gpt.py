import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.models.gpt import GPT, GPTConfig


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def test_logits_shape_and_weight_tying():
    m = tiny()
    assert m(torch.randint(0, 50, (3, 10))).shape == (3, 10, 50)
    assert m.lm_head.weight is m.tok_emb.weight
    assert tiny(tie_weights=False).lm_head.weight is not tiny(tie_weights=False).tok_emb.weight


def test_gpt2_small_size():
    with torch.device("meta"):
        m = GPT(
            GPTConfig(
                vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, activation="gelu_tanh"
            )
        )
    assert sum(p.numel() for p in m.parameters()) == 124_439_808  # GPT-2 small, tied


def test_gpt2_initialisation():
    m = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=256))
    assert m.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    proj = m.blocks[0].self_attn.out_proj.weight
    assert proj.std().item() == pytest.approx(0.02 / (2 * 4) ** 0.5, rel=0.05)
    assert torch.all(m.blocks[0].ffn.fc1.bias == 0)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
def test_causal(pos):
    m = tiny(pos_embedding=pos)
    x = torch.randint(0, 50, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 50
    torch.testing.assert_close(m(x)[:, :8], m(y)[:, :8])
    assert not torch.allclose(m(x)[:, 8:], m(y)[:, 8:])


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope"])
@pytest.mark.parametrize("attention", ["fused", "eager"])
def test_cache_equals_full_forward(pos, attention):
    m = tiny(pos_embedding=pos, attention=attention)
    x = torch.randint(0, 50, (2, 20))
    full = m(x)
    cache = m.new_cache(2)
    steps = [m(x[:, :7], cache=cache)] + [m(x[:, i : i + 1], cache=cache) for i in range(7, 20)]
    assert cache.length == 20
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5


def test_attention_weights_returned():
    m = tiny(attention="eager")
    logits, att = m(torch.randint(0, 50, (1, 6)), need_weights=True)
    assert len(att) == 2 and att[0].shape == (1, 2, 6, 6)
    assert torch.allclose(att[1].sum(-1), torch.ones(1, 2, 6))
    assert torch.all(att[0][0, 0].triu(1) == 0)


def test_too_long_and_bad_config():
    m = tiny()
    with pytest.raises(ValueError, match="context length 32"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ConfigError, match="divisible"):
        GPT(GPTConfig(vocab_size=10, n_embd=30, n_head=4))
    with pytest.raises(ConfigError, match="pos_embedding"):
        GPT(GPTConfig(vocab_size=10, pos_embedding="alibi"))


def test_backward_reaches_every_parameter():
    m = tiny(dropout=0.1).train()
    x = torch.randint(0, 50, (2, 16))
    m(x).logsumexp(-1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
