"""A fixed network's logits on a whole tensor, computed once.

A teacher that never changes (KD, Born-Again, Label Refinery, TA-KD) gives the same logits for
an un-augmented training image at every epoch, so they can be computed once and looked up by
the batch's training-set indices (`lib.distill.teacher.Distill` with `tables`): the student's
step then costs no teacher forward pass, which on a CPU halves the time of distilling a small
student from a ResNet. With augmentation the images differ per epoch, so the teacher runs online.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def cached_logits(model: nn.Module, x: Tensor, chunk: int = 2048) -> Tensor:
    """`model(x)` in eval mode, computed in chunks; (N, K), detached, on `x`'s device."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    finally:
        model.train(was_training)
