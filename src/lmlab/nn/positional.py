"""Position information: sinusoidal (Vaswani et al.), learned (GPT-2, BERT) and rotary (Su et al., RoPE).

PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """(max_len, d_model): sin on even dimensions, cos on odd ones."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal encodings: forward(T, offset) -> (T, d_model)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)

    def forward(self, t: int, offset: int = 0) -> Tensor:
        return self.pe[offset : offset + t]


class LearnedPositionalEmbedding(nn.Module):
    """A learned vector per position: forward(T, offset) -> (T, d_model)."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, d_model))

    def forward(self, t: int, offset: int = 0) -> Tensor:
        return self.weight[offset : offset + t]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to queries and keys (B, H, T, D).

    Pairs (x_i, x_{i+D/2}) are rotated by angle pos·θ_i, θ_i = base^(-2i/D) (the GPT-NeoX / Llama
    "rotate half" layout), so q·k depends only on the relative position.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head dimension, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (T, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, D)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        t = x.size(-2)
        cos = self.cos[offset : offset + t].to(x.dtype)
        sin = self.sin[offset : offset + t].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        return x * cos + rotated * sin
