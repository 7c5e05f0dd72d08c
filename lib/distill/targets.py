"""Per-example distillation targets computed once: a fixed teacher's logits on the training set.

A teacher that never changes (KD, Born-Again, Label Refinery, TA-KD) gives the same logits for
an un-augmented training image at every epoch, so `cached_logits` computes them once and
`LogitTargets` looks them up by the batch's training-set indices (the loop passes them to
`Hook.on_batch`). The student's step then costs no teacher forward pass: on a CPU this halves the
time of distilling a small student from a ResNet. With augmentation the images differ per epoch,
so use the teacher online instead (`kd_criterion`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lib.train import Hook


@torch.no_grad()
def cached_logits(model: nn.Module, x: Tensor, chunk: int = 2048) -> Tensor:
    """`model(x)` in eval mode, computed in chunks; (N, K), detached, on `x`'s device."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    finally:
        model.train(was_training)


class LogitTargets(Hook):
    """Adds `weight · loss(student_logits, table[batch index])` to the batch loss.

    `table` is (N_train, K) teacher logits (from `cached_logits` on `data.train_x`); `loss` is any
    logits loss of `lib.distill` (KD, SoftCE, DML). Pair it with a criterion carrying the label
    term, e.g. `(1 − α)·CE` for Hinton's mix, or a zero criterion for Label Refinery.
    """

    def __init__(self, table: Tensor, loss: nn.Module, weight: float = 1.0):
        if table.dim() != 2:
            raise ValueError(f"table: expected (N, classes) logits, got shape {tuple(table.shape)}")
        self.table, self.loss, self.weight = table.detach(), loss, weight
        self.index: Tensor | None = None

    def on_batch(self, index: Tensor) -> None:
        self.index = index

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        if self.index is None:
            raise RuntimeError("LogitTargets: no batch index yet (train() calls on_batch first)")
        return self.weight * self.loss(logits, self.table[self.index])
