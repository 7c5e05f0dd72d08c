"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class DML(nn.Module):
    """Zhang et al. 2018: the mimicry term `KL(p_peer ‖ p_self)`, no temperature.

    Each peer k is trained on `CE(y, p_k) + KL(p_peer ‖ p_k)` with the peer's prediction
    detached, so the term only moves the network being updated; the two peers take turns.
    KL is summed over classes and averaged over the batch.
    """

    inputs = "logits"

    def forward(self, logits_self: Tensor, logits_peer: Tensor) -> Tensor:
        """Mimicry loss pulling `logits_self` (B, K) towards the detached `logits_peer` (B, K)."""
        log_p_self = F.log_softmax(logits_self, dim=1)
        log_p_peer = F.log_softmax(logits_peer.detach(), dim=1)
        return F.kl_div(log_p_self, log_p_peer, reduction="batchmean", log_target=True)
