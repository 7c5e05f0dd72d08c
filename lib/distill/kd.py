"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

`KD` is the soft-target term alone; `kd_criterion` mixes it with cross-entropy on the labels
and plugs into `lib.train.train(criterion=...)`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KD(nn.Module):
    """Hinton et al. 2015: `T² · KL(softmax(t/T) ‖ softmax(s/T))`.

    The KL divergence is summed over classes and averaged over the batch. The T² factor keeps
    the gradient's size independent of T (the soft gradient scales as 1/T²), so the mix with
    cross-entropy needs no re-tuning when T changes: d loss / d s = T·(softmax(s/T) − softmax(t/T))/B.
    The teacher's logits are detached.
    """

    inputs = "logits"

    def __init__(self, T: float = 4.0):
        super().__init__()
        if not T > 0:
            raise ValueError(f"T: must be > 0, got {T}")
        self.T = T

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Distillation loss of `student_logits` (B, K) against `teacher_logits` (B, K)."""
        log_p_s = F.log_softmax(student_logits / self.T, dim=1)
        log_p_t = F.log_softmax(teacher_logits.detach() / self.T, dim=1)
        # kl_div(input=log q, target=log p) = Σ p·(log p − log q); "batchmean" sums classes, / B
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        return self.T ** 2 * kl

    def extra_repr(self) -> str:
        return f"T={self.T}"


Criterion = Callable[[Tensor, Tensor, Tensor], Tensor]


def kd_criterion(teacher_fn: Callable[[Tensor], Tensor], alpha: float = 0.9,
                 T: float = 4.0) -> Criterion:
    """A `criterion(x, y, logits)` for `lib.train.train`: `alpha·KD + (1 − alpha)·CE(y)`.

    `teacher_fn(x)` returns the teacher's logits; it runs under `torch.no_grad()`. Pass a
    teacher already in eval mode (dropout and batch-norm statistics frozen).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha}")
    kd = KD(T)

    def criterion(x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = teacher_fn(x)
        return alpha * kd(logits, teacher_logits) + (1 - alpha) * F.cross_entropy(logits, y)

    return criterion
