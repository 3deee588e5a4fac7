"""Scaled dot-product attention, multi-head attention and the KV cache.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V                      (Vaswani et al., 2017, eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Two paths compute the same thing: the *eager* path writes the equation out and can return the
attention weights (for pictures and teaching); the *fused* path calls
``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels) for speed.

Mask convention (as in ``F.scaled_dot_product_attention``): a boolean ``mask`` broadcastable to
(B, H, T, S) is True where a query may attend to a key. Padding is given to ``MultiHeadAttention``
as ``padding_mask`` (B, S), True at padded key positions (the convention of ``torch.nn``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.nn.positional import RotaryEmbedding


def causal_mask(t_q: int, t_k: int, device: torch.device | None = None) -> Tensor:
    """(t_q, t_k) bool: query i (the last t_q of t_k positions) may see key j iff j <= i + (t_k - t_q)."""
    offset = t_k - t_q
    i = torch.arange(t_q, device=device)[:, None]
    j = torch.arange(t_k, device=device)[None, :]
    return j <= i + offset


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    fused: bool = True,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """softmax(q kᵀ / √d) v for q: (B, H, T, D), k, v: (B, H, S, D).

    Returns ((B, H, T, D), the weights (B, H, T, S) if ``need_weights`` else None).

    ``causal`` aligns the causal mask to the end (query i is position S - T + i), which is what a
    KV cache needs. ``need_weights`` forces the eager path.
    """
    t_q, t_k = q.size(-2), k.size(-2)
    if causal:
        if t_q == 1:  # one new token sees the whole cache
            causal = False
        elif t_q != t_k or mask is not None:  # prefill after a cache, or causal + padding
            cm = causal_mask(t_q, t_k, q.device)
            mask = cm if mask is None else (mask & cm)
            causal = False
    if fused and not need_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal)
        return out, None
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
    if causal:
        mask = causal_mask(t_q, t_k, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    attn = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return attn @ v, (weights if need_weights else None)


class KVCache:
    """Keys and values of one attention layer for incremental decoding.

    Self-attention: ``update`` appends the new positions' keys/values into buffers preallocated
    for ``max_len`` positions and returns everything so far. Cross-attention: ``set_static`` stores
    the encoder's keys/values once per sentence; ``is_static`` tells the layer to reuse them.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.k: Tensor | None = None  # (B, H, max_len, D)
        self.v: Tensor | None = None
        self.length = 0
        self.is_static = False
        # self-attention: the buffers self.k / self.v are the first rows of, and a second pair that
        # ``reorder`` gathers into (then the two swap): no fresh memory, hence no page faults, per step
        self._buffers: tuple[Tensor, Tensor] | None = None
        self._spare: tuple[Tensor, Tensor] | None = None

    def update(self, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Append (B, H, T, D) keys/values; return (B, H, length, D) views of all of them."""
        b, h, t, d = k_new.shape
        if self.k is None or self.k.shape[0] != b or self.k.dtype != k_new.dtype:
            self.k = k_new.new_empty(b, h, self.max_len, d)
            self.v = v_new.new_empty(b, h, self.max_len, d)
            self._buffers = (self.k, self.v)
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        self.k[:, :, self.length : end] = k_new
        self.v[:, :, self.length : end] = v_new
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def set_static(self, k: Tensor, v: Tensor) -> None:
        self.k, self.v, self.length, self.is_static = k, v, k.size(2), True
        self._buffers = self._spare = None

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search), in that order.

        A static (cross-attention) cache is gathered whole; a self-attention cache copies only its
        ``length`` filled positions into a second buffer of the same capacity (the positions past
        ``length`` hold nothing yet), so a reorder costs O(length), not O(max_len); the two buffers
        are kept and swap roles at every reorder.
        """
        if self.k is None or self.v is None:
            return
        if self.is_static:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
            return
        n = self.length
        if n == 0:  # nothing cached yet: ``update`` allocates buffers of the new batch size
            self.k = self.v = None
            return
        rows, shape = index.numel(), self.k.shape[1:]
        if self.k.requires_grad or self.v.requires_grad:  # out= does not record autograd: new buffers
            k, v = self.k.new_empty((rows, *shape)), self.v.new_empty((rows, *shape))
            k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
            v[:, :, :n] = self.v[:, :, :n].index_select(0, index)
            self.k, self.v, self._buffers, self._spare = k, v, (k, v), None
            return
        spare = self._spare
        if (spare is None or spare[0].size(0) < rows or spare[0].shape[1:] != shape
                or spare[0].dtype != self.k.dtype or spare[0].device != self.k.device):
            spare = (self.k.new_empty((rows, *shape)), self.v.new_empty((rows, *shape)))
        k, v = spare[0][:rows], spare[1][:rows]  # first rows of a contiguous buffer: contiguous
        torch.index_select(self.k[:, :, :n], 0, index, out=k[:, :, :n])  # gather straight into them
        torch.index_select(self.v[:, :, :n], 0, index, out=v[:, :, :n])
        self._spare, self._buffers = self._buffers, spare
        self.k, self.v = k, v

    def reset(self) -> None:
        if self.is_static:
            self.k = self.v = None
        self.length = 0
        self.is_static = False


class ModelCache:
    """One ``KVCache`` per layer (and per cross-attention layer, if any); ``length`` = positions cached."""

    def __init__(self, n_layers: int, max_len: int, cross: bool = False) -> None:
        self.max_len = max_len
        self.layers = [KVCache(max_len) for _ in range(n_layers)]
        self.cross = [KVCache(max_len) for _ in range(n_layers)] if cross else None

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        for c in self.layers + (self.cross or []):
            c.reset()

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of every cache (self-attention and cross-attention)."""
        self.reorder_self(index)
        self.reorder_cross(index)

    def reorder_self(self, index: Tensor) -> None:
        """Keep rows ``index`` of the self-attention caches only."""
        for c in self.layers:
            c.reorder(index)

    def reorder_cross(self, index: Tensor) -> None:
        """Keep rows ``index`` of the cross-attention caches only (their rows are memory rows, which
        may be fewer than the decoding rows: see ``MultiHeadAttention`` on grouped queries)."""
        for c in self.cross or []:
            c.reorder(index)


class MultiHeadAttention(nn.Module):
    """Multi-head attention usable as self-attention, causal self-attention and cross-attention.

    The input projections W^Q, W^K, W^V are stacked in one (3·d_model, d_model) matrix, the layout of
    ``torch.nn.MultiheadAttention.in_proj_weight`` (and of GPT-2's ``c_attn``, transposed).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = False,
        rotary: RotaryEmbedding | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.causal, self.dropout, self.fused, self.rotary = causal, dropout, fused, rotary
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape  # (B, T, d_model) -> (B, H, T, D)
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, d_model) queries; context: (B, S, d_model) for cross-attention (else self-attention).

        padding_mask: (B, S) True at padded keys. cache: this layer's KVCache for incremental decoding.
        Returns (B, T, d_model) and, if ``need_weights``, the weights (B, H, T, S).

        Grouped cross-attention (beam search): the context (or the static cache) may have B / g rows
        for B query rows, query rows b·g .. b·g + g - 1 all attending to context row b (its
        ``padding_mask`` is then (B / g, S)). The g queries of a context row are attended as g·T
        positions of one row, so the beams of a sentence share its keys/values without copies.
        """
        b, t, e = x.shape
        if context is None:  # self-attention: one matmul for q, k, v
            q, k, v = self.in_proj(x).split(e, dim=-1)
            q, k, v = self._heads(q), self._heads(k), self._heads(v)
            if self.rotary is not None:
                offset = cache.length if cache is not None else 0
                q, k = self.rotary(q, offset), self.rotary(k, offset)
            if cache is not None:
                k, v = cache.update(k, v)
        else:  # cross-attention: queries from x, keys/values from the context (computed once if cached)
            w, bias = self.in_proj.weight, self.in_proj.bias
            if cache is not None and cache.is_static:
                k, v = cache.k, cache.v
            else:
                k, v = F.linear(context, w[e:], None if bias is None else bias[e:]).split(e, dim=-1)
                k, v = self._heads(k), self._heads(v)
                if cache is not None:
                    cache.set_static(k, v)
            q = F.linear(x, w[:e], None if bias is None else bias[:e])
            group = self._query_group(b, k.size(0))
            if group > 1:  # g consecutive query rows share one context row: (b, t) -> (b / g, g·t)
                q = q.reshape(b // group, group * t, e)
            q = self._heads(q)
        mask = None
        if padding_mask is not None:  # (B, S) True=pad -> (B, 1, 1, S) True=attend
            mask = ~padding_mask[:, None, None, :]
        out, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            causal=self.causal and context is None,
            dropout_p=self.dropout if self.training else 0.0,
            fused=self.fused,
            need_weights=need_weights,
        )
        out = out.transpose(1, 2).reshape(b, t, e)  # (B, H, T, D) -> (B, T, d_model)
        if weights is not None and weights.size(0) != b:  # grouped queries: (b/g, H, g·t, S) -> (b, H, t, S)
            bk, h, _, s = weights.shape
            weights = weights.view(bk, h, b // bk, t, s).transpose(1, 2).reshape(b, h, t, s)
        return self.out_proj(out), weights

    @staticmethod
    def _query_group(b: int, b_context: int) -> int:
        """How many consecutive query rows share one context row (1: one context row per query row)."""
        if b == b_context:
            return 1
        if b_context == 0 or b % b_context:
            raise ValueError(
                f"cross-attention: {b} query rows cannot be grouped over {b_context} context rows"
            )
        return b // b_context
