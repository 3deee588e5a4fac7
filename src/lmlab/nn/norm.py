"""Normalisation layers. Where they sit (pre-LN or post-LN) is the block's business (block.py).

LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) · γ + β       (Ba et al., 2016)
RMSNorm(x)   = x / sqrt(mean(x²) + eps) · γ                      (Zhang & Sennrich, 2019)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerNorm(nn.LayerNorm):
    """torch's LayerNorm (fused kernel), with an optional bias."""

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__(d, eps=eps, bias=bias)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def make_norm(kind: str, d: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return LayerNorm(d, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d, eps=eps)
    raise ValueError(f"unknown norm '{kind}'; valid: layernorm, rmsnorm")
