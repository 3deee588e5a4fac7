"""The encoder-decoder Transformer: shapes, parity with torch.nn.Transformer, masking, padding,
weight sharing and cached decoding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.config import build_config
from lmlab.errors import ConfigError
from lmlab.models import build_model
from lmlab.models.transformer import TRANSFORMER_SIZES, Transformer, TransformerConfig

PAD = 0



def tiny(**kw) -> Transformer:
    cfg = dict(src_vocab_size=23, tgt_vocab_size=19, d_model=32, n_heads=4, n_encoder_layers=2,
               n_decoder_layers=2, d_ff=64, dropout=0.0, max_len=40)
    cfg.update(kw)
    return Transformer(TransformerConfig(**cfg)).eval()


def test_shapes_and_named_sizes():
    torch.manual_seed(0)
    m = tiny()
    src, tgt = torch.randint(1, 23, (3, 7)), torch.randint(1, 19, (3, 5))
    memory = m.encode(src)
    assert memory.shape == (3, 7, 32)
    assert m.decode(tgt, memory).shape == (3, 5, 19)
    assert m(src, tgt).shape == (3, 5, 19)
    logits, w = m.decode(tgt, memory, need_weights=True)
    assert len(w["self"]) == len(w["cross"]) == 2
    assert w["self"][0].shape == (3, 4, 5, 5) and w["cross"][0].shape == (3, 4, 5, 7)
    torch.testing.assert_close(w["cross"][0].sum(-1), torch.ones(3, 4, 5))
    base = TransformerConfig.named("base", src_vocab_size=100, tgt_vocab_size=100)
    assert (base.d_model, base.n_heads, base.n_encoder_layers, base.d_ff) == (512, 8, 6, 2048)
    assert base.dropout == 0.1
    big = TransformerConfig.named("big")
    assert (big.d_model, big.n_heads, big.n_decoder_layers, big.d_ff, big.dropout) == (1024, 16, 6, 4096, 0.3)
    assert set(TRANSFORMER_SIZES) >= {"base", "big", "small", "tiny"}
    assert not base.pre_norm and base.pos_embedding == "sinusoidal" and base.activation == "relu"
    with pytest.raises(ConfigError, match="unknown Transformer size"):
        TransformerConfig.named("huge")
    with pytest.raises(ConfigError, match="divisible"):
        tiny(n_heads=5)


def test_family_registry_and_config():
    cfg = build_config({"family": "transformer", "model": {"d_model": "32", "n_heads": 4, "d_ff": 64,
                                                          "n_encoder_layers": 1, "n_decoder_layers": 1,
                                                          "src_vocab_size": 11, "tgt_vocab_size": 11}})
    assert isinstance(cfg.model, TransformerConfig) and cfg.model.d_model == 32
    model = build_model("transformer", cfg.model)
    assert isinstance(model, Transformer) and model.config.block_size == cfg.model.max_len
    with pytest.raises(ConfigError, match="pos_embedding"):
        build_config({"family": "transformer", "model": {"pos_embedding": "rope"}})


def _copy_layer(ours, ref) -> None:
    with torch.no_grad():
        for mine, theirs in (("self_attn", "self_attn"), ("cross_attn", "multihead_attn")):
            a = getattr(ours, mine)
            if a is None:
                continue
            b = getattr(ref, theirs)
            b.in_proj_weight.copy_(a.in_proj.weight)
            b.in_proj_bias.copy_(a.in_proj.bias)
            b.out_proj.weight.copy_(a.out_proj.weight)
            b.out_proj.bias.copy_(a.out_proj.bias)
        ref.linear1.load_state_dict(ours.ffn.fc1.state_dict())
        ref.linear2.load_state_dict(ours.ffn.fc2.state_dict())
        ref.norm1.load_state_dict(ours.norm1.state_dict())
        if ours.cross_attn is not None:
            ref.norm2.load_state_dict(ours.norm_cross.state_dict())
            ref.norm3.load_state_dict(ours.norm2.state_dict())
        else:
            ref.norm2.load_state_dict(ours.norm2.state_dict())


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@pytest.mark.parametrize("pre_norm", [False, True])
def test_whole_model_matches_torch_transformer(pre_norm):
    """Both stacks against torch.nn.Transformer with copied weights (embeddings are ours)."""
    torch.manual_seed(0)
    m = tiny(pre_norm=pre_norm)
    for p in m.parameters():  # non-trivial norm parameters and biases too
        p.data.add_(0.02 * torch.randn_like(p))
    ref = nn.Transformer(32, 4, 2, 2, 64, dropout=0.0, batch_first=True, norm_first=pre_norm).eval()
    for a, b in zip(m.encoder, ref.encoder.layers):
        _copy_layer(a, b)
    for a, b in zip(m.decoder, ref.decoder.layers):
        _copy_layer(a, b)
    if pre_norm:  # pre-LN stacks end in a final norm (torch.nn.Transformer always has one)
        ref.encoder.norm.load_state_dict(m.encoder_norm.state_dict())
        ref.decoder.norm.load_state_dict(m.decoder_norm.state_dict())
    else:  # post-LN: our stacks end in the last layer's norm; drop torch's extra final norms
        ref.encoder.norm = None
        ref.decoder.norm = None
    src, tgt = torch.randint(1, 23, (2, 9)), torch.randint(1, 19, (2, 6))
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    x_src = m._embed(src, m.src_emb, m.src_pos)
    x_tgt = m._embed(tgt, m.tgt_emb, m.tgt_pos)
    hidden = ref(x_src, x_tgt, src_key_padding_mask=pad, memory_key_padding_mask=pad,
                 tgt_mask=nn.Transformer.generate_square_subsequent_mask(6), tgt_is_causal=True)
    ours = m(src, tgt, src_padding_mask=pad)
    assert (m.out_proj(hidden) - ours).abs().max() < 1e-4
    mem_ref = ref.encoder(x_src, src_key_padding_mask=pad)
    assert (m.encode(src, pad)[~pad] - mem_ref[~pad]).abs().max() < 1e-5


def test_embeddings_scaled_and_positions_added():
    torch.manual_seed(0)
    m = tiny()
    src = torch.randint(1, 23, (1, 4))
    x = m._embed(src, m.src_emb, m.src_pos)
    expected = m.src_emb.weight[src[0]] * 32**0.5 + m.src_pos.pe[:4]
    torch.testing.assert_close(x[0], expected)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_is_causal(pre_norm):
    torch.manual_seed(0)
    m = tiny(pre_norm=pre_norm)
    src = torch.randint(1, 23, (2, 7))
    tgt = torch.randint(1, 19, (2, 8))
    changed = tgt.clone()
    changed[:, 5:] = torch.randint(1, 19, (2, 3))
    a, b = m(src, tgt), m(src, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3
    # the decoder does see the whole source
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] % 22) + 1
    assert (m(src2, tgt)[:, 0] - a[:, 0]).abs().max() > 1e-4


@pytest.mark.parametrize("pos_embedding", ["sinusoidal", "learned"])
def test_source_padding_does_not_change_real_outputs(pos_embedding):
    torch.manual_seed(0)
    m = tiny(pos_embedding=pos_embedding)
    src = torch.randint(1, 23, (1, 6))
    tgt = torch.randint(1, 19, (1, 5))
    ref_mem, ref_logits = m.encode(src), m(src, tgt)
    padded = torch.cat([src, torch.full((1, 4), PAD)], dim=1)
    mask = padded == PAD
    mem = m.encode(padded, mask)
    torch.testing.assert_close(mem[:, :6], ref_mem, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m(padded, tgt, src_padding_mask=mask), ref_logits, atol=1e-5, rtol=1e-5)
    # a batch with rows of different lengths gives each row its own unpadded result
    other = torch.randint(1, 23, (1, 10))
    batch = torch.cat([padded, other])
    out = m(batch, tgt.expand(2, -1), src_padding_mask=batch == PAD)
    torch.testing.assert_close(out[0], ref_logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], m(other, tgt)[0], atol=1e-5, rtol=1e-5)


def test_shared_and_tied_embeddings():
    m = tiny(src_vocab_size=19, share_embeddings=True)
    assert m.src_emb is m.tgt_emb
    assert m.out_proj.weight is m.src_emb.weight
    n_shared = m.num_params()
    untied = tiny(src_vocab_size=19, share_embeddings=False, tie_output=False)
    assert untied.src_emb is not untied.tgt_emb and untied.out_proj.weight is not untied.tgt_emb.weight
    assert untied.num_params() == n_shared + 2 * 19 * 32
    tied_out = tiny()
    assert tied_out.out_proj.weight is tied_out.tgt_emb.weight and tied_out.src_emb is not tied_out.tgt_emb
    # one gradient step moves the one shared matrix
    loss = m(torch.randint(0, 19, (2, 4)), torch.randint(0, 19, (2, 3))).logsumexp(-1).mean()
    loss.backward()
    assert m.src_emb.weight.grad is not None
    with pytest.raises(ConfigError, match="joint vocabulary"):
        tiny(src_vocab_size=23, share_embeddings=True)


@pytest.mark.parametrize("pre_norm,pos_embedding", [(False, "sinusoidal"), (True, "learned")])
def test_cached_decoding_equals_full(pre_norm, pos_embedding):
    torch.manual_seed(0)
    m = tiny(pre_norm=pre_norm, pos_embedding=pos_embedding)
    src = torch.randint(1, 23, (3, 8))
    pad = torch.zeros(3, 8, dtype=torch.bool)
    pad[0, 5:] = True
    pad[2, 7:] = True
    tgt = torch.randint(1, 19, (3, 7))
    full = m(src, tgt, src_padding_mask=pad)
    with torch.no_grad():
        state = m.start_decoding(src, pad, max_len=7)
        steps = [m.decode_step(tgt[:, i : i + 1], state) for i in range(7)]
    assert state.cache.length == 7 and state.cache.cross[0].is_static
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # prefill several tokens at once, then one at a time
    memory = m.encode(src, pad)
    cache = m.new_cache(3, max_len=7)
    parts = [m.decode(tgt[:, :4], memory, pad, cache=cache)]
    parts += [m.decode(tgt[:, i : i + 1], memory, pad, cache=cache) for i in range(4, 7)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    # expanded (beam) rows and reordering keep each row's own history
    state = m.start_decoding(src, pad, max_len=7, expand=2)
    assert state.n_rows == 6 and state.memory.shape[0] == 3  # beams share the encoder output
    out0 = m.decode_step(tgt.repeat_interleave(2, 0)[:, :1], state)
    state.reorder(torch.tensor([1, 0, 5, 4, 3, 2]))
    out1 = m.decode_step(tgt.repeat_interleave(2, 0)[[1, 0, 5, 4, 3, 2], 1:2], state)
    torch.testing.assert_close(out0[::2], full[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out1[[1, 5, 3]], full[:, 1], atol=1e-5, rtol=1e-5)


def test_too_long_is_an_error():
    m = tiny(max_len=6)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.ones(1, 7, dtype=torch.long), torch.ones(1, 2, dtype=torch.long))


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = tiny(dropout=0.3)
    src, tgt = torch.randint(1, 23, (2, 5)), torch.randint(1, 19, (2, 4))
    torch.testing.assert_close(m(src, tgt), m(src, tgt))
    m.train()
    assert (m(src, tgt) - m(src, tgt)).abs().max() > 0
