"""Int8 quantization of a model's linear layers, for fast inference on the CPU.

    W ≈ diag(s) · W_q,   s_o = max_i |W_oi| / 127,   W_q = round(W / s) ∈ [-127, 127]   (per output channel)

At batch 1, generating a token is a chain of matrix-vector products: it reads every weight once and
does two flops per weight read, so it is bound by memory bandwidth, not arithmetic. Int8 weights
are a quarter of the bytes of float32 weights, so they cut that traffic (and the model's memory) by
4x. Every ``nn.Linear`` is replaced, including the output projection ``lm_head`` (50257 x 768 for
GPT-2, a third of the model's weights); a tied input embedding keeps its float32 copy (an embedding
lookup reads only the rows of the tokens it is given).

Two kinds of int8 linear layer:

* ``"dynamic"`` (default): int8 weights and int8 activations, quantized per call from their current
  range; the product runs in an int8 GEMM kernel (fbgemm / oneDNN) with int32 accumulation. The
  fastest on x86 CPUs, AVX2 included. Uses ``torch.ops.quantized`` (CPU only).
* ``"weight_only"``: int8 weights, activations stay float: more accurate (only the weights are
  rounded). Uses ``torch.ops.aten._weight_int8pack_mm`` where PyTorch has it (fast on CPUs with
  AVX-512 / AMX; slower than float32 on AVX2), else de-quantizes the weight on the fly.

``quantize_int8(model)`` returns a quantized copy (``inplace=True`` converts ``model`` itself). The
result is for inference (no gradients flow into int8 weights); it follows the same Model protocol,
KV cache included, so ``lmlab.generate`` works unchanged.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["METHODS", "DynamicInt8Linear", "WeightOnlyInt8Linear", "quantize_int8", "quantize_weight_int8"]

METHODS = ("dynamic", "weight_only")


def quantize_weight_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8 quantization: (N, K) weight -> (int8 (N, K), float32 scales (N,))."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scales.contiguous()


class DynamicInt8Linear(nn.Module):
    """``y = x Wᵀ + b`` with int8 weights (per output channel) and int8 activations (per call, per tensor).

    The weight is pre-packed once for the int8 GEMM of the active quantized engine; activations are
    quantized on the fly from their range, and the result is de-quantized to float32.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        engine = torch.backends.quantized.engine
        # fbgemm / x86 on CPUs without VNNI saturate int16 sums of u8·s8 pairs: use 7-bit activations there.
        self.reduce_range = engine in ("fbgemm", "x86")
        q, scales = quantize_weight_int8(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
        with warnings.catch_warnings():  # quantized-tensor constructors warn that they are deprecated
            warnings.simplefilter("ignore")
            zero = torch.zeros_like(scales, dtype=torch.long)
            qweight = torch.quantize_per_channel(
                q.float() * scales[:, None], scales.double(), zero, 0, torch.qint8
            )
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self._packed, self.reduce_range)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            "weight=int8 per-channel, act=int8 dynamic"
        )


class WeightOnlyInt8Linear(nn.Module):
    """``y = x (diag(s) W_q)ᵀ + b``: int8 weights ``W_q``, per-output-channel scales ``s``, float inputs."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scales = quantize_weight_int8(linear.weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self._packed_mm = hasattr(torch.ops.aten, "_weight_int8pack_mm")

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float().contiguous()
        if self._packed_mm:
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight_int8, self.scales)
        else:
            y = (x2 @ self.weight_int8.t().float()) * self.scales
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=int8 per-channel"


def _linears(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute name, layer) for every ``nn.Linear`` inside ``model``."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                yield parent, name, child


def quantize_int8(model: nn.Module, method: str = "dynamic", inplace: bool = False) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (on the CPU) by an int8 one; returns the model, in eval mode.

    ``method``: ``"dynamic"`` (int8 weights and activations; fastest) or ``"weight_only"`` (int8 weights,
    float activations; more accurate). See the module docstring.
    """
    if method not in METHODS:
        raise ValueError(f"unknown int8 method '{method}'; valid: {', '.join(METHODS)}")
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"int8 quantization runs on the CPU; the model is on {', '.join(sorted(devices))}")
    if method == "dynamic" and not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise RuntimeError("this PyTorch build has no int8 dynamic linear kernel; use method='weight_only'")
    if not inplace:
        model = copy.deepcopy(model)
    cls = DynamicInt8Linear if method == "dynamic" else WeightOnlyInt8Linear
    for parent, name, linear in list(_linears(model)):
        setattr(parent, name, cls(linear))
    return model.eval().requires_grad_(False)
