"""Label Refinery (Bagherinezhad, Horton, Rastegari & Farhadi 2018, "Label Refinery")."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SoftCE(nn.Module):
    """Bagherinezhad et al. 2018: `−Σ_k softmax(t)_k · log softmax(s)_k`, averaged over the batch.

    Model C_{k+1} is trained only on the soft outputs of C_k (no ground-truth labels, no
    temperature); `teacher_logits` are C_k's and are detached. Equal to KL(p_t ‖ p_s) plus the
    teacher's entropy, a constant, so the gradient is KD's at T = 1.
    """

    inputs = "logits"

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        """Cross-entropy of `student_logits` (B, K) against softmax(`teacher_logits`) (B, K)."""
        target = F.softmax(teacher_logits.detach(), dim=1)
        return -(target * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()
