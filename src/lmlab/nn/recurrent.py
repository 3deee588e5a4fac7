"""Recurrent layers: the Elman RNN, the LSTM and the GRU, written from their equations.

One time step of each cell (x: input (B, I), h: hidden state (B, H); W_i· / b_i· act on the input,
W_h· / b_h· on the hidden state; σ is the logistic sigmoid, ⊙ the elementwise product):

RNN (Elman, 1990)::

    h' = tanh(W_ih x + b_ih + W_hh h + b_hh)

LSTM (Hochreiter & Schmidhuber, 1997, with the forget gate of Gers et al., 2000)::

    i = σ(W_ii x + b_ii + W_hi h + b_hi)        input gate
    f = σ(W_if x + b_if + W_hf h + b_hf)        forget gate
    z = tanh(W_ig x + b_ig + W_hg h + b_hg)     candidate cell (torch calls it g)
    o = σ(W_io x + b_io + W_ho h + b_ho)        output gate
    c' = f ⊙ c + i ⊙ z
    h' = o ⊙ tanh(c')

GRU (Cho et al., 2014)::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)        reset gate
    z = σ(W_iz x + b_iz + W_hz h + b_hz)        update gate
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h

The parameter layout is torch's (``torch.nn.RNN`` / ``LSTM`` / ``GRU``): per layer k and direction,
``weight_ih_l{k}`` (G·H, I), ``weight_hh_l{k}`` (G·H, H), ``bias_ih_l{k}`` (G·H), ``bias_hh_l{k}``
(G·H), with the gates stacked in the order i, f, g, o (LSTM) or r, z, n (GRU), G = 1 / 4 / 3, and the
suffix ``_reverse`` for the backward direction. ``Recurrent`` keeps its parameters in a torch module
of that kind, so its step-by-step path (these equations) and its fused path (cuDNN / ATen kernels)
compute the same function of the same parameters, and checkpoints convert to and from plain torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rnn_step", "lstm_step", "gru_step", "RNNCell", "LSTMCell", "GRUCell", "Recurrent", "GATES"]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
"""Gate blocks stacked in the weight matrices of each mode."""

State = Tensor | tuple[Tensor, Tensor]
"""h (…, B, H), or (h, c) for the LSTM."""


# ---------------------------------------------------------------------------------------------------
# One time step. ``gi`` = W_ih x + b_ih is computed outside, for all time steps at once (one matmul).
# ---------------------------------------------------------------------------------------------------


def rnn_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """h' = tanh(gi + W_hh h + b_hh), with gi = W_ih x + b_ih."""
    return torch.tanh(gi + F.linear(h, w_hh, b_hh))


def lstm_step(
    gi: Tensor, state: tuple[Tensor, Tensor], w_hh: Tensor, b_hh: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(h, c) -> (h', c'): gates i, f, z (torch's g), o; c' = f ⊙ c + i ⊙ z, h' = o ⊙ tanh(c')."""
    h, c = state
    i, f, z, o = (gi + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """h' = (1 − z) ⊙ n + z ⊙ h with r, z gates and n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))."""
    gh = F.linear(h, w_hh, b_hh)
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


_STEPS = {"rnn": rnn_step, "lstm": lstm_step, "gru": gru_step}


# ---------------------------------------------------------------------------------------------------
# Cells: one step with their own parameters (torch.nn.RNNCell / LSTMCell / GRUCell's layout)
# ---------------------------------------------------------------------------------------------------


class _Cell(nn.Module):
    mode = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        g = GATES[self.mode]
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(g * hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) for every parameter, as torch does."""
        bound = self.hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1] + (self.hidden_size,))


class RNNCell(_Cell):
    """One Elman RNN step: h' = tanh(W_ih x + b_ih + W_hh h + b_hh). x (B, I), h (B, H) -> h' (B, H)."""

    mode = "rnn"

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self._zeros(x) if h is None else h
        return rnn_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)


class LSTMCell(_Cell):
    """One LSTM step (gates i, f, g, o; see the module docstring). x (B, I), (h, c) -> (h', c')."""

    mode = "lstm"

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if state is None:
            state = (self._zeros(x), self._zeros(x))
        return lstm_step(F.linear(x, self.weight_ih, self.bias_ih), state, self.weight_hh, self.bias_hh)


class GRUCell(_Cell):
    """One GRU step (gates r, z, n; see the module docstring). x (B, I), h (B, H) -> h' (B, H)."""

    mode = "gru"

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        h = self._zeros(x) if h is None else h
        return gru_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)


# ---------------------------------------------------------------------------------------------------
# Multi-layer, optionally bidirectional recurrent layer
# ---------------------------------------------------------------------------------------------------


class Recurrent(nn.Module):
    """A stack of RNN / LSTM / GRU layers over a batch-first sequence, like ``torch.nn.LSTM`` & co.

    ``forward(x (B, T, I), state=None) -> (output (B, T, D·H), state)`` with D = 2 if bidirectional
    else 1; ``state`` is h (L·D, B, H) or, for the LSTM, (h, c), row k·D + d for layer k, direction d
    (zeros when not given). Layer k > 0 reads the (D·H)-wide output of layer k − 1, through dropout
    in training (none after the last layer). The backward direction reads the sequence from its end:
    its output at t summarises x_t .. x_{T−1}.

    ``fused=True`` runs the parameters through torch's own kernels (``torch._VF`` / cuDNN);
    ``fused=False`` runs the equations above one time step at a time (slow; for reading and for
    checking). Both use the same parameters (``self.rnn``, a ``torch.nn.RNN`` / ``LSTM`` / ``GRU``)
    and compute the same function.

    ``padding_mask`` (B, T), True at padding, for right-padded rows of different lengths: a padded
    step leaves the state unchanged and outputs zeros, so each row's final state is the one after
    its own last token and the backward direction starts at that token (torch's packed sequences,
    which the fused path uses). What stands in the padding then changes nothing.
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if mode not in GATES:
            raise ValueError(f"mode must be one of {', '.join(GATES)}, got {mode!r}")
        self.mode, self.fused, self.dropout = mode, fused, dropout
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.num_directions = 2 if bidirectional else 1
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[mode]
        kw = {"nonlinearity": "tanh"} if mode == "rnn" else {}
        self.rnn = cls(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # torch warns about dropout with one layer
            batch_first=True,
            **kw,
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, fused={self.fused}"

    def forward(
        self, x: Tensor, state: State | None = None, padding_mask: Tensor | None = None
    ) -> tuple[Tensor, State]:
        if isinstance(state, tuple):  # a state made in another precision (autocast) follows the input's
            state = (state[0].to(x.dtype), state[1].to(x.dtype))
        elif state is not None:
            state = state.to(x.dtype)
        if padding_mask is not None:
            lengths = (~padding_mask).sum(1)  # (B,)
            suffix = torch.arange(x.size(1), device=x.device) >= lengths[:, None]
            if not bool((padding_mask == suffix).all()):
                raise ValueError("padding_mask must mark a suffix of each row (right padding)")
            if not bool(padding_mask.any()):
                padding_mask = None
        if not self.fused:
            return self._forward_steps(x, state, padding_mask)
        if padding_mask is None:
            return self.rnn(x, state)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return out, state

    def _param(self, name: str, layer: int, direction: int) -> Tensor | None:
        return getattr(self.rnn, f"{name}_l{layer}{'_reverse' if direction else ''}", None)

    def _forward_steps(
        self, x: Tensor, state: State | None, padding_mask: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """The equations, one layer, direction and time step at a time."""
        b, t, _ = x.shape
        n_dir, lstm = self.num_directions, self.mode == "lstm"
        if state is None:
            zeros = x.new_zeros(self.num_layers * n_dir, b, self.hidden_size)
            state = (zeros, zeros) if lstm else zeros
        step = _STEPS[self.mode]
        h_out: list[Tensor] = []
        c_out: list[Tensor] = []
        for layer in range(self.num_layers):
            if layer > 0:
                x = F.dropout(x, self.dropout, self.training)
            outputs = []
            for d in range(n_dir):
                k = layer * n_dir + d
                s = (state[0][k], state[1][k]) if lstm else state[k]
                gi = F.linear(x, self._param("weight_ih", layer, d), self._param("bias_ih", layer, d))
                w_hh, b_hh = self._param("weight_hh", layer, d), self._param("bias_hh", layer, d)
                ys: list[Tensor] = [x.new_empty(0)] * t
                for i in reversed(range(t)) if d else range(t):
                    new = step(gi[:, i], s, w_hh, b_hh)
                    if padding_mask is None:
                        s = new
                        ys[i] = s[0] if lstm else s
                    else:  # a padded row keeps its state and outputs zeros
                        real = ~padding_mask[:, i, None]  # (B, 1)
                        if lstm:
                            s = (torch.where(real, new[0], s[0]), torch.where(real, new[1], s[1]))
                        else:
                            s = torch.where(real, new, s)
                        ys[i] = (s[0] if lstm else s) * real
                outputs.append(torch.stack(ys, dim=1))  # (B, T, H)
                h_out.append(s[0] if lstm else s)
                if lstm:
                    c_out.append(s[1])
            x = torch.cat(outputs, dim=-1) if n_dir > 1 else outputs[0]
        h = torch.stack(h_out)
        return x, ((h, torch.stack(c_out)) if lstm else h)
