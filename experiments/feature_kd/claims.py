"""The claims of FitNets, Attention Transfer and FSP (and KD beneath them), checked on our trials.

The papers' numbers are RepDistiller's CIFAR-100 benchmark (Tian et al. 2020, README of
github.com/HobbitLong/RepDistiller; single runs, last epoch), teacher → student pairs
resnet56 → resnet20 / wrn_40_2 → wrn_16_2 / resnet32x4 → resnet8x4, quoted in
../shared/REFERENCE.md except FSP's. Issue #12 states the claim to test for every feature method:
it is at least as good as the student alone, and with KD at least as good as KD ("no worse":
Δ ≥ −2·se, the papers give no tolerance). Every comparison is paired by seed (same init and
batch order).
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import Claim, Comparison, better, judge, no_worse, per_seed

# the paper's FitNet is two-stage; the one-stage variant (RepDistiller) is judged too when it ran
FITNETS = ("fitnet_2stage", "fitnet")


def _acc(trials: pd.DataFrame, method: str, metric: str = "test_acc") -> pd.Series:
    return per_seed(trials, metric, method=method)


def kd_beats_student(trials: pd.DataFrame):
    return judge([better("kd vs student", _acc(trials, "kd"), _acc(trials, "student"))])


def at_least_student(methods: tuple[str, ...]):
    """Each of `methods` that ran is no worse than the student alone."""
    def check(trials: pd.DataFrame):
        return judge([no_worse(f"{m} vs student", _acc(trials, m), _acc(trials, "student"))
                      for m in methods])
    return check


def at_least_kd(methods: tuple[str, ...]):
    """Each of `methods` (with KD) that ran is no worse than KD alone."""
    def check(trials: pd.DataFrame):
        return judge([no_worse(f"{m}+kd vs kd", _acc(trials, f"{m}+kd"), _acc(trials, "kd"))
                      for m in methods])
    return check


def attention_moves_to_teacher(trials: pd.DataFrame):
    """The attention gap to the teacher (AT loss on test images, ×1000) is smaller with AT."""
    parts: list[Comparison] = [
        better(f"attention gap ×1000, {base} vs {m}", _acc(trials, base, "at_gap"),
               _acc(trials, m, "at_gap"), scale=1000.0)
        for m, base in (("at", "student"), ("at+kd", "kd"))]
    return judge(parts)


REPDISTILLER = "RepDistiller, CIFAR-100 resnet56→resnet20 / wrn_40_2→wrn_16_2 / resnet32x4→resnet8x4"

CLAIMS = [
    Claim("kd_beats_student",
          "KD improves a small student over training it alone: student 69.06 / 73.26 / 72.50, "
          "KD 70.66 / 74.92 / 73.33 (+1.60 / +1.66 / +0.83).", kd_beats_student, REPDISTILLER),
    Claim("fitnet_at_least_student",
          "FitNet is at least as good as the student alone: 69.21 / 73.58 / 73.50 against "
          "69.06 / 73.26 / 72.50 (RepDistiller's one stage). Ours: the paper's two stages "
          "(hint stage with the paper's conv regressor, then the task), and the one stage when "
          "it ran.", at_least_student(FITNETS), REPDISTILLER),
    Claim("fitnet_kd_at_least_kd",
          "FitNet with KD is at least as good as KD alone (the paper's FitNet trains its "
          "second stage with KD).", at_least_kd(FITNETS), "Romero et al. 2015; issue #12"),
    Claim("at_at_least_student",
          "Attention transfer is at least as good as the student alone: 70.55 / 74.08 / 73.44 "
          "against 69.06 / 73.26 / 72.50.", at_least_student(("at",)), REPDISTILLER),
    Claim("at_kd_at_least_kd",
          "AT with KD is at least as good as KD alone (the AT paper also trains AT together "
          "with KD).",
          at_least_kd(("at",)), "Zagoruyko & Komodakis 2017; issue #12"),
    Claim("at_moves_attention",
          "AT makes the student's attention maps like the teacher's (the loss it minimises, "
          "on held-out images).", attention_moves_to_teacher, "Zagoruyko & Komodakis 2017"),
    Claim("fsp_at_least_student",
          "FSP (FSP matrices first, then the task) is at least as good as the student alone: "
          "69.95 / 72.91 / 72.62 against 69.06 / 73.26 / 72.50 (below on wrn_16_2).",
          at_least_student(("fsp",)), REPDISTILLER),
    Claim("fsp_kd_at_least_kd",
          "FSP with KD in its second stage is at least as good as KD alone (issue #12).",
          at_least_kd(("fsp",)), "issue #12"),
]
