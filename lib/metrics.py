"""Model size metrics: parameter counts, non-zeros, bytes."""
from __future__ import annotations

from torch import nn


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Parameters that are not exactly zero (what a sparse format would store)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def size_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers as stored densely."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
