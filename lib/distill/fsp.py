"""Flow of the solution procedure (Yim, Joo, Bae & Kim, CVPR 2017, "A Gift from Knowledge
Distillation: Fast Optimization, Network Minimization and Transfer Learning")."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from lib.distill.features import Features, feature_pairs, match_spatial

REDUCTIONS = ("sum", "mean")


def fsp_matrix(f1: Tensor, f2: Tensor) -> Tensor:
    """G = F1·F2ᵀ / (H·W), (B, m, n), of maps F1 (B, m, H, W) and F2 (B, n, H', W').

    G[b, i, j] = Σ_(h, w) F1[b, i, h, w]·F2[b, j, h, w] / (H·W): how channel i of the first
    layer goes with channel j of the second, over the image. If the spatial sizes differ, the
    larger map is adaptive-average-pooled to the smaller first (as the paper does).
    """
    if f1.dim() != 4 or f2.dim() != 4:
        raise ValueError(f"fsp: needs feature maps (B, C, H, W), got {tuple(f1.shape)} and "
                         f"{tuple(f2.shape)}")
    f1, f2 = match_spatial(f1, f2)
    hw = f1.shape[2] * f1.shape[3]
    return torch.bmm(f1.flatten(2), f2.flatten(2).transpose(1, 2)) / hw  # (B, m, n)


def fsp_matrices(feats: Sequence[Tensor]) -> list[Tensor]:
    """The FSP matrix of each consecutive pair of layers: [G(f0, f1), G(f1, f2), ...]."""
    return [fsp_matrix(a, b) for a, b in zip(feats[:-1], feats[1:])]


class FSP(nn.Module):
    """Yim et al. 2017: `Σ_pairs mean_b ‖G_s[b] − G_t[b]‖²`, G the FSP matrix of each
    consecutive pair of the given layers (`fsp_matrix`; pairs with equal weights λ_i, as in
    the paper). The paper's distance is the squared L2 norm summed over the m·n entries
    (`reduce="sum"`, the default); RepDistiller averages over the entries (`reduce="mean"`).

    G_s and G_t must have the same shape, so the paper pairs layers of equal width (ResNet
    teacher and student with the same stage widths). Where widths differ, give
    `student_channels` and `teacher_channels` (one per layer): each student map whose width
    differs passes through a learned 1×1 conv (no bias) to the teacher's width before G is
    computed (FitNet's regressor idea; not in the paper). These adapters train with the student
    and are its loss's parameters. Teacher features are detached. The paper trains in two
    stages: this loss alone first, then the task; the experiment chooses.
    """

    inputs = "features"

    def __init__(self, student_channels: Sequence[int] = (), teacher_channels: Sequence[int] = (),
                 reduce: str = "sum"):
        super().__init__()
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce: unknown '{reduce}', choose from {', '.join(REDUCTIONS)}")
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"fsp: student_channels and teacher_channels need one entry per "
                             f"layer, got {len(student_channels)} and {len(teacher_channels)}")
        self.reduce = reduce
        self.adapters = nn.ModuleList(
            nn.Conv2d(s, t, 1, bias=False) if s != t else nn.Identity()
            for s, t in zip(student_channels, teacher_channels))

    def forward(self, student_feats: Features, teacher_feats: Features) -> Tensor:
        """Loss between the FSP matrices of the student's layers and the teacher's (≥ 2 each)."""
        pairs = feature_pairs(student_feats, teacher_feats, "fsp")
        if len(pairs) < 2:
            raise ValueError(f"fsp: needs at least 2 layers per side, got {len(pairs)}")
        if self.adapters and len(self.adapters) != len(pairs):
            raise ValueError(f"fsp: built for {len(self.adapters)} layers, got {len(pairs)}")
        s = [a(f) for a, (f, _) in zip(self.adapters, pairs)] if self.adapters else [f for f, _ in pairs]
        t = [f.detach() for _, f in pairs]
        total = 0.0
        for g_s, g_t in zip(fsp_matrices(s), fsp_matrices(t)):
            if g_s.shape != g_t.shape:
                raise ValueError(f"fsp: student and teacher FSP matrices differ in shape, "
                                 f"{tuple(g_s.shape)} and {tuple(g_t.shape)}; give the layer "
                                 f"widths so that adapters map the student's to the teacher's")
            sq = (g_s - g_t).pow(2).flatten(1)  # (B, m·n)
            total = total + (sq.sum(1).mean() if self.reduce == "sum" else sq.mean())
        return total

    def extra_repr(self) -> str:
        return f"reduce={self.reduce!r}"
