"""Relational Knowledge Distillation (Park, Kim, Lu & Cho, CVPR 2019).

Both losses compare the *structure* of a batch of embeddings (B, D) rather than the embeddings
themselves, so student and teacher may have different widths. Feature maps (B, C, H, W) are
flattened to (B, C·H·W). Weights in the official CIFAR code: distance 25, angle 50 (metric
learning code: 1 and 2); the experiment sets them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances (B, B) between the rows of `e` (B, D), zero on the diagonal."""
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # (B, B, D)
    # the clamp keeps the gradient of sqrt finite at the zero diagonal
    d = diff.pow(2).sum(dim=2).clamp_min(eps).sqrt()  # (B, B)
    off_diagonal = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d * off_diagonal


def normalized_distances(e: Tensor) -> Tensor:
    """ψ_D: pairwise distances divided by the mean of the off-diagonal ones."""
    d = pairwise_distances(e)
    b = len(e)
    mean = d.sum() / max(b * (b - 1), 1)
    return d / mean.clamp_min(1e-12)


def triplet_angles(e: Tensor) -> Tensor:
    """ψ_A: cos of the angle at e_j between e_i − e_j and e_k − e_j, as a (B, B, B) tensor [i, j, k]."""
    u = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # u[j, i] = unit(e_i − e_j), (B, B, D)
    return torch.einsum("jid,jkd->ijk", u, u)  # (B, B, B); 0 where i == j or k == j


def embeddings(feat: Tensor) -> Tensor:
    """Features as embeddings (B, D): 4-D maps are flattened."""
    return feat.flatten(1) if feat.dim() > 2 else feat


class RKDDistance(nn.Module):
    """Park et al. 2019, distance-wise: `Huber(ψ_D(student), ψ_D(teacher))`.

    ψ_D(e)[i, j] = ‖e_i − e_j‖ / μ, μ the mean over the B(B−1) off-diagonal distances of that
    side, so the loss does not change when either embedding is scaled. The smooth-L1 loss is
    averaged over all B² entries (the zero diagonals included, as in the official code).
    The teacher side is computed without gradient.
    """

    inputs = "features"

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Distance-wise relational loss between student and teacher embeddings of one batch."""
        with torch.no_grad():
            t = normalized_distances(embeddings(teacher_feat))
        s = normalized_distances(embeddings(student_feat))
        return F.smooth_l1_loss(s, t)


class RKDAngle(nn.Module):
    """Park et al. 2019, angle-wise: `Huber(ψ_A(student), ψ_A(teacher))`.

    ψ_A(e)[i, j, k] = ⟨unit(e_i − e_j), unit(e_k − e_j)⟩, the cosine of the angle at e_j for
    every triple: (B, B, B) entries, so memory grows as B³·D. Unchanged by scaling and
    translating either embedding. The smooth-L1 loss is averaged over the B³ entries. The
    teacher side is computed without gradient.
    """

    inputs = "features"

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        """Angle-wise relational loss between student and teacher embeddings of one batch."""
        with torch.no_grad():
            t = triplet_angles(embeddings(teacher_feat))
        s = triplet_angles(embeddings(student_feat))
        return F.smooth_l1_loss(s, t)
