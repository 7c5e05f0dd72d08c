"""Deep Mutual Learning (Zhang et al., CVPR 2018) as one module for the one training loop.

`Peers` holds P networks; in training mode its forward runs every peer on the batch and keeps
their logits, and `mutual_criterion(peers)` gives the loop the summed loss

    Σ_k [ CE(y, p_k) + 1/(P−1) · Σ_{l≠k} KL(p_l ‖ p_k) ],   p_l detached in peer k's term,

so one backward pass gives each peer exactly the gradient of its own DML objective. All peers
are updated *simultaneously* from the same batch by one optimiser (same per-parameter SGD as
separate optimisers). The paper updates them in turn within a step (peer 2 sees peer 1's
prediction after peer 1's update); here every peer sees the others' predictions from before the
step, a target one step older. In eval mode the forward is peer 0's, so the loop's own
validation numbers (and early stop) are peer 0's; `select.BestWeights(prefix=...)` tracks each
peer on its own.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lib.distill import DML


class Peers(nn.Module):
    """P ≥ 2 networks trained together; `forward` returns peer 0's logits (B, K)."""

    def __init__(self, peers: Sequence[nn.Module]):
        super().__init__()
        if len(peers) < 2:
            raise ValueError(f"peers: DML needs at least 2, got {len(peers)}")
        self.peers = nn.ModuleList(peers)
        self.logits: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return self.peers[0](x)
        self.logits = [p(x) for p in self.peers]  # P x (B, K), read by mutual_criterion
        return self.logits[0]


def mutual_criterion(peers: Peers):
    """`criterion(x, y, logits)` for `lib.train.train`: every peer's CE + mean mimicry KL."""
    mimicry = DML()

    def criterion(x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        outs = peers.logits
        if not outs or outs[0] is not logits:
            raise RuntimeError("mutual_criterion: call it right after Peers.forward in training mode")
        total = 0.0
        for k, own in enumerate(outs):
            others = [mimicry(own, o) for j, o in enumerate(outs) if j != k]
            total = total + F.cross_entropy(own, y) + sum(others) / len(others)
        return total

    return criterion
