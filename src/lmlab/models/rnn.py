"""Recurrent language models: Elman RNN, LSTM or GRU (Mikolov et al., 2010; Zaremba et al., 2014).

    x_t = Dropout(W_e[token_t])
    h_t = Recurrent(x_t, h_{t-1})                     (n_layer stacked rnn / lstm / gru layers)
    logits_t = Dropout(h_t) [P] W_eᵀ + b              (tied: W_e; P = hidden -> n_embd when they differ)

The recurrent state summarises the whole past, so the model has no context window: it is trained on
windows of ``data.block_size`` tokens (truncated back-propagation through time; each window starts
from a zero state) and generates for as long as asked, carrying its state forward. That state is the
decoding cache (``RNNCache``): feeding tokens through a cache continues exactly where it stopped.
``block_size`` is reported large so that generation never slides a window (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.nn import Recurrent
from lmlab.nn.recurrent import State


@dataclass
class RNNConfig:
    cell: str = "lstm"
    """rnn (Elman, tanh), lstm or gru."""
    vocab_size: int = 0
    """Vocabulary size; 0 means: take it from the tokenizer."""
    n_embd: int = 128
    """Token embedding width."""
    hidden: int = 0
    """Recurrent state width; 0 means n_embd."""
    n_layer: int = 1
    dropout: float = 0.0
    """On the embeddings, between recurrent layers and on the last layer's output."""
    tie_weights: bool = True
    """Share the token embedding with the output projection (through hidden -> n_embd if they differ)."""
    fused: bool = True
    """torch's fused kernels (cuDNN on GPU); False runs the equations step by step (nn/recurrent.py)."""
    block_size: int = 1_000_000
    """Reported context length: a recurrent model has no window, so generation never slides one.
    The training window is data.block_size (set it: the default would be this value)."""

    def validate(self) -> None:
        if self.cell not in ("rnn", "lstm", "gru"):
            raise ConfigError(f"model.cell = '{self.cell}' is not one of: rnn, lstm, gru")
        if min(self.n_embd, self.n_layer, self.block_size) <= 0:
            raise ConfigError("model.n_embd, n_layer and block_size must be positive")
        if self.hidden < 0:
            raise ConfigError(f"model.hidden must be >= 0 (0 means n_embd), got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


class RNNCache:
    """The recurrent state as a decoding cache: ``state`` (h, or (h, c)) after ``length`` tokens."""

    def __init__(self, batch_size: int = 1) -> None:
        self.batch_size = batch_size
        self.state: State | None = None  # None: zeros (nothing consumed yet)
        self.length = 0

    def reset(self) -> None:
        self.state, self.length = None, 0

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of the batch (beam search, finished rows dropped)."""
        if isinstance(self.state, tuple):
            self.state = tuple(s.index_select(1, index) for s in self.state)  # type: ignore[assignment]
        elif self.state is not None:
            self.state = self.state.index_select(1, index)
        self.batch_size = len(index)


class RNNLM(nn.Module):
    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        config.validate()
        if config.vocab_size <= 0:
            raise ConfigError("model.vocab_size must be set (it is normally taken from the tokenizer)")
        self.config = c = config
        hidden = c.hidden or c.n_embd
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.rnn = Recurrent(c.cell, c.n_embd, hidden, c.n_layer, dropout=c.dropout, fused=c.fused)
        # tied weights read n_embd-wide vectors: project the state down (or up) when widths differ
        self.proj = nn.Linear(hidden, c.n_embd, bias=False) if c.tie_weights and hidden != c.n_embd else None
        self.lm_head = nn.Linear(c.n_embd if c.tie_weights else hidden, c.vocab_size)
        if c.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embedding (and so the tied output) U(−0.1, 0.1), output bias 0 (Zaremba et al., 2014);
        recurrent weights keep torch's U(−1/√H, 1/√H)."""
        nn.init.uniform_(self.tok_emb.weight, -0.1, 0.1)
        if not self.config.tie_weights:
            nn.init.uniform_(self.lm_head.weight, -0.1, 0.1)
        nn.init.zeros_(self.lm_head.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok_emb.weight.numel() if non_embedding else n

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> RNNCache:
        """An empty cache (zero state); ``max_len`` is accepted for the protocol: the state has no length."""
        return RNNCache(batch_size)

    def forward(self, idx: Tensor, cache: RNNCache | None = None, last_only: bool = False) -> Tensor:
        """idx: (B, T) token ids -> logits (B, T, vocab_size).

        With ``cache``, the sequence continues from the cache's state, which is then replaced by the
        state after these T tokens. With ``last_only``, only the last position's logits: (B, 1, V).
        """
        x = self.drop(self.tok_emb(idx))  # (B, T, C)
        out, state = self.rnn(x, cache.state if cache is not None else None)  # (B, T, H)
        if cache is not None:
            cache.state = state
            cache.length += idx.size(1)
        if last_only:
            out = out[:, -1:]
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)
        return self.lm_head(out)


__all__ = ["RNNConfig", "RNNCache", "RNNLM"]
