"""Knowledge distillation losses, one `nn.Module` per loss with `forward(student, teacher)`.

`LOSSES` maps a name to its class. Each class has `inputs`: "logits" (the models' outputs) or
"features" (intermediate activations, read with `FeatureTap`). Teacher inputs never receive
gradients. Loss weights (β, γ, …) belong to the experiments, not to these modules.
"""
from __future__ import annotations

from lib.distill.attention import AttentionTransfer, attention_map
from lib.distill.dml import DML
from lib.distill.features import FeatureTap
from lib.distill.fitnet import FitNet
from lib.distill.fsp import FSP, fsp_matrix
from lib.distill.kd import KD, kd_criterion
from lib.distill.refinery import SoftCE
from lib.distill.rkd import RKDAngle, RKDDistance
from lib.distill.sp import SimilarityPreserving
from lib.distill.targets import cached_logits
from lib.distill.teacher import Distill, Term, TermMeans, teacher_outputs, term_ratios, weighted_ce

LOSSES: dict[str, type] = {
    "kd": KD,
    "dml": DML,
    "soft_ce": SoftCE,
    "fitnet": FitNet,
    "attention": AttentionTransfer,
    "fsp": FSP,
    "rkd_distance": RKDDistance,
    "rkd_angle": RKDAngle,
    "sp": SimilarityPreserving,
}


def check_loss_name(name: str) -> None:
    """One-line error for a loss the registry does not know."""
    if name not in LOSSES:
        raise ValueError(f"loss: unknown '{name}', choose from {', '.join(LOSSES)}")


__all__ = ["LOSSES", "check_loss_name", "KD", "kd_criterion", "DML", "SoftCE", "FitNet",
           "AttentionTransfer", "attention_map", "FSP", "fsp_matrix", "RKDDistance", "RKDAngle",
           "SimilarityPreserving", "FeatureTap", "cached_logits", "Distill", "Term", "TermMeans",
           "teacher_outputs", "term_ratios", "weighted_ce"]
