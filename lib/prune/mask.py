"""Masks: parameter name -> boolean tensor (True = kept), validated against a model.

A mask is enforced during training by `MaskHook`: gradients of pruned weights are zeroed after
backward (so Adam / momentum state for them stays zero), and after every optimiser step pruned
weights are written back to their fixed value, zero by default. The second step is what makes
the guarantee hold through weight decay and through optimiser state that was already non-zero.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lib.runs import atomic_torch_save
from lib.train import Hook


class MaskError(ValueError):
    """A mask that does not fit its model; the message names the parameter."""


def prunable_layers(model: nn.Module) -> dict[str, str]:
    """Weight names of every Linear / Conv2d, with their kind: 'conv', 'fc' or 'output'.

    The last Linear in module order is the classifier ('output'): the lottery-ticket paper
    prunes it at a lower rate. Biases and BatchNorm parameters are never prunable.
    """
    kinds = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            kinds[f"{name}.weight"] = "conv"
        elif isinstance(m, nn.Linear):
            kinds[f"{name}.weight"] = "fc"
    last_fc = [n for n, k in kinds.items() if k == "fc"][-1:]
    for n in last_fc:
        kinds[n] = "output"
    return kinds


class Mask(dict):
    """name -> bool tensor. Build with `Mask.ones(model)`; check with `validate(model)`."""

    @classmethod
    def ones(cls, model: nn.Module) -> "Mask":
        params = dict(model.named_parameters())
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_layers(model)})

    def validate(self, model: nn.Module) -> "Mask":
        """Raise MaskError on an unknown parameter, a shape mismatch, or a non-boolean tensor."""
        params = dict(model.named_parameters())
        for name, m in self.items():
            if name not in params:
                raise MaskError(f"mask[{name!r}]: no such parameter in the model "
                                f"(prunable: {', '.join(prunable_layers(model))})")
            if tuple(m.shape) != tuple(params[name].shape):
                raise MaskError(f"mask[{name!r}]: shape {tuple(m.shape)} does not match the "
                                f"parameter's {tuple(params[name].shape)}")
            if m.dtype != torch.bool:
                raise MaskError(f"mask[{name!r}]: dtype {m.dtype}, expected torch.bool")
        return self

    def kept(self) -> int:
        return int(sum(m.sum().item() for m in self.values()))

    def size(self) -> int:
        return int(sum(m.numel() for m in self.values()))

    def density(self) -> float:
        """Fraction of maskable weights kept."""
        return self.kept() / max(self.size(), 1)

    def layer_density(self) -> dict[str, float]:
        return {n: m.float().mean().item() for n, m in self.items()}

    def save(self, path: Path) -> None:
        atomic_torch_save({n: m.cpu() for n, m in self.items()}, path)

    @classmethod
    def load(cls, path: Path) -> "Mask":
        return cls(torch.load(path, map_location="cpu", weights_only=True))

    @torch.no_grad()
    def apply(self, model: nn.Module, fill: dict[str, Tensor] | None = None) -> nn.Module:
        """Set pruned weights to zero (or to `fill[name]`) in place."""
        self.validate(model)
        params = dict(model.named_parameters())
        for name, m in self.items():
            p = params[name]
            value = fill[name].to(p) if fill and name in fill else torch.zeros_like(p)
            p.copy_(torch.where(m.to(p.device), p, value))
        return model

    def hook(self, model: nn.Module, fill: dict[str, Tensor] | None = None) -> "MaskHook":
        return MaskHook(self.validate(model), model, fill)


class MaskHook(Hook):
    """Keeps pruned weights at their fixed value (zero, or `fill`) through any optimiser."""

    def __init__(self, mask: Mask, model: nn.Module, fill: dict[str, Tensor] | None = None):
        params = dict(model.named_parameters())
        self.items = []  # (param, float mask, fixed values of pruned entries or None)
        for name, m in mask.items():
            if bool(m.all()) and not (fill and name in fill):
                continue  # a dense layer needs no work per step
            p = params[name]
            keep = m.to(device=p.device, dtype=p.dtype)
            fixed = None if not fill or name not in fill else (1 - keep) * fill[name].to(p)
            self.items.append((p, keep, fixed))
        mask.apply(model, fill)

    def after_backward(self, model: nn.Module) -> None:
        for p, keep, _ in self.items:
            if p.grad is not None:
                p.grad.mul_(keep)

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int) -> None:
        for p, keep, fixed in self.items:
            p.mul_(keep)
            if fixed is not None:
                p.add_(fixed)
