"""The claims of Liu et al. (ICCV 2017), *Network Slimming*, checked on our trials.

The paper's numbers are those of its official PyTorch code (VGG-19 on CIFAR-10, λ = 1e-4):
baseline 93.77, after sparsity training 93.30, 70% of the channels pruned and fine-tuned for 160
epochs 93.78, parameters 20.04M → 2.25M. Every comparison is paired by seed (the baseline and
the sparsity-trained model of one seed share their init and data order). A "matches" claim is a
no-worse comparison (the paper states no tolerance, so the rule's 2·se).
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import Claim, better, judge, no_worse, per_seed, untested
from experiments.network_slimming.config import SMALL_GAMMA

HEADLINE_RATIO = 0.7


def _lams(trials: pd.DataFrame) -> list[float]:
    return sorted(lam for lam in trials.lam.unique() if lam > 0)


def _trained(trials: pd.DataFrame, lam: float, metric: str = "test_acc") -> pd.Series:
    stage = "sparse" if lam > 0 else "baseline"
    return per_seed(trials, metric, stage=stage, lam=lam)


def sparsity_costs_little(trials: pd.DataFrame):
    return judge([no_worse(f"λ = {lam:g} trained vs baseline", _trained(trials, lam),
                           _trained(trials, 0.0)) for lam in _lams(trials)])


def penalty_polarises(trials: pd.DataFrame):
    if "gamma_small_share" not in trials:
        return untested("needs the share of small |γ| per trained model (gamma_small_share)")
    return judge([better(f"share of |γ| < {SMALL_GAMMA:g}, λ = {lam:g} vs baseline (%)",
                         _trained(trials, lam, "gamma_small_share"),
                         _trained(trials, 0.0, "gamma_small_share"))
                  for lam in _lams(trials)])


def pruned_matches_baseline(trials: pd.DataFrame):
    if not (trials.prune_ratio == HEADLINE_RATIO).any():
        return untested(f"needs the {HEADLINE_RATIO:.0%} pruning ratio (--ratios {HEADLINE_RATIO})")
    base = _trained(trials, 0.0)
    return judge([no_worse(f"λ = {lam:g}, {HEADLINE_RATIO:.0%} pruned + fine-tuned vs baseline",
                           per_seed(trials, stage="finetuned", lam=lam,
                                    prune_ratio=HEADLINE_RATIO), base)
                  for lam in _lams(trials)])


CLAIMS = [
    Claim("sparsity_costs_little",
          "Training with the L1 penalty on the BN scaling factors costs little accuracy "
          "(VGG on CIFAR-10: 93.77 baseline, 93.30 with λ = 1e-4).",
          sparsity_costs_little, "Sec. 4, official code's results"),
    Claim("penalty_polarises_gamma",
          "The penalty pushes many scaling factors to near zero, so that unimportant channels "
          "can be identified by |γ|.", penalty_polarises, "Sec. 3, Fig. 4"),
    Claim("pruned_70_matches_baseline",
          "Pruning 70% of the channels under one global |γ| threshold and fine-tuning gives the "
          "baseline's accuracy (93.77 → 93.78) with 20.04M → 2.25M parameters.",
          pruned_matches_baseline, "Table 1, official code's results"),
]
