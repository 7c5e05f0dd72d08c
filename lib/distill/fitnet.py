"""FitNets: hints for thin deep nets (Romero et al., ICLR 2015)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lib.distill.features import match_spatial

REGRESSORS = ("1x1", "conv")


def conv_regressor_fits(student_size: tuple[int, int], teacher_size: tuple[int, int]) -> bool:
    """Whether the paper's conv regressor can map a student map of `student_size` (H, W) onto
    the teacher's `teacher_size`: a valid convolution only shrinks, so the student's map must
    be at least as large in both dimensions."""
    return student_size[0] >= teacher_size[0] and student_size[1] >= teacher_size[1]


class FitNet(nn.Module):
    """Romero et al. 2015: hint loss `mean ‖W_r(student_feat) − teacher_feat‖²`.

    W_r is a trainable regressor from the student's guided layer to the teacher's hint layer:
    - `regressor="conv"`, the paper's: a convolution without padding whose kernel is sized so
      that its output has the teacher's map size, (H_s − H_t + 1) × (W_s − W_t + 1) (1×1 for
      equal sizes), followed by BatchNorm and ReLU as in RepDistiller's ConvReg (the paper asks
      the regressor to have the hint layer's nonlinearity). Needs `student_size` and
      `teacher_size` (H, W) with the student's map at least as large (`conv_regressor_fits`).
    - `regressor="1x1"`: a linear 1×1 convolution; if spatial sizes differ, the larger map is
      adaptive-average-pooled to the smaller. On vectors (B, D) it is the same linear map.
    The squared error is averaged over all elements (RepDistiller's MSE; the paper writes
    ½‖·‖²). The teacher's features are detached; W_r's parameters must be given to the optimiser.

    The paper trains in two stages: stage 1 trains the student's layers up to the guided
    layer together with W_r on this hint loss alone; stage 2 trains the whole student with
    KD (W_r discarded). The one-stage variant of RepDistiller adds this loss with weight 100
    to CE/KD from the start. This module is the loss only: the experiment selects the variant.
    """

    inputs = "features"

    def __init__(self, student_channels: int, teacher_channels: int, regressor: str = "1x1",
                 student_size: tuple[int, int] | None = None,
                 teacher_size: tuple[int, int] | None = None):
        super().__init__()
        if regressor not in REGRESSORS:
            raise ValueError(f"regressor: unknown '{regressor}', choose from {', '.join(REGRESSORS)}")
        self.student_channels, self.teacher_channels = student_channels, teacher_channels
        self.kind = regressor
        if regressor == "1x1":
            self.regressor = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)  # W_r
            return
        if student_size is None or teacher_size is None:
            raise ValueError("regressor: 'conv' needs student_size and teacher_size (H, W)")
        if not conv_regressor_fits(student_size, teacher_size):
            raise ValueError(f"regressor: 'conv' needs the student's map at least as large as the "
                             f"teacher's, got {tuple(student_size)} and {tuple(teacher_size)}")
        kernel = (student_size[0] - teacher_size[0] + 1, student_size[1] - teacher_size[1] + 1)
        self.regressor = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, kernel),
                                       nn.BatchNorm2d(teacher_channels), nn.ReLU())

    def regress(self, student_feat: Tensor) -> Tensor:
        """W_r applied to student features (B, C_s, H, W), or (B, C_s) for the 1x1 regressor."""
        dims = (2, 4) if self.kind == "1x1" else (4,)
        if student_feat.dim() not in dims or student_feat.shape[1] != self.student_channels:
            shapes = " or ".join(f"(B, {self.student_channels}{', H, W' if d == 4 else ''})" for d in dims)
            raise ValueError(f"student_feat: expected {shapes}, got {tuple(student_feat.shape)}")
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
            if self.kind == "conv" and s.shape[2:] != t.shape[2:]:
                raise ValueError(f"teacher_feat: the conv regressor was sized for maps "
                                 f"{tuple(s.shape[2:])}, got {tuple(t.shape[2:])}")
            s, t = match_spatial(s, t)
        return F.mse_loss(s, t)

    def extra_repr(self) -> str:
        return (f"student_channels={self.student_channels}, "
                f"teacher_channels={self.teacher_channels}, regressor={self.kind!r}")
