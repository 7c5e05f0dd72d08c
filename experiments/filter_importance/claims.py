"""The filter-importance papers' claims, checked on our trials at equal MACs.

Li et al. (ICLR 2017, *Pruning Filters for Efficient ConvNets*), He et al. (CVPR 2019, FPGM), Hu
et al. (2016, APoZ / Network Trimming). At one ratio every criterion gives the same architecture,
so each comparison differs only in which filters go. Comparisons are paired by seed (all
criteria of one seed prune the same baseline). A "similar" claim holds in both directions
(neither is worse than the other by more than the rule's 2·se; the paper states no tolerance).
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import Claim, Comparison, better, judge, no_worse, per_seed, untested

LI_MACS_REMOVED = 0.342  # Li et al.'s VGG-16-pruned-A: 34.2% of the FLOPs removed


def _arm(trials: pd.DataFrame, method: str, stage: str, ratio: float) -> pd.Series:
    return per_seed(trials, method=method, stage=stage, prune_ratio=ratio)


def _ratios(trials: pd.DataFrame) -> list[float]:
    return sorted(r for r in trials.prune_ratio.unique() if r > 0)


def _beats(trials: pd.DataFrame, a: str, b: str, stages=("finetuned",)) -> list[Comparison]:
    return [better(f"{a} vs {b}, ratio {r:g} {stage}", _arm(trials, a, stage, r),
                   _arm(trials, b, stage, r))
            for stage in stages for r in _ratios(trials)]


def _present(trials: pd.DataFrame, *methods: str) -> bool:
    return all((trials.method == m).any() for m in methods)


def l1_no_loss(trials: pd.DataFrame):
    """L1 fine-tuned at the ratio whose MACs reduction is nearest Li et al.'s 34%, vs dense."""
    l1 = trials[(trials.method == "l1") & (trials.stage == "finetuned")]
    if not len(l1):
        return untested("needs l1 fine-tuned trials")
    by_ratio = l1.groupby("prune_ratio").macs_reduction.mean()
    ratio = (by_ratio - LI_MACS_REMOVED).abs().idxmin()
    if abs(by_ratio[ratio] - LI_MACS_REMOVED) > 0.05:
        return untested(f"needs a ratio removing about {LI_MACS_REMOVED:.0%} of the MACs "
                        f"(nearest run: {by_ratio[ratio]:.0%})")
    dense = per_seed(trials, method="dense", stage="baseline")
    return judge([no_worse(f"l1 ratio {ratio:g} ({by_ratio[ratio]:.0%} of MACs removed) fine-tuned "
                           f"vs dense", _arm(trials, "l1", "finetuned", ratio), dense)])


def _pairwise(a: str, b: str, stages=("finetuned",)):
    def check(trials: pd.DataFrame):
        if not _present(trials, a, b):
            return untested(f"needs the {a} and {b} criteria (--criteria {a},{b})")
        return judge(_beats(trials, a, b, stages))
    return check


def l1_l2_similar(trials: pd.DataFrame):
    if not _present(trials, "l1", "l2"):
        return untested("needs the l1 and l2 criteria")
    parts = []
    for r in _ratios(trials):
        l1, l2 = _arm(trials, "l1", "finetuned", r), _arm(trials, "l2", "finetuned", r)
        parts += [no_worse(f"l2 vs l1, ratio {r:g} fine-tuned", l2, l1),
                  no_worse(f"l1 vs l2, ratio {r:g} fine-tuned", l1, l2)]
    return judge(parts)


def fpgm_beats_norms(trials: pd.DataFrame):
    if not _present(trials, "fpgm", "l1", "l2"):
        return untested("needs the fpgm, l1 and l2 criteria")
    return judge(_beats(trials, "fpgm", "l1") + _beats(trials, "fpgm", "l2"))


CLAIMS = [
    Claim("l1_prunes_34pct_without_loss",
          "Pruning the filters with the smallest L1 norm from VGG-16 on CIFAR-10 removes 34% of "
          "the FLOPs with no accuracy loss after retraining (93.25 → 93.40).",
          l1_no_loss, "Li et al. 2017, Table 1"),
    Claim("l1_beats_random",
          "Pruning the filters with the smallest L1 norm outperforms pruning randomly chosen "
          "filters (checked here right after pruning and after retraining).",
          _pairwise("l1", "random", ("pruned", "finetuned")),
          "Li et al. 2017, comparison with random and largest filters"),
    Claim("l2_similar_to_l1",
          "The ℓ2 norm of a filter ranks filters about as well as its ℓ1 norm.",
          l1_l2_similar, "Li et al. 2017, Sec. 3.1"),
    Claim("fpgm_beats_norm",
          "Pruning the filters nearest the layer's geometric median (FPGM) beats pruning by the "
          "smallest norm, at the same pruning rate.", fpgm_beats_norms, "He et al. 2019, Sec. 4"),
    Claim("apoz_beats_random",
          "Trimming the channels with the highest average percentage of zero activations (APoZ) "
          "keeps accuracy better than trimming random ones.",
          _pairwise("apoz", "random"), "Hu et al. 2016, Sec. 4"),
    Claim("bn_gamma_after_sparsity_training",
          "With sparsity training, a channel's BN scale |γ| identifies the channels that can go "
          "(Network Slimming).",
          lambda t: untested("the paper's claim is for BN scales trained with its L1 penalty; "
                             "this experiment trains none (see experiments/network_slimming)"),
          "Liu et al. 2017"),
]
