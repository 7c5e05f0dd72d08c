"""Range observers: choose the clipping range (lo, hi) of a quantizer from a data sample.

- `minmax`: lo = min x, hi = max x (nothing clipped, outliers stretch the grid).
- `percentile`: lo, hi = the (100 − p)-th and p-th percentiles (default p = 99.99).
- `mse`: (α·min, α·max) with α from a grid on (0, 1] minimising E[(x − x̂)²], x̂ the fake-
  quantized sample; α = 1 is in the grid, so its MSE is never above minmax's.

Ranges are per tensor, or per channel along `spec.axis`, shaped to broadcast against the data
(see `quantizer.tensor_range`). `calibrate` looks methods up in `OBSERVERS` by name.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from lib.quant.quantizer import QuantSpec, fake_quantize, reduce_dims, tensor_range

Observer = Callable[..., tuple[Tensor, Tensor]]


def _channels_last_2d(x: Tensor, spec: QuantSpec) -> Tensor:
    """(C, N) view: one row per channel (a single row when per tensor)."""
    if not spec.per_channel:
        return x.reshape(1, -1)
    return x.movedim(spec.axis % x.dim(), 0).reshape(x.shape[spec.axis], -1)


def _keepdim_shape(x: Tensor, spec: QuantSpec) -> tuple[int, ...]:
    dims = set(reduce_dims(x, spec))
    return tuple(1 if d in dims else n for d, n in enumerate(x.shape))


def minmax(x: Tensor, spec: QuantSpec) -> tuple[Tensor, Tensor]:
    """lo = min x, hi = max x."""
    return tensor_range(x, spec)


def percentile(x: Tensor, spec: QuantSpec, p: float = 99.99) -> tuple[Tensor, Tensor]:
    """lo, hi = the (100 − p)-th and p-th percentiles of x (nearest rank)."""
    if not 50.0 < p <= 100.0:
        raise ValueError(f"p: must be in (50, 100], got {p}")
    rows = _channels_last_2d(x.detach().float(), spec)  # (C, N)
    n = rows.shape[1]
    k_hi = max(1, min(n, round(p / 100.0 * n)))  # kthvalue is 1-based
    k_lo = max(1, min(n, n + 1 - k_hi))
    lo = rows.kthvalue(k_lo, dim=1).values
    hi = rows.kthvalue(k_hi, dim=1).values
    shape = _keepdim_shape(x, spec)
    return lo.reshape(shape), hi.reshape(shape)


def mse(x: Tensor, spec: QuantSpec, grid: int = 100,
        max_elems: int = 1 << 20) -> tuple[Tensor, Tensor]:
    """(α·min, α·max), α ∈ {1/grid, …, 1} minimising the mean squared quantization error.

    Per channel, α is chosen for each channel. A per-tensor sample larger than `max_elems`
    is searched on an evenly strided subset of that size (the base range uses all of it).
    """
    x = x.detach().float()
    lo, hi = tensor_range(x, spec)
    sample, slo, shi = x, lo, hi
    if not spec.per_channel and x.numel() > max_elems:
        sample = x.reshape(-1)[:: x.numel() // max_elems]
        slo, shi = lo.reshape(1), hi.reshape(1)  # broadcast against the 1-D subsample
    dims = reduce_dims(sample, spec)
    best_err = torch.full_like(lo, float("inf"))
    best_alpha = torch.ones_like(lo)
    for alpha in torch.linspace(1.0, 1.0 / grid, grid).tolist():  # α = 1 first: ties keep minmax
        xq = fake_quantize(sample, spec, slo * alpha, shi * alpha)
        err = (xq - sample).pow(2)
        err = err.mean(dim=dims, keepdim=True) if dims else err
        if not spec.per_channel:
            err = err.reshape(lo.shape)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_alpha = torch.where(better, torch.full_like(lo, alpha), best_alpha)
    return lo * best_alpha, hi * best_alpha


OBSERVERS: dict[str, Observer] = {"minmax": minmax, "percentile": percentile, "mse": mse}


def check_calibration_name(name: str) -> None:
    """One-line error for a calibration method the registry does not know."""
    if name not in OBSERVERS:
        raise ValueError(f"calibration: unknown '{name}', choose from {', '.join(sorted(OBSERVERS))}")


def as_sample(x_or_batches: Tensor | Iterable[Tensor], spec: QuantSpec) -> Tensor:
    """One tensor from a tensor or an iterable of batches (joined along a non-channel dim)."""
    if isinstance(x_or_batches, Tensor):
        return x_or_batches
    batches = [b.detach() for b in x_or_batches]
    if not batches:
        raise ValueError("calibrate: got no data")
    dim = 1 if spec.per_channel and spec.axis % batches[0].dim() == 0 else 0
    return torch.cat(batches, dim=dim)


def calibrate(x_or_batches: Tensor | Iterable[Tensor], spec: QuantSpec,
              method: str = "minmax", **kwargs) -> tuple[Tensor, Tensor]:
    """(lo, hi) chosen by observer `method` on the sample; kwargs go to the observer."""
    check_calibration_name(method)
    spec.validate()
    return OBSERVERS[method](as_sample(x_or_batches, spec), spec, **kwargs)
