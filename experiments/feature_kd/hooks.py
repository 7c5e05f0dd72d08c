"""The distillation terms of this experiment as training-loop `Hook`s.

`OnlineTeacher` runs the teacher (under no_grad) on each training batch. It taps named layers of
the student (recorded during the loop's own forward pass) and of the teacher, and adds
`weight · loss(student features, teacher features)` to the batch loss, plus
`kd_weight · KD(student logits, teacher logits)` when asked: one teacher pass serves both terms.
The loss module's parameters (FitNet's regressor W_r) train with the student and are saved in
the loop's checkpoint. `LabelWeight` sets the weight of the loop's own cross-entropy term.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.data import Splits
from lib.distill import KD, FeatureTap
from lib.train import Hook


class OnlineTeacher(Hook):
    """Feature term (`loss` over the layer pairs) and/or KD term, the teacher run per batch."""

    def __init__(self, student: nn.Module, teacher: nn.Module, *, loss: nn.Module | None = None,
                 weight: float = 0.0, student_layers: Sequence[str] = (),
                 teacher_layers: Sequence[str] = (), kd: KD | None = None, kd_weight: float = 0.0):
        if len(student_layers) != len(teacher_layers) or bool(student_layers) != (loss is not None):
            raise ValueError(f"layers: a feature loss needs as many student as teacher layers, got "
                             f"{list(student_layers)} and {list(teacher_layers)}")
        self.teacher, self.loss, self.weight = teacher, loss, weight
        self.kd, self.kd_weight = kd, kd_weight
        self.student_tap = FeatureTap(student, student_layers)
        self.teacher_tap = FeatureTap(teacher, teacher_layers)
        self._sum, self._count = 0.0, 0  # feature loss since the last evaluation

    def parameters(self):
        return self.loss.parameters() if self.loss is not None else ()

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        total = logits.new_zeros(())
        if self.loss is not None:
            s, t = self.student_tap(), self.teacher_tap()
            feature = self.loss(s[0], t[0]) if len(s) == 1 else self.loss(s, t)
            total = total + self.weight * feature
            self._sum, self._count = self._sum + feature.detach(), self._count + 1
        if self.kd is not None:
            total = total + self.kd_weight * self.kd(logits, teacher_logits)
        return total

    def metrics(self, model: nn.Module, data: Splits) -> dict:
        # runs right after the evaluation pass: drop the (test-set sized) features it left behind
        self.student_tap.features.clear()
        if self.loss is None:
            return {}
        if not self._count:
            return {"feature_loss": float("nan")}
        mean, self._sum, self._count = float(self._sum) / self._count, 0.0, 0
        return {"feature_loss": mean}

    def state_dict(self) -> dict:
        return self.loss.state_dict() if self.loss is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.loss is not None:
            self.loss.load_state_dict(state)

    def remove(self) -> None:
        self.student_tap.remove()
        self.teacher_tap.remove()


class LabelWeight(Hook):
    """Make the label term `weight · CE`: the loop always adds CE, this adds `(weight − 1)·CE`.

    Both CE terms are the same computation on the same logits, so with `weight` 0 the label
    term and its gradient cancel exactly (FitNet's stage 1 trains on the hint loss alone).
    """

    def __init__(self, weight: float):
        self.weight = weight

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        return (self.weight - 1.0) * F.cross_entropy(logits, y)
