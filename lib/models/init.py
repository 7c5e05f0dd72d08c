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
