"""Uniform k-bit quantization: parameters, quantize / dequantize, fake quantization with STE.

Symmetric (zero-point 0, the *restricted* range of 2^k − 1 levels, so +x and −x map to
+q and −q):   s = max|x| / (2^(k−1) − 1),   q ∈ [−(2^(k−1) − 1), 2^(k−1) − 1].
Asymmetric:   s = (max − min) / (2^k − 1),  zp = round(−min / s),  q ∈ [0, 2^k − 1],
where the range is first widened to contain 0 so that zero is exact (ReLU outputs, padding)
and the zero-point is a valid integer level.
Both:         q = clamp(round(x / s) + zp, qmin, qmax),   x̂ = (q − zp) · s.

1-bit symmetric quantization is rejected: the restricted range has the single level 0. Use
`symmetric=False` for 1 bit (levels {min, max} after widening to contain 0).

Rounding is half-to-even on `x · (1/s)`, exactly as `torch.fake_quantize_per_*_affine`, whose
fused kernels `fake_quantize` calls for float32 tensors (3-4× faster than the step-by-step
reference `_FakeQuantSTE`, which it falls back to otherwise; the two agree bit for bit in value
and gradient, tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

EPS = torch.finfo(torch.float32).eps  # smallest scale: a zero range quantizes to exact zeros


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize a tensor: bit width, symmetric or affine, per-tensor or per-channel.

    `axis` is the channel dimension when `per_channel` (0: output channels of a weight).
    """

    bits: int = 8
    symmetric: bool = True
    per_channel: bool = False
    axis: int = 0

    def validate(self) -> "QuantSpec":
        """Raise a one-line ValueError naming the first bad field."""
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 16:
            raise ValueError(f"bits: must be an integer in [1, 16], got {self.bits}")
        if self.symmetric and self.bits == 1:
            raise ValueError("bits: symmetric quantization needs bits >= 2 (1-bit symmetric has "
                             "only the level 0); use symmetric=False for 1 bit")
        if not isinstance(self.axis, int) or isinstance(self.axis, bool):
            raise ValueError(f"axis: must be an integer, got {self.axis!r}")
        return self

    @property
    def qrange(self) -> tuple[int, int]:
        """(qmin, qmax): restricted signed range if symmetric, [0, 2^k − 1] otherwise."""
        if self.symmetric:
            m = 2 ** (self.bits - 1) - 1
            return -m, m
        return 0, 2 ** self.bits - 1


def reduce_dims(x: Tensor, spec: QuantSpec) -> tuple[int, ...]:
    """Dims a range is taken over: all of them, or all but `spec.axis` when per-channel."""
    if not spec.per_channel:
        return tuple(range(x.dim()))
    axis = spec.axis % x.dim()
    return tuple(d for d in range(x.dim()) if d != axis)


def tensor_range(x: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor]:
    """(min, max) of x per tensor or per channel, shaped to broadcast against x (keepdim)."""
    x = x.detach()
    dims = reduce_dims(x, spec)
    if not dims:  # a 1-D tensor quantized per channel: each element is its own channel
        return x.clone(), x.clone()
    return x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)


def qparams(x: Tensor, spec: QuantSpec, lo: Tensor | float | None = None,
            hi: Tensor | float | None = None) -> tuple[Tensor, Tensor, int, int]:
    """(scale, zero_point, qmin, qmax) for x; scale and zero_point broadcast against x.

    `lo` / `hi` override the data range (calibrated or running ranges); they must have the
    shape of `tensor_range(x, spec)` or be scalars. zero_point is an int32 tensor.
    """
    spec.validate()
    if lo is None or hi is None:
        dlo, dhi = tensor_range(x, spec)
        lo = dlo if lo is None else lo
        hi = dhi if hi is None else hi
    like = x.detach().float()
    lo = torch.as_tensor(lo, dtype=torch.float32, device=x.device)
    hi = torch.as_tensor(hi, dtype=torch.float32, device=x.device)
    if lo.dim() == 0 and spec.per_channel:  # a scalar range shared by every channel
        shape = tensor_range(like, spec)[0].shape
        lo, hi = lo.expand(shape), hi.expand(shape)
    qmin, qmax = spec.qrange
    if spec.symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = (amax / qmax).clamp_min(EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)  # contain 0 so zp is a valid level
        scale = ((hi - lo) / (qmax - qmin)).clamp_min(EPS)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point, qmin, qmax


def _round_to_grid(x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """round(x · (1/s)) + zp, before clamping (integer-valued float tensor)."""
    return torch.round(x * (1.0 / scale)).add_(zero_point)


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    """q = clamp(round(x / s) + zp, qmin, qmax), as an integer-valued float tensor."""
    return _round_to_grid(x, scale, zero_point).clamp(qmin, qmax)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """x̂ = (q − zp) · s."""
    return (q - zero_point) * scale


class _FakeQuantSTE(torch.autograd.Function):
    """dequantize(quantize(x)); backward is the straight-through estimator: the incoming
    gradient where round(x / s) + zp lies in [qmin, qmax], zero where it was clamped."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
        q = _round_to_grid(x, scale, zero_point)
        clamped = q.clamp(qmin, qmax)
        ctx.save_for_backward(clamped == q)  # inside the range: nothing was clamped
        return clamped.sub_(zero_point).mul_(scale).to(x.dtype)  # in place: fewer passes

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: Tensor, spec: QuantSpec, lo: Tensor | float | None = None,
                  hi: Tensor | float | None = None) -> Tensor:
    """x̂ = (clamp(round(x / s) + zp) − zp) · s with a straight-through gradient.

    The range is x's own min/max (per tensor or per channel) unless `lo` / `hi` are given;
    the quantization parameters carry no gradient.
    """
    scale, zero_point, qmin, qmax = qparams(x, spec, lo, hi)
    if x.dtype == torch.float32:  # torch's fused kernels: same values, same STE gradient
        if scale.numel() == 1:
            return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()),
                                                         zero_point.reshape(()), qmin, qmax)
        if x.dim() > 1 and scale.numel() == x.shape[spec.axis % x.dim()]:
            return torch.fake_quantize_per_channel_affine(x, scale.reshape(-1),
                                                          zero_point.reshape(-1),
                                                          spec.axis % x.dim(), qmin, qmax)
    return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax)
