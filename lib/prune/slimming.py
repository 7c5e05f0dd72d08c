"""Network Slimming (Liu et al. ICCV 2017): sparsity training on BatchNorm scales.

The penalty λ·Σ|γ| over BN scales is applied as its subgradient: after backward, λ·sign(γ) is
added to every γ's gradient (the official code does exactly this; λ = 1e-4 on CIFAR). Channels
are then pruned under one global |γ| threshold: `structured.importance("bn_gamma", ...)` with
`structured.select_global`, which keeps a per-layer floor.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from lib.train import Hook


def batchnorms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm with a learnable scale, by module name."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None}


def bn_gammas(model: nn.Module) -> dict[str, Tensor]:
    """|γ| of every BatchNorm, by module name (detached copies)."""
    return {n: m.weight.detach().abs().clone() for n, m in batchnorms(model).items()}


def all_gammas(model: nn.Module) -> Tensor:
    """All |γ| of the model in one flat tensor (for histograms and global thresholds)."""
    gammas = list(bn_gammas(model).values())
    return torch.cat(gammas) if gammas else torch.zeros(0)


class SlimmingHook(Hook):
    """Adds λ·sign(γ) to the gradient of every BN scale (or of the BNs named in `layers`)."""

    def __init__(self, lam: float = 1e-4, layers: Iterable[str] | None = None):
        if not lam >= 0:
            raise ValueError(f"lam: must be >= 0, got {lam}")
        self.lam = lam
        self.layers = None if layers is None else set(layers)

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for name, bn in batchnorms(model).items():
            if bn.weight.grad is not None and (self.layers is None or name in self.layers):
                bn.weight.grad.add_(torch.sign(bn.weight), alpha=self.lam)
