"""The building blocks against their equations and against torch.nn with the same weights."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.nn import (
    FeedForward,
    MultiHeadAttention,
    RMSNorm,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TransformerBlock,
    scaled_dot_product_attention,
)
from lmlab.nn.attention import causal_mask


def _qkv(b=2, h=3, t=5, s=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, h, t, d, generator=g),
        torch.randn(b, h, s, d, generator=g),
        torch.randn(b, h, s, d, generator=g),
    )


def test_eager_attention_is_the_equation():
    q, k, v = _qkv()
    out, w = scaled_dot_product_attention(q, k, v, fused=False, need_weights=True)
    ref_w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.size(-1)), dim=-1)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(out, ref_w @ v)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 5))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_equals_eager(causal, padded):
    q, k, v = _qkv(t=7, s=7)
    mask = None
    if padded:  # batch row 1 has its last 3 keys padded
        keep = torch.ones(2, 7, dtype=torch.bool)
        keep[1, 4:] = False
        mask = keep[:, None, None, :]
    fused, _ = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, fused=True)
    eager, w = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, fused=False, need_weights=True)
    assert (fused - eager).abs().max() < 1e-5
    if causal:
        assert torch.all(w[..., 0, 1:] == 0)  # the first query sees only the first key
    if padded:
        assert torch.all(w[1, ..., 4:] == 0)  # nobody attends to padding


def test_causal_mask_aligned_to_the_end():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def _copy_to_torch_mha(ours: MultiHeadAttention, e: int, h: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(e, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj.weight)
        ref.in_proj_bias.copy_(ours.in_proj.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref


@pytest.mark.parametrize("mode", ["self", "causal", "cross", "padded"])
@pytest.mark.parametrize("fused", [True, False])
def test_multihead_attention_matches_torch(mode, fused):
    torch.manual_seed(0)
    e, h = 32, 4
    ours = MultiHeadAttention(e, h, causal=(mode == "causal"), fused=fused)
    ref = _copy_to_torch_mha(ours, e, h)
    x = torch.randn(3, 6, e, requires_grad=True)
    ctx = torch.randn(3, 9, e, requires_grad=True) if mode == "cross" else None
    pad = None
    if mode == "padded":
        pad = torch.zeros(3, 6, dtype=torch.bool)
        pad[0, 4:] = True
        pad[2, 5:] = True
    out, _ = ours(x, context=ctx, padding_mask=pad)
    kv = ctx if ctx is not None else x
    attn_mask = nn.Transformer.generate_square_subsequent_mask(6) if mode == "causal" else None
    ref_out, _ = ref(x, kv, kv, key_padding_mask=pad, attn_mask=attn_mask, need_weights=False)
    assert (out - ref_out).abs().max() < 1e-5
    # gradients with respect to the inputs and to every weight
    grad = torch.randn_like(out)
    g_ours = torch.autograd.grad(out, [x, ours.in_proj.weight, ours.out_proj.weight], grad)
    g_ref = torch.autograd.grad(ref_out, [x, ref.in_proj_weight, ref.out_proj.weight], grad)
    for a, b in zip(g_ours, g_ref):
        assert (a - b).abs().max() < 1e-5


def test_kv_cache_incremental_equals_full():
    torch.manual_seed(0)
    from lmlab.nn import KVCache

    mha = MultiHeadAttention(16, 2, causal=True).eval()
    x = torch.randn(2, 8, 16)
    full, _ = mha(x)
    cache = KVCache(max_len=8)
    parts = [mha(x[:, :5], cache=cache)[0]] + [mha(x[:, i : i + 1], cache=cache)[0] for i in range(5, 8)]
    assert cache.length == 8
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="overflow"):
        mha(x[:, :1], cache=cache)


def test_sinusoidal_table_formula():
    pe = SinusoidalPositionalEncoding(50, 16)(50)
    pos, i = 7, 3
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 16)), abs=1e-6)


def test_rotary_depends_only_on_relative_position():
    rope = RotaryEmbedding(8, 64)
    q = torch.randn(1, 1, 1, 8)
    k = torch.randn(1, 1, 1, 8)
    dots = [(rope(q, p + 3) * rope(k, p)).sum().item() for p in (0, 5, 20)]
    assert dots[0] == pytest.approx(dots[1], abs=1e-4) and dots[0] == pytest.approx(dots[2], abs=1e-4)
    assert torch.allclose(rope(q, 0), q)  # position 0 is no rotation
    assert torch.allclose(rope(q, 9).norm(), q.norm(), atol=1e-5)  # rotations keep the norm


def test_rmsnorm_formula():
    x = torch.randn(4, 10)
    n = RMSNorm(10)
    torch.testing.assert_close(n(x), x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh", "swiglu"])
def test_feedforward(act):
    ff = FeedForward(8, 16, act)
    x = torch.randn(2, 3, 8)
    h = ff.fc1(x)
    h = {
        "relu": F.relu(h),
        "gelu": F.gelu(h),
        "gelu_tanh": F.gelu(h, approximate="tanh"),
        "swiglu": F.silu(h) * (ff.gate(x) if ff.gate is not None else 0),
    }[act]
    torch.testing.assert_close(ff(x), ff.fc2(h))


def _load_torch_layer(ours: TransformerBlock, ref: nn.Module) -> None:
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(ours.self_attn.in_proj.weight)
        ref.self_attn.in_proj_bias.copy_(ours.self_attn.in_proj.bias)
        ref.self_attn.out_proj.weight.copy_(ours.self_attn.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(ours.self_attn.out_proj.bias)
        if ours.cross_attn is not None:
            ref.multihead_attn.in_proj_weight.copy_(ours.cross_attn.in_proj.weight)
            ref.multihead_attn.in_proj_bias.copy_(ours.cross_attn.in_proj.bias)
            ref.multihead_attn.out_proj.weight.copy_(ours.cross_attn.out_proj.weight)
            ref.multihead_attn.out_proj.bias.copy_(ours.cross_attn.out_proj.bias)
            ref.norm2.load_state_dict(ours.norm_cross.state_dict())
            ref.norm3.load_state_dict(ours.norm2.state_dict())
        else:
            ref.norm2.load_state_dict(ours.norm2.state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        ref.linear1.load_state_dict(ours.ffn.fc1.state_dict())
        ref.linear2.load_state_dict(ours.ffn.fc2.state_dict())


@pytest.mark.parametrize("pre_norm", [False, True])
def test_encoder_layer_matches_torch(pre_norm):
    torch.manual_seed(0)
    ours = TransformerBlock(32, 4, 64, activation="relu", pre_norm=pre_norm).eval()
    ref = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=pre_norm).eval()
    _load_torch_layer(ours, ref)
    for p in ours.parameters():  # non-trivial norm parameters too
        p.data.add_(0.01 * torch.randn_like(p))
    _load_torch_layer(ours, ref)
    x = torch.randn(2, 7, 32)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    out, _ = ours(x, padding_mask=pad)
    ref_out = ref(x, src_key_padding_mask=pad)
    assert (out[~pad] - ref_out[~pad]).abs().max() < 1e-5


def test_decoder_layer_matches_torch():
    torch.manual_seed(0)
    ours = TransformerBlock(
        32, 4, 64, activation="relu", pre_norm=False, causal=True, cross_attention=True
    ).eval()
    ref = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()
    _load_torch_layer(ours, ref)
    x, mem = torch.randn(2, 6, 32), torch.randn(2, 9, 32)
    mem_pad = torch.zeros(2, 9, dtype=torch.bool)
    mem_pad[0, 7:] = True
    out, _ = ours(x, context=mem, context_padding_mask=mem_pad)
    ref_out = ref(
        x,
        mem,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(6),
        tgt_is_causal=True,
        memory_key_padding_mask=mem_pad,
    )
    assert (out - ref_out).abs().max() < 1e-5
