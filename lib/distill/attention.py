"""Attention Transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention")."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lib.distill.features import Features, feature_pairs, match_spatial

REDUCTIONS = ("mean", "sum")


def attention_map(feat: Tensor, p: float = 2, reduce: str = "mean", normalize: bool = True) -> Tensor:
    """Spatial attention of feature maps (B, C, H, W): reduce |a|^p over C, flatten to (B, H·W).

    With `normalize` each sample's map has unit L2 norm; "mean" and "sum" then give the same
    map (they differ by the factor C), they differ only for `normalize=False`.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce: unknown '{reduce}', choose from {', '.join(REDUCTIONS)}")
    if feat.dim() != 4:
        raise ValueError(f"attention: needs feature maps (B, C, H, W), got {tuple(feat.shape)}")
    a = feat.abs().pow(p)
    a = a.mean(dim=1) if reduce == "mean" else a.sum(dim=1)  # (B, H, W)
    a = a.flatten(1)  # (B, H*W)
    return F.normalize(a, p=2, dim=1) if normalize else a



class AttentionTransfer(nn.Module):
    """Zagoruyko & Komodakis 2017: `Σ_layers mean_(b, j) (Q_s[b, j] − Q_t[b, j])²`.

    Q = attention_map(feature): channel-wise mean (paper: sum; equal after normalisation) of
    |a|^p, flattened to (B, H·W) and L2-normalised per sample. The squared difference is
    averaged over batch and positions, as in the official code, and summed over the layer
    pairs. Channel counts may differ; if spatial sizes differ the larger feature is
    adaptive-average-pooled to the smaller before its map is taken. The paper writes the term
    as β/2 · ‖Q_s − Q_t‖_2; the official code uses this per-element mean with β = 1000 — the
    weight is the experiment's to set. Teacher features are detached.

    A teacher entry of shape (B, H·W) is taken as the teacher's attention map already computed
    (`attention_map`, e.g. once for the whole training set: the teacher never changes); the
    student's map must then have H·W positions, as no pooling is possible.
    """

    inputs = "features"

    def __init__(self, p: float = 2, reduce: str = "mean"):
        super().__init__()
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce: unknown '{reduce}', choose from {', '.join(REDUCTIONS)}")
        self.p, self.reduce = p, reduce

    def forward(self, student_feats: Features, teacher_feats: Features) -> Tensor:
        """Loss between one feature map (or a list of them) of student and teacher."""
        total = 0.0
        for s, t in feature_pairs(student_feats, teacher_feats, "attention"):
            if s.dim() != 4 or t.dim() not in (2, 4):
                raise ValueError(f"attention: needs feature maps (B, C, H, W), got student "
                                 f"{tuple(s.shape)} and teacher {tuple(t.shape)}")
            if t.dim() == 2:  # the teacher's map, precomputed
                qt = t.detach()
                if s.shape[2] * s.shape[3] != qt.shape[1]:
                    raise ValueError(f"attention: the teacher's precomputed map has "
                                     f"{qt.shape[1]} positions, the student's map "
                                     f"{tuple(s.shape[2:])}")
            else:
                s, t = match_spatial(s, t.detach())
                qt = attention_map(t, self.p, self.reduce)
            qs = attention_map(s, self.p, self.reduce)
            total = total + (qs - qt).pow(2).mean()
        return total

    def extra_repr(self) -> str:
        return f"p={self.p}, reduce={self.reduce!r}"
