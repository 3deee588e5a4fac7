"""The Transformer: an encoder-decoder for translation (Vaswani et al., 2017, "Attention Is All You Need").

    encoder:  z_0 = Dropout(√d_model · E_src[x] + PE),   z_l = EncoderLayer(z_{l-1})      l = 1..N
    decoder:  h_0 = Dropout(√d_model · E_tgt[y] + PE),   h_l = DecoderLayer(h_{l-1}, z_N) l = 1..N
    logits  = h_N W_outᵀ

An encoder layer is self-attention + feed-forward; a decoder layer is *masked* (causal) self-attention,
encoder-decoder (cross) attention over the encoder output ``memory`` = z_N, then feed-forward. Each
sub-layer sits in a residual connection; the paper normalises after the residual (post-LN,
``pre_norm=False``); ``pre_norm=True`` normalises the sub-layer input instead and adds a final
LayerNorm to each stack. With a joint source/target vocabulary the paper shares one matrix between
the two embeddings and the pre-softmax projection (``share_embeddings``).

Decoding one token at a time uses a ``ModelCache`` with cross-attention caches: the decoder's
self-attention keys/values grow by one position per step, and each layer's cross-attention keys and
values are computed from ``memory`` once per sentence (``KVCache.set_static``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.nn import (
    LearnedPositionalEmbedding,
    ModelCache,
    SinusoidalPositionalEncoding,
    TransformerBlock,
    make_norm,
)


@dataclass
class TransformerConfig:
    src_vocab_size: int = 0
    """Source vocabulary size (tokenizer + special tokens); 0 means: take it from the data."""
    tgt_vocab_size: int = 0
    """Target vocabulary size; 0 means: take it from the data."""
    d_model: int = 512
    n_heads: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048
    """Inner width of the position-wise feed-forward networks."""
    dropout: float = 0.1
    """P_drop: on every sub-layer output, on embeddings + positions, and inside the feed-forward net."""
    attn_dropout: float = 0.0
    """Dropout on the attention weights (the paper has none; some implementations use 0.1)."""
    pre_norm: bool = False
    """False: post-LN as in the paper, x = LayerNorm(x + Sublayer(x)). True: pre-LN (+ final norms)."""
    pos_embedding: str = "sinusoidal"
    """sinusoidal (the paper) or learned."""
    max_len: int = 256
    """The most positions of a source or target sentence (special tokens included)."""
    share_embeddings: bool = False
    """One matrix for source embedding, target embedding and output projection (joint vocabulary)."""
    tie_output: bool = True
    """Share the target embedding with the pre-softmax projection (implied by share_embeddings)."""
    activation: str = "relu"
    """relu (the paper), gelu, gelu_tanh or swiglu."""
    norm_eps: float = 1e-5
    bias: bool = True
    attention: str = "fused"
    """fused (F.scaled_dot_product_attention) or eager (written out; can return weights)."""

    @property
    def block_size(self) -> int:
        """The context length of the Model protocol: the most positions on either side."""
        return self.max_len

    @classmethod
    def named(cls, size: str, **overrides: Any) -> TransformerConfig:
        """A named size (``TRANSFORMER_SIZES``: base, big, small, tiny) with ``overrides`` applied."""
        if size not in TRANSFORMER_SIZES:
            raise ConfigError(f"unknown Transformer size '{size}'; valid: {', '.join(TRANSFORMER_SIZES)}")
        names = {f.name for f in fields(cls)}
        unknown = [k for k in overrides if k not in names]
        if unknown:
            valid = ", ".join(sorted(names))
            raise ConfigError(f"unknown TransformerConfig key '{unknown[0]}'; valid: {valid}")
        return replace(cls(**TRANSFORMER_SIZES[size]), **overrides)

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        for key, value, valid in [
            ("pos_embedding", self.pos_embedding, ("sinusoidal", "learned")),
            ("attention", self.attention, ("fused", "eager")),
            ("activation", self.activation, ("relu", "gelu", "gelu_tanh", "swiglu")),
        ]:
            if value not in valid:
                raise ConfigError(f"model.{key} = '{value}' is not one of: {', '.join(valid)}")
        for key in ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff", "max_len"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be positive (got {getattr(self, key)})")
        for key in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key} must be in [0, 1) (got {getattr(self, key)})")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                "model.share_embeddings needs one joint vocabulary, but src_vocab_size="
                f"{self.src_vocab_size} != tgt_vocab_size={self.tgt_vocab_size}"
            )


TRANSFORMER_SIZES: dict[str, dict[str, Any]] = {
    # Table 3 of the paper: N=6 layers per stack, d_model, h heads, d_ff, P_drop.
    "base": dict(d_model=512, n_heads=8, n_encoder_layers=6, n_decoder_layers=6, d_ff=2048, dropout=0.1),
    "big": dict(d_model=1024, n_heads=16, n_encoder_layers=6, n_decoder_layers=6, d_ff=4096, dropout=0.3),
    # Sizes that train in minutes on a CPU (Multi30k-scale data, short sentences).
    "small": dict(d_model=256, n_heads=4, n_encoder_layers=3, n_decoder_layers=3, d_ff=1024, dropout=0.1),
    "tiny": dict(d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=256, dropout=0.1),
}


@dataclass
class TransformerDecoderState:
    """What incremental decoding carries between steps: the encoder output and the KV cache.

    Rows are (sentence, beam) pairs; ``reorder(index)`` keeps rows ``index`` (beam search).

    The encoder output is not copied per beam: ``memory`` has one row per *memory row* and decoding
    row r reads memory row ``r // group``. ``start_decoding(expand=K)`` gives ``group = K`` (the K
    beams of sentence b are rows b·K .. b·K + K - 1) and the decoder's cross-attention attends the K
    beams of a sentence as K query positions over its one copy of the keys/values (the
    cross-attention caches have one row per memory row too). ``reorder`` keeps that sharing while
    each block of ``beam`` consecutive new rows comes from one sentence (what beam search does),
    dropping the memory rows of sentences no longer decoded; any other index falls back to one
    memory row per decoding row (``group = 1``, a gather, as with plain row-wise state).
    """

    memory: Tensor  # (M, S, d_model), M = n_rows / group
    src_padding_mask: Tensor | None  # (M, S), True at padding
    cache: ModelCache  # self-attention caches: n_rows rows; cross-attention caches: M rows
    group: int = 1
    """Decoding rows per memory row."""
    beam: int = 1
    """The block size that ``reorder`` tries to keep shared (``start_decoding``'s ``expand``)."""

    @property
    def n_rows(self) -> int:
        """How many rows (sentence, beam) are being decoded."""
        return self.memory.size(0) * self.group

    def reorder(self, index: Tensor) -> None:
        index = index.to(self.memory.device)
        mem = index // self.group if self.group > 1 else index  # the memory row of each new row
        k, n = self.beam, index.numel()
        if k > 1 and n % k == 0:
            blocks = mem.view(-1, k)
            if bool((blocks == blocks[:, :1]).all()):  # each block of k rows reads one memory row
                self._keep_memory(blocks[:, 0])
                self.group = k
                self.cache.reorder_self(index)
                return
        self._keep_memory(mem)
        self.group = 1
        self.cache.reorder_self(index)

    def _keep_memory(self, mem_index: Tensor) -> None:
        """Keep memory rows ``mem_index`` (and their cross-attention K/V); no copy if unchanged."""
        m = self.memory.size(0)
        if mem_index.numel() == m and torch.equal(mem_index, torch.arange(m, device=mem_index.device)):
            return
        self.memory = self.memory.index_select(0, mem_index)
        if self.src_padding_mask is not None:
            self.src_padding_mask = self.src_padding_mask.index_select(0, mem_index)
        self.cache.reorder_cross(mem_index)


class Transformer(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        config.validate()
        if config.src_vocab_size <= 0 or config.tgt_vocab_size <= 0:
            raise ConfigError(
                "model.src_vocab_size and model.tgt_vocab_size must be set (normally taken from the data)"
            )
        self.config = c = config
        self.src_emb = nn.Embedding(c.src_vocab_size, c.d_model)
        self.tgt_emb = self.src_emb if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.d_model)
        self.emb_scale = math.sqrt(c.d_model)  # "we multiply those weights by √d_model"
        if c.pos_embedding == "sinusoidal":  # fixed: one table serves both stacks
            self.src_pos: nn.Module = SinusoidalPositionalEncoding(c.max_len, c.d_model)
            self.tgt_pos: nn.Module = self.src_pos
        else:
            self.src_pos = LearnedPositionalEmbedding(c.max_len, c.d_model)
            self.tgt_pos = LearnedPositionalEmbedding(c.max_len, c.d_model)
        self.drop = nn.Dropout(c.dropout)

        def layer(decoder: bool) -> TransformerBlock:
            return TransformerBlock(
                c.d_model,
                c.n_heads,
                c.d_ff,
                dropout=c.dropout,
                attn_dropout=c.attn_dropout,
                activation=c.activation,
                norm="layernorm",
                norm_eps=c.norm_eps,
                pre_norm=c.pre_norm,
                causal=decoder,
                cross_attention=decoder,
                bias=c.bias,
                fused=c.attention == "fused",
            )

        self.encoder = nn.ModuleList(layer(decoder=False) for _ in range(c.n_encoder_layers))
        self.decoder = nn.ModuleList(layer(decoder=True) for _ in range(c.n_decoder_layers))
        # Post-LN stacks end in a norm already; pre-LN ones need a final one.
        self.encoder_norm = make_norm("layernorm", c.d_model, c.norm_eps, c.bias) if c.pre_norm else None
        self.decoder_norm = make_norm("layernorm", c.d_model, c.norm_eps, c.bias) if c.pre_norm else None
        self.out_proj = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        self.reset_parameters()
        if c.share_embeddings or c.tie_output:
            self.out_proj.weight = self.tgt_emb.weight

    def reset_parameters(self) -> None:
        """Xavier-uniform matrices, zero biases, unit norms; embeddings N(0, d_model^-1/2), so that
        √d_model · E[x] has unit variance and tied output logits start near unit scale."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            elif "emb" in name or "_pos" in name:
                nn.init.normal_(p, mean=0.0, std=self.config.d_model**-0.5)
            elif p.dim() >= 2:
                nn.init.xavier_uniform_(p)

    def num_params(self) -> int:
        """Parameter count (shared matrices counted once)."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> ModelCache:
        """An empty decoder cache: self-attention K/V for ``max_len`` target positions, plus one static
        cross-attention KVCache per decoder layer (filled from ``memory`` by the first decode call)."""
        return ModelCache(self.config.n_decoder_layers, max_len or self.config.max_len, cross=True)

    def _embed(self, ids: Tensor, emb: nn.Embedding, pos: nn.Module, offset: int = 0) -> Tensor:
        t = ids.size(1)
        if offset + t > self.config.max_len:
            raise ValueError(
                f"sequence of {offset + t} positions exceeds model.max_len {self.config.max_len}"
            )
        return self.drop(emb(ids) * self.emb_scale + pos(t, offset))  # (B, T, d_model)

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        """src: (B, S) token ids, src_padding_mask: (B, S) True at padding -> memory (B, S, d_model)."""
        x = self._embed(src, self.src_emb, self.src_pos)
        for layer in self.encoder:
            x, _ = layer(x, padding_mask=src_padding_mask)
        return self.encoder_norm(x) if self.encoder_norm is not None else x

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_padding_mask: Tensor | None = None,
        cache: ModelCache | None = None,
        need_weights: bool = False,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, list[Tensor]]]:
        """tgt: (B, T) target ids (shifted right: BOS first) -> logits (B, T, tgt_vocab_size).

        With ``cache`` (from ``new_cache``), ``tgt`` holds only the new tokens, at positions
        cache.length .. +T-1, and the cross-attention K/V are computed from ``memory`` on the first
        call only. With ``need_weights`` also returns {'self': [...], 'cross': [...]}: each layer's
        attention weights (B, H, T, S) (eager path).
        """
        if cache is not None and tgt_padding_mask is not None:
            raise ValueError("tgt_padding_mask cannot be combined with a cache (decode one sentence per row)")
        offset = cache.length if cache is not None else 0
        x = self._embed(tgt, self.tgt_emb, self.tgt_pos, offset)
        weights: dict[str, list[Tensor]] = {"self": [], "cross": []}
        for i, layer in enumerate(self.decoder):
            x, w = layer(
                x,
                padding_mask=tgt_padding_mask,
                context=memory,
                context_padding_mask=src_padding_mask,
                cache=cache.layers[i] if cache is not None else None,
                cross_cache=cache.cross[i] if cache is not None and cache.cross is not None else None,
                need_weights=need_weights,
            )
            if need_weights:
                weights["self"].append(w["self"])
                weights["cross"].append(w["cross"])
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        logits = self.out_proj(x)  # (B, T, d_model) -> (B, T, V_tgt)
        return (logits, weights) if need_weights else logits

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: src (B, S), tgt_in (B, T) (BOS + target) -> logits (B, T, tgt_vocab_size)."""
        memory = self.encode(src, src_padding_mask)
        logits = self.decode(tgt_in, memory, src_padding_mask, tgt_padding_mask=tgt_padding_mask)
        assert isinstance(logits, Tensor)
        return logits

    # -- incremental decoding (the encoder-decoder protocol of lmlab.generate) -----------------------

    def start_decoding(
        self, src: Tensor, src_padding_mask: Tensor | None = None, max_len: int | None = None, expand: int = 1
    ) -> TransformerDecoderState:
        """Encode ``src`` once and prepare to decode up to ``max_len`` target positions.

        ``expand`` gives every sentence that many rows (beams): row b·expand + k is copy k of b. The
        copies share the sentence's encoder output and cross-attention K/V (no copies are made, see
        ``TransformerDecoderState``).
        """
        if isinstance(expand, bool) or not isinstance(expand, int) or expand < 1:
            raise ValueError(f"expand must be an integer >= 1, got {expand!r}")
        memory = self.encode(src, src_padding_mask)
        max_len = min(max_len or self.config.max_len, self.config.max_len)
        return TransformerDecoderState(
            memory, src_padding_mask, self.new_cache(memory.size(0) * expand, max_len),
            group=expand, beam=expand,
        )

    def decode_step(self, tokens: Tensor, state: TransformerDecoderState) -> Tensor:
        """tokens: (N, 1) the last token of each row -> next-token logits (N, tgt_vocab_size)."""
        if tokens.size(0) != state.n_rows:
            raise ValueError(f"decode_step got {tokens.size(0)} rows for a state of {state.n_rows} rows")
        logits = self.decode(tokens, state.memory, state.src_padding_mask, cache=state.cache)
        assert isinstance(logits, Tensor)
        return logits[:, -1, :]
