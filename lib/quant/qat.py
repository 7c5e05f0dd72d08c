"""Fake-quantized Linear / Conv2d for post-training quantization (PTQ) and QAT.

`prepare(model, weight_spec, act_spec)` swaps every nn.Linear / nn.Conv2d for a subclass that
computes `layer(fq(input), fq(weight))`, fq the fake quantizer of `lib.quant.quantizer` (STE
gradient: 1 inside the clamp range, 0 outside). Weights use their own current range (per
channel along the output dim, or per tensor); the input activation uses a stored per-tensor
range (`act_lo`, `act_hi` buffers, saved in checkpoints):

- PTQ: `calibrate_model(model, x, method)` runs the float model on a sample, sets each
  layer's input range with an observer of `lib.quant.calibrate`, then evaluate as usual.
- QAT: calibrate as for PTQ (the usual start, and `lib.train.train` evaluates before its
  first step), then train; in train mode the range follows an exponential moving average of
  batch min / max (lo ← (1 − m)·lo + m·min_batch, m = 0.01; an unset range takes the first
  batch's). Evaluating with an unset range is a one-line RuntimeError, never a silent guess.

`quantize_weights_(model, spec)` is weights-only PTQ on any model: each weight is replaced by
its fake-quantized value, in place.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.quant.calibrate import calibrate, check_calibration_name
from lib.quant.quantizer import QuantSpec, fake_quantize

WEIGHT_SPEC = QuantSpec(bits=8, symmetric=True, per_channel=True, axis=0)
ACT_SPEC = QuantSpec(bits=8, symmetric=False)


class FakeQuantMixin:
    """State and input / weight fake quantization shared by the quantized layers."""

    weight: Tensor

    def _init_quant(self, weight_spec: QuantSpec | None, act_spec: QuantSpec | None,
                    momentum: float) -> None:
        if act_spec is not None and act_spec.per_channel:
            raise ValueError("act_spec.per_channel: activations are quantized per tensor; set it False")
        self.weight_spec, self.act_spec, self.momentum = weight_spec, act_spec, momentum
        self.quant_enabled = True  # False: a plain float layer (used while calibrating)
        self.register_buffer("act_lo", torch.tensor(float("nan")))
        self.register_buffer("act_hi", torch.tensor(float("nan")))

    def range_is_set(self) -> bool:
        return bool(torch.isfinite(self.act_lo) & torch.isfinite(self.act_hi))

    def set_act_range(self, lo: Tensor | float, hi: Tensor | float) -> None:
        self.act_lo.fill_(float(torch.as_tensor(lo).reshape(())))
        self.act_hi.fill_(float(torch.as_tensor(hi).reshape(())))

    @torch.no_grad()
    def _observe(self, x: Tensor) -> None:
        """Moving average of the batch min / max (the first batch sets the range)."""
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not self.range_is_set():
            self.act_lo.copy_(lo), self.act_hi.copy_(hi)
        else:
            self.act_lo.lerp_(lo, self.momentum), self.act_hi.lerp_(hi, self.momentum)

    def quant_input(self, x: Tensor) -> Tensor:
        if self.act_spec is None or not self.quant_enabled:
            return x
        if self.training:
            self._observe(x)
        elif not self.range_is_set():
            raise RuntimeError("activation range not set: call lib.quant.calibrate_model(model, x) "
                               "or train the prepared model first")
        return fake_quantize(x, self.act_spec, self.act_lo, self.act_hi)

    def quant_weight(self) -> Tensor:
        if self.weight_spec is None or not self.quant_enabled:
            return self.weight
        return fake_quantize(self.weight, self.weight_spec)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_spec={self.weight_spec}, act_spec={self.act_spec}"


class QuantLinear(FakeQuantMixin, nn.Linear):
    """nn.Linear computing fq(x) · fq(W)ᵀ + b."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_spec: QuantSpec | None = WEIGHT_SPEC, act_spec: QuantSpec | None = ACT_SPEC,
                 momentum: float = 0.01, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._init_quant(weight_spec, act_spec, momentum)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quant_input(x), self.quant_weight(), self.bias)


class QuantConv2d(FakeQuantMixin, nn.Conv2d):
    """nn.Conv2d computing conv(fq(x), fq(W)) + b."""

    def __init__(self, *args, weight_spec: QuantSpec | None = WEIGHT_SPEC,
                 act_spec: QuantSpec | None = ACT_SPEC, momentum: float = 0.01, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(weight_spec, act_spec, momentum)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quant_input(x), self.quant_weight(), self.bias)


QUANT_LAYERS = (QuantLinear, QuantConv2d)


def _quantized_copy(mod: nn.Module, weight_spec: QuantSpec | None,
                    act_spec: QuantSpec | None) -> nn.Module:
    """A Quant* twin of a float Linear / Conv2d with the same weights, device and dtype."""
    kw = dict(weight_spec=weight_spec, act_spec=act_spec, device=mod.weight.device,
              dtype=mod.weight.dtype)
    if isinstance(mod, nn.Linear):
        new = QuantLinear(mod.in_features, mod.out_features, mod.bias is not None, **kw)
    else:
        new = QuantConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride,
                          mod.padding, mod.dilation, mod.groups, mod.bias is not None,
                          mod.padding_mode, **kw)
    new.load_state_dict(mod.state_dict(), strict=False)  # act_lo / act_hi stay unset
    new.weight.requires_grad_(mod.weight.requires_grad)
    new.train(mod.training)
    return new


def prepare(model: nn.Module, weight_spec: QuantSpec | None = WEIGHT_SPEC,
            act_spec: QuantSpec | None = ACT_SPEC) -> nn.Module:
    """Swap every nn.Linear / nn.Conv2d of `model` (in place) for its fake-quantized twin.

    None for a spec leaves that side in float. Returns `model`.
    """
    for spec in (weight_spec, act_spec):
        if spec is not None:
            spec.validate()
    targets = [(name, mod) for name, mod in model.named_modules()
               if type(mod) in (nn.Linear, nn.Conv2d)]  # exact types: skip the Quant* twins
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not child:
            raise ValueError("prepare: model is itself a Linear / Conv2d; wrap it in a module")
        setattr(parent, child, _quantized_copy(mod, weight_spec, act_spec))
    return model


def quant_layers(model: nn.Module) -> list[tuple[str, FakeQuantMixin]]:
    """(name, layer) of every fake-quantized layer in `model`."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


@contextmanager
def float_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily turn off fake quantization in every prepared layer."""
    layers = [m for _, m in quant_layers(model)]
    before = [m.quant_enabled for m in layers]
    for m in layers:
        m.quant_enabled = False
    try:
        yield model
    finally:
        for m, b in zip(layers, before):
            m.quant_enabled = b


@torch.no_grad()
def calibrate_model(model: nn.Module, x_sample: Tensor, method: str = "minmax",
                    chunk: int = 256, **kwargs) -> nn.Module:
    """Set every prepared layer's input range by observer `method` on a float forward pass.

    All inputs each layer sees on `x_sample` (a few hundred examples) are kept in memory,
    so percentile and MSE observers see the whole sample. kwargs go to the observer.
    """
    check_calibration_name(method)
    layers = [(n, m) for n, m in quant_layers(model) if m.act_spec is not None]
    if not layers:
        raise ValueError("calibrate_model: no prepared layer with an act_spec; call prepare() first")
    seen: dict[str, list[Tensor]] = {n: [] for n, _ in layers}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: seen[n].append(args[0].detach()))
             for n, m in layers]
    was_training = model.training
    model.eval()
    try:
        with float_mode(model):
            for i in range(0, len(x_sample), chunk):
                model(x_sample[i:i + chunk])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for n, m in layers:
        lo, hi = calibrate(seen.pop(n), m.act_spec, method, **kwargs)
        m.set_act_range(lo, hi)
    return model


@torch.no_grad()
def quantize_weights_(model: nn.Module, spec: QuantSpec = WEIGHT_SPEC) -> nn.Module:
    """Weights-only PTQ: replace each Linear / Conv2d weight by fq(W), in place (biases stay float)."""
    spec.validate()
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            mod.weight.copy_(fake_quantize(mod.weight, spec))
    return model
