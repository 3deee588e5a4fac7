"""Position-wise feed-forward network: FFN(x) = W_2 · act(W_1 x + b_1) + b_2.

SwiGLU (Shazeer, 2020) gates instead: FFN(x) = W_2 · (SiLU(W_1 x) ⊙ W_3 x).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu")


class FeedForward(nn.Module):
    def __init__(
        self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0, bias: bool = True
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; valid: {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)  # W_1
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)  # W_2
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None  # W_3
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        else:
            h = F.silu(h) * self.gate(x)
        return self.fc2(self.dropout(h))
