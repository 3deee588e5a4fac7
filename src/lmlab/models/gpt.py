"""GPT: a decoder-only Transformer language model (Radford et al., 2018, 2019).

    h_0 = W_e[tokens] + W_p[positions]
    h_l = Block(h_{l-1})  for l = 1..n_layer        (pre-LN, causal self-attention + FFN)
    logits = LayerNorm(h_L) W_eᵀ                     (output projection tied to the token embedding)

Any size from a tiny character model to GPT-2 small (n_layer=12, n_head=12, n_embd=768, 124M) and
beyond is a matter of config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.nn import (
    LearnedPositionalEmbedding,
    ModelCache,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TransformerBlock,
    make_norm,
)


@dataclass
class GPTConfig:
    vocab_size: int = 0
    """Vocabulary size; 0 means: take it from the tokenizer."""
    block_size: int = 256
    """Context length: the most positions the model attends over."""
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    d_ff: int = 0
    """Feed-forward width; 0 means 4 · n_embd."""
    dropout: float = 0.0
    bias: bool = True
    """Biases in linear layers and norms (GPT-2 has them)."""
    activation: str = "gelu"
    """relu, gelu, gelu_tanh (GPT-2's) or swiglu."""
    norm: str = "layernorm"
    """layernorm or rmsnorm."""
    norm_eps: float = 1e-5
    pos_embedding: str = "learned"
    """learned (GPT-2), sinusoidal, or rope (rotary, applied inside attention)."""
    tie_weights: bool = True
    """Share the token embedding with the output projection."""
    attention: str = "fused"
    """fused (F.scaled_dot_product_attention) or eager (written out; can return weights)."""

    def validate(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        for key, value, valid in [
            ("pos_embedding", self.pos_embedding, ("learned", "sinusoidal", "rope")),
            ("attention", self.attention, ("fused", "eager")),
            ("norm", self.norm, ("layernorm", "rmsnorm")),
            ("activation", self.activation, ("relu", "gelu", "gelu_tanh", "swiglu")),
        ]:
            if value not in valid:
                raise ConfigError(f"model.{key} = '{value}' is not one of: {', '.join(valid)}")
        if min(self.block_size, self.n_layer, self.n_head, self.n_embd) <= 0:
            raise ConfigError("model.block_size, n_layer, n_head and n_embd must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.d_ff < 0:
            raise ConfigError(f"model.d_ff must be >= 0 (0 means 4 * n_embd), got {self.d_ff}")


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        if config.vocab_size <= 0:
            raise ConfigError("model.vocab_size must be set (it is normally taken from the tokenizer)")
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        rotary = None
        if c.pos_embedding == "learned":
            self.pos_emb: nn.Module | None = LearnedPositionalEmbedding(c.block_size, c.n_embd)
        elif c.pos_embedding == "sinusoidal":
            self.pos_emb = SinusoidalPositionalEncoding(c.block_size, c.n_embd)
        else:
            self.pos_emb = None
            rotary = RotaryEmbedding(c.n_embd // c.n_head, c.block_size)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.n_embd,
                c.n_head,
                c.d_ff or 4 * c.n_embd,
                dropout=c.dropout,
                activation=c.activation,
                norm=c.norm,
                norm_eps=c.norm_eps,
                pre_norm=True,
                causal=True,
                bias=c.bias,
                rotary=rotary,
                fused=c.attention == "fused",
            )
            for _ in range(c.n_layer)
        )
        self.norm_f = make_norm(c.norm, c.n_embd, c.norm_eps, c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases, and residual output projections
        scaled by 1/√(2·n_layer) so the residual stream's variance does not grow with depth."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            elif p.dim() >= 2 or name.startswith("pos_emb"):
                std = 0.02
                if name.endswith("out_proj.weight") or name.endswith("fc2.weight"):
                    std = 0.02 / math.sqrt(2 * self.config.n_layer)
                nn.init.normal_(p, mean=0.0, std=std)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without position embeddings (the usual way of counting)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and isinstance(self.pos_emb, LearnedPositionalEmbedding):
            n -= self.pos_emb.weight.numel()
        return n

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> ModelCache:
        """An empty KV cache for incremental decoding (up to ``max_len`` ≤ block_size positions)."""
        return ModelCache(self.config.n_layer, max_len or self.config.block_size)

    def forward(
        self,
        idx: Tensor,
        cache: ModelCache | None = None,
        need_weights: bool = False,
        last_only: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """idx: (B, T) token ids -> logits (B, T, vocab_size).

        With ``cache``, idx holds only the new tokens; they take positions cache.length .. +T-1.
        With ``need_weights``, also returns each layer's attention weights (B, H, T, S) (eager path).
        With ``last_only``, computes the logits of the last position only: (B, 1, vocab_size)
        (generation needs no more, and the output projection is the largest matmul of a step).
        """
        b, t = idx.shape
        offset = cache.length if cache is not None else 0
        if offset + t > self.config.block_size:
            raise ValueError(
                f"sequence of {offset + t} positions exceeds the context length {self.config.block_size}"
            )
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(t, offset)
        x = self.drop(x)
        attentions = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, cache=cache.layers[i] if cache is not None else None, need_weights=need_weights)
            if need_weights:
                attentions.append(w["self"])
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(self.norm_f(x))  # (B, T, V)
        return (logits, attentions) if need_weights else logits
