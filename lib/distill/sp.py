"""Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lib.distill.features import Features, feature_pairs


def similarity(feat: Tensor) -> Tensor:
    """Row-normalised batch similarity G (B, B) of features flattened to (B, −1)."""
    f = feat.flatten(1)  # (B, C*H*W)
    return F.normalize(f @ f.t(), p=2, dim=1)  # (B, B), each row unit L2 norm


class SimilarityPreserving(nn.Module):
    """Tung & Mori 2019: `Σ_layers ‖G_t − G_s‖²_F / B²`, with G = row-normalise(F·Fᵀ).

    F is a layer's activation flattened to (B, −1); G compares the samples of a batch with
    each other, so student and teacher widths and spatial sizes may differ. Summed over the
    layer pairs given. The paper's weight is γ = 3000, set by the experiment. Teacher
    features are detached.
    """

    inputs = "features"

    def forward(self, student_feats: Features, teacher_feats: Features) -> Tensor:
        """Loss between one feature (or a list of them) of student and teacher."""
        total = 0.0
        for s, t in feature_pairs(student_feats, teacher_feats, "sp"):
            if len(s) != len(t):
                raise ValueError(f"sp: student and teacher batches differ, {len(s)} and {len(t)}")
            g_s, g_t = similarity(s), similarity(t.detach())
            total = total + (g_t - g_s).pow(2).sum() / len(s) ** 2
        return total
