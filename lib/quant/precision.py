"""The "least significant bits" view of precision: fixed-point grids and low-precision floats.

`fixed_point` rounds to the grid 2^−f (f fraction bits), optionally saturating to the range of a
signed two's-complement Q(m.f) number: [−2^m, 2^m − 2^−f] (1 sign bit, m integer bits).
`cast_roundtrip` rounds through a narrower float format (float16, bfloat16, float8) and back,
which keeps the exponent range but drops mantissa bits: relative error ≤ 2^−(p+1) for p stored
mantissa bits (bfloat16: p = 7, float16: p = 10) while inside the format's normal range.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

FLOAT_FORMATS: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}
for _name in ("float8_e4m3fn", "float8_e5m2"):  # present in recent torch builds
    if hasattr(torch, _name):
        FLOAT_FORMATS[_name] = getattr(torch, _name)

MANTISSA_BITS: dict[str, int] = {"float16": 10, "bfloat16": 7, "float8_e4m3fn": 3, "float8_e5m2": 2}


def fixed_point(x: Tensor, frac_bits: int, int_bits: int | None = None) -> Tensor:
    """round(x · 2^f) / 2^f, saturated to [−2^m, 2^m − 2^−f] when `int_bits` m is given."""
    if not isinstance(frac_bits, int) or frac_bits < 0:
        raise ValueError(f"frac_bits: must be an integer >= 0, got {frac_bits}")
    if int_bits is not None and (not isinstance(int_bits, int) or int_bits < 0):
        raise ValueError(f"int_bits: must be None or an integer >= 0, got {int_bits}")
    step = 2.0 ** -frac_bits
    y = torch.round(x / step) * step  # dividing by a power of two is exact
    if int_bits is not None:
        y = y.clamp(-(2.0 ** int_bits), 2.0 ** int_bits - step)
    return y


def _float_format(dtype: str | torch.dtype) -> torch.dtype:
    names = {v: k for k, v in FLOAT_FORMATS.items()}
    if isinstance(dtype, torch.dtype) and dtype in names:
        return dtype
    if isinstance(dtype, str) and dtype in FLOAT_FORMATS:
        return FLOAT_FORMATS[dtype]
    raise ValueError(f"dtype: unsupported {dtype}, choose from {', '.join(FLOAT_FORMATS)}")


def cast_roundtrip(x: Tensor, dtype: str | torch.dtype) -> Tensor:
    """x cast to a narrower float format (round to nearest even) and back to x's dtype."""
    return x.to(_float_format(dtype)).to(x.dtype)


def relative_precision(dtype: str | torch.dtype) -> float:
    """Unit roundoff 2^−(p+1) of a float format with p stored mantissa bits."""
    name = {v: k for k, v in FLOAT_FORMATS.items()}[_float_format(dtype)]
    return 2.0 ** -(MANTISSA_BITS[name] + 1)


@torch.no_grad()
def apply_to_weights(model: nn.Module, fn: Callable[[Tensor], Tensor],
                     all_params: bool = False) -> nn.Module:
    """A deep copy of `model` with `fn` applied to every weight matrix / kernel (ndim ≥ 2).

    `all_params=True` also applies it to biases and normalisation parameters.
    """
    out = copy.deepcopy(model)
    for p in out.parameters():
        if all_params or p.dim() >= 2:
            p.copy_(fn(p))
    return out
