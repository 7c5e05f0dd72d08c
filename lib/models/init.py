"""Weight initialisers shared by the model families."""
from __future__ import annotations

from torch import nn


def glorot_(model: nn.Module) -> nn.Module:
    """Glorot (Xavier) normal weights and zero biases, as in the lottery-ticket paper."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def kaiming_bn_(model: nn.Module, linear_std: float | None = None) -> nn.Module:
    """The CIFAR codes' init (Network Slimming, RepDistiller): Kaiming-normal fan-out convs
    (and zero conv biases, where convs have them), BatchNorm scale 1 and shift 0, and (with
    `linear_std`) N(0, std²) linear weights with zero biases; otherwise linear layers keep
    PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
    return model
