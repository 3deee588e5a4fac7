"""The Transformer layer: attention and feed-forward sub-layers, each wrapped in a residual connection.

    post-LN (the paper, BERT):   x = Norm(x + Dropout(Sublayer(x)))
    pre-LN  (GPT-2, most LLMs):  x = x + Dropout(Sublayer(Norm(x)))

A decoder layer of the encoder-decoder Transformer adds a cross-attention sub-layer between the two.
"""

from __future__ import annotations

from torch import Tensor, nn

from lmlab.nn.attention import KVCache, MultiHeadAttention
from lmlab.nn.feedforward import FeedForward
from lmlab.nn.norm import make_norm
from lmlab.nn.positional import RotaryEmbedding


class TransformerBlock(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        activation: str = "gelu",
        norm: str = "layernorm",
        norm_eps: float = 1e-5,
        pre_norm: bool = True,
        causal: bool = False,
        cross_attention: bool = False,
        bias: bool = True,
        rotary: RotaryEmbedding | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        attn_dropout = dropout if attn_dropout is None else attn_dropout
        self.self_attn = MultiHeadAttention(d_model, n_heads, attn_dropout, bias, causal, rotary, fused)
        self.norm1 = make_norm(norm, d_model, norm_eps, bias)
        self.cross_attn = (
            MultiHeadAttention(d_model, n_heads, attn_dropout, bias, False, None, fused)
            if cross_attention
            else None
        )
        self.norm_cross = make_norm(norm, d_model, norm_eps, bias) if cross_attention else None
        self.ffn = FeedForward(d_model, d_ff, activation, dropout, bias)
        self.norm2 = make_norm(norm, d_model, norm_eps, bias)
        self.dropout = nn.Dropout(dropout)

    def _sublayer(self, x: Tensor, norm: nn.Module, fn) -> tuple[Tensor, Tensor | None]:
        if self.pre_norm:
            out, w = fn(norm(x))
            return x + self.dropout(out), w
        out, w = fn(x)
        return norm(x + self.dropout(out)), w

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        context: Tensor | None = None,
        context_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """x: (B, T, d_model) -> ((B, T, d_model), {'self': weights, 'cross': weights} when need_weights)."""
        weights: dict[str, Tensor] = {}
        x, w = self._sublayer(
            x,
            self.norm1,
            lambda h: self.self_attn(h, padding_mask=padding_mask, cache=cache, need_weights=need_weights),
        )
        if w is not None:
            weights["self"] = w
        if self.cross_attn is not None:
            x, w = self._sublayer(
                x,
                self.norm_cross,
                lambda h: self.cross_attn(
                    h,
                    context=context,
                    padding_mask=context_padding_mask,
                    cache=cross_cache,
                    need_weights=need_weights,
                ),
            )
            if w is not None:
                weights["cross"] = w
        x, _ = self._sublayer(x, self.norm2, lambda h: (self.ffn(h), None))
        return x, weights
