"""FitNets: hints for thin deep nets (Romero et al., ICLR 2015)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lib.distill.features import match_spatial


class FitNet(nn.Module):
    """Romero et al. 2015: hint loss `mean ‖W_r(student_feat) − teacher_feat‖²`.

    W_r is a trainable regressor from the student's guided layer to the teacher's hint layer:
    a 1x1 convolution for feature maps (B, C, H, W) and a linear map for vectors (B, D). Both
    use one weight (C_t, C_s): a 1x1 conv is the same linear map applied at every location.
    The squared error is averaged over all elements (RepDistiller's MSE; the paper writes
    ½‖·‖²). If spatial sizes differ, the larger map is adaptive-average-pooled to the smaller.
    The teacher's features are detached; W_r's parameters must be given to the optimiser.

    The paper trains in two stages: stage 1 trains the student's layers up to the guided
    layer together with W_r on this hint loss alone; stage 2 trains the whole student with
    KD (W_r discarded). The one-stage variant of RepDistiller adds this loss with weight 100
    to CE/KD from the start. This module is the loss only: the experiment selects the variant.
    """

    inputs = "features"

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.regressor = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)  # W_r

    def regress(self, student_feat: Tensor) -> Tensor:
        """W_r applied to student features (B, C_s, H, W) or (B, C_s)."""
        if student_feat.dim() not in (2, 4) or student_feat.shape[1] != self.student_channels:
            raise ValueError(f"student_feat: expected (B, {self.student_channels}) or "
                             f"(B, {self.student_channels}, H, W), got {tuple(student_feat.shape)}")
        if student_feat.dim() == 4:
            return self.regressor(student_feat)
        return F.linear(student_feat, self.regressor.weight.flatten(1), self.regressor.bias)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Mean squared error between W_r(`student_feat`) and the detached `teacher_feat`."""
        if teacher_feat.dim() != student_feat.dim() or teacher_feat.shape[1] != self.teacher_channels:
            raise ValueError(f"teacher_feat: expected {student_feat.dim()}-D with "
                             f"{self.teacher_channels} channels, got {tuple(teacher_feat.shape)}")
        s, t = self.regress(student_feat), teacher_feat.detach()
        if s.dim() == 4:
            s, t = match_spatial(s, t)
        return F.mse_loss(s, t)

    def extra_repr(self) -> str:
        return f"student_channels={self.student_channels}, teacher_channels={self.teacher_channels}"
