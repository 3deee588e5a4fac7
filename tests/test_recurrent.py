"""The recurrent cells and layers written from their equations match torch.nn.RNN / LSTM / GRU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmlab.nn import GRUCell, LSTMCell, Recurrent, RNNCell

TOL = 1e-5
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}



def _state(mode: str, n: int, b: int, h: int, requires_grad: bool = True):
    def one() -> torch.Tensor:
        return torch.randn(n, b, h, dtype=torch.float64, requires_grad=requires_grad)

    return (one(), one()) if mode == "lstm" else one()


def _flat(state) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_step_by_step_equals_torch(mode, num_layers, bidirectional, with_state):
    torch.manual_seed(0)
    b, t, i, h = 3, 5, 4, 6
    ours = Recurrent(mode, i, h, num_layers, bidirectional, fused=False).double()
    ref = TORCH[mode](i, h, num_layers, bidirectional=bidirectional, batch_first=True).double()
    ref.load_state_dict(ours.rnn.state_dict())  # the same names: torch's layout
    assert [n for n, _ in ours.named_parameters()] == [f"rnn.{n}" for n, _ in ref.named_parameters()]

    x = torch.randn(b, t, i, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    d = 2 if bidirectional else 1
    s0 = _state(mode, num_layers * d, b, h) if with_state else None
    s0_ref = None
    if s0 is not None:
        s0_ref = tuple(s.detach().clone().requires_grad_(True) for s in _flat(s0))
        s0_ref = s0_ref if mode == "lstm" else s0_ref[0]

    y, s = ours(x, s0)
    y_ref, s_ref = ref(x_ref, s0_ref)
    assert y.shape == (b, t, d * h)
    _close(y, y_ref)
    for a, r in zip(_flat(s), _flat(s_ref), strict=True):
        assert a.shape == (num_layers * d, b, h)
        _close(a, r)

    # gradients of a loss that touches the outputs and every final state
    g = torch.randn_like(y)
    gs = [torch.randn_like(a) for a in _flat(s)]
    loss = (y * g).sum() + sum((a * w).sum() for a, w in zip(_flat(s), gs))
    loss_ref = (y_ref * g).sum() + sum((a * w).sum() for a, w in zip(_flat(s_ref), gs))
    loss.backward()
    loss_ref.backward()
    _close(x.grad, x_ref.grad)
    if s0 is not None:
        for a, r in zip(_flat(s0), _flat(s0_ref), strict=True):
            _close(a.grad, r.grad)
    for (name, p), (_, q) in zip(ours.rnn.named_parameters(), ref.named_parameters(), strict=True):
        assert p.grad is not None, name
        _close(p.grad, q.grad)


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_and_step_paths_agree(mode, bidirectional):
    torch.manual_seed(1)
    layer = Recurrent(mode, 3, 5, num_layers=2, bidirectional=bidirectional, dropout=0.3).double().eval()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    s0 = _state(mode, 2 * (2 if bidirectional else 1), 2, 5, requires_grad=False)
    for state in (None, s0):
        layer.fused = True
        y_fused, s_fused = layer(x, state)
        layer.fused = False
        y_step, s_step = layer(x, state)
        _close(y_fused, y_step)
        for a, r in zip(_flat(s_fused), _flat(s_step), strict=True):
            _close(a, r)


def test_step_path_dropout_between_layers_only():
    torch.manual_seed(2)
    layer = Recurrent("gru", 3, 4, num_layers=1, dropout=0.9, fused=False).train()
    x = torch.randn(2, 3, 3)
    y1, _ = layer(x)
    y2, _ = layer(x)
    _close(y1, y2)  # one layer: no dropout at all (as torch: none after the last layer)
    deep = Recurrent("gru", 3, 4, num_layers=2, dropout=0.9, fused=False).train()
    assert not torch.equal(deep(x)[0], deep(x)[0])
    deep.eval()
    _close(deep(x)[0], deep(x)[0])


@pytest.mark.parametrize(
    "ours_cls, ref_cls", [(RNNCell, nn.RNNCell), (LSTMCell, nn.LSTMCell), (GRUCell, nn.GRUCell)]
)
def test_cells_equal_torch_cells(ours_cls, ref_cls):
    torch.manual_seed(3)
    ours, ref = ours_cls(4, 6).double(), ref_cls(4, 6).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 4, dtype=torch.float64)
    h = torch.randn(3, 6, dtype=torch.float64)
    if ours_cls is LSTMCell:
        c = torch.randn(3, 6, dtype=torch.float64)
        for a, r in zip(ours(x, (h, c)), ref(x, (h, c)), strict=True):
            _close(a, r)
        for a, r in zip(ours(x), ref(x), strict=True):
            _close(a, r)
    else:
        _close(ours(x, h), ref(x, h))
        _close(ours(x), ref(x))


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        Recurrent("transformer", 2, 2)
