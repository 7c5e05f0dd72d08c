"""Helpers for the model and channel-surgery tests: BN layers with random statistics and a random
choice of kept channels, so that a masking or surgery error cannot hide."""
from __future__ import annotations

import torch
from torch import nn

from lib.prune.surgery import widths


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN scales, shifts and running statistics, so masking errors cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def random_keep(model: nn.Module, frac: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """For every prunable unit, a random `frac` of its channels (at least one) to keep."""
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randperm(w, generator=g)[:max(1, int(frac * w))] for n, w in widths(model).items()}
