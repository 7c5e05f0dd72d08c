"""The claims of Zhou, Lan, Liu & Yosinski (NeurIPS 2019) checked on our trials.

Comparisons are at each pruning level the run has, paired by seed (every arm of a seed starts
from the same dense run and sees the same data order). The paper's statements are about MNIST FC
and CIFAR-10 conv nets under iterative pruning; ours are LeNet-300-100 on Fashion-MNIST.
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import (Claim, Comparison, better, judge, left, levels, no_worse,
                               per_seed, untested)

SMALL = ("small_final", "small_init", "small_init_small_final")


def _arm(t: pd.DataFrame, study: str, level: int, **key) -> pd.Series:
    return per_seed(t, study=study, level=level, **key)


def _criterion(t, level, c):
    return _arm(t, "criteria", level, criterion=c)


def _mask1(t, level, a):
    return _arm(t, "mask1", level, ablation=a)


def _mask0(t, level, m0):
    return _arm(t, "mask0", level, mask0=m0)


def best_criteria(t: pd.DataFrame) -> list[Comparison]:
    parts = []
    for lv in levels(t):
        lf = _criterion(t, lv, "large_final")
        for c in ("random", *SMALL):
            parts.append(better(f"{left(t, lv)}: large_final vs {c}", lf, _criterion(t, lv, c)))
        parts.append(better(f"{left(t, lv)}: magnitude_increase vs random",
                            _criterion(t, lv, "magnitude_increase"), _criterion(t, lv, "random")))
        for c in sorted(set(t[t.study == "criteria"].criterion) - {"large_final", "magnitude_increase"}):
            parts.append(no_worse(f"{left(t, lv)}: large_final not below {c}", lf,
                                  _criterion(t, lv, c)))
    return parts


def signs_suffice(t: pd.DataFrame) -> list[Comparison]:
    return [no_worse(f"{left(t, lv)}: {a} vs rewind", _mask1(t, lv, a), _mask1(t, lv, "rewind"))
            for lv in levels(t) for a in ("signed_constant", "signed_reinit", "signed_reshuffle")]


def random_signs_fail(t: pd.DataFrame) -> list[Comparison]:
    parts = []
    for lv in levels(t):
        rewind = _mask1(t, lv, "rewind")
        for a in ("random_reinit", "random_reshuffle", "random_signed_constant"):
            parts.append(better(f"{left(t, lv)}: rewind vs {a}", rewind, _mask1(t, lv, a)))
    return parts


def zeros_matter(t: pd.DataFrame) -> list[Comparison]:
    return [better(f"{left(t, lv)}: zero vs freeze_init", _mask0(t, lv, "zero"),
                   _mask0(t, lv, "freeze_init")) for lv in levels(t)]


def zero_mask_recovers(t: pd.DataFrame) -> list[Comparison]:
    return [no_worse(f"{left(t, lv)}: freeze_init_zero_mask vs zero",
                     _mask0(t, lv, "freeze_init_zero_mask"), _mask0(t, lv, "zero"))
            for lv in levels(t)]


def _untrained(t, level, criterion, values="init"):
    return per_seed(t, study="supermask", trained=False, level=level, criterion=criterion,
                    ablation=values)


def supermasks_above_chance(t: pd.DataFrame):
    sup = t[(t.study == "supermask") & (t.trained == False)]  # noqa: E712 (a column of bools)
    if sup.empty:
        return untested("needs the supermask study")
    parts = []
    for lv in levels(sup):
        for values in ("init", "signed_constant"):
            arm = _untrained(t, lv, "large_final_same_sign", values)
            parts.append(better(f"{left(t, lv)}: large_final_same_sign ({values}) vs chance 10%",
                                arm, [0.10]))
    return judge(parts)


def same_sign_helps(t: pd.DataFrame):
    return judge([better(f"{left(t, lv)}: untrained large_final_same_sign vs large_final",
                         _untrained(t, lv, "large_final_same_sign"),
                         _untrained(t, lv, "large_final")) for lv in levels(t)])


def learned_beats_pruned(t: pd.DataFrame):
    learned = t[(t.criterion == "learned") & (t.mask_eval == "sampled")]
    sup = t[(t.study == "supermask") & (t.trained == False)]  # noqa: E712
    if learned.empty or sup.empty:
        return untested("needs the supermask study with learned masks")
    # the best pruning-found supermask of the run (highest mean over seeds) is the bar
    means = sup.groupby(["level", "criterion", "ablation"]).test_acc.mean()
    lv, c, values = means.idxmax()
    parts = [better(f"learned ({w}, sampled masks) vs the best pruned supermask ({c}, {values}, "
                    f"{left(t, lv)})", per_seed(learned, ablation=w), _untrained(t, lv, c, values))
             for w in sorted(learned.ablation.unique())]
    return judge(parts)


CLAIMS = [
    Claim("best_criteria",
          "large_final and magnitude_increase are the best mask criteria, clearly above random "
          "and the small-magnitude criteria.", lambda t: judge(best_criteria(t)), "Sec. 3, Fig. 2"),
    Claim("signs_suffice",
          "Signs are all you need: reinitialising the kept weights with their original signs "
          "(a signed constant, signed reinit or signed reshuffle) trains about as well as "
          "rewinding them.", lambda t: judge(signs_suffice(t)), "Sec. 4, Fig. 3"),
    Claim("random_signs_fail",
          "With random signs (random reinit, reshuffle, random signed constant) the kept weights "
          "train worse than rewound ones.", lambda t: judge(random_signs_fail(t)), "Sec. 4, Fig. 3"),
    Claim("zeros_matter",
          "Setting pruned weights to zero matters: freezing them at their initial values instead "
          "is worse.", lambda t: judge(zeros_matter(t)), "Sec. 3, Fig. 4"),
    Claim("zero_mask_recovers",
          "Zeroing only the pruned weights that moved toward zero (the rest frozen at init) "
          "recovers the accuracy of zeroing them all: masking acts like training.",
          lambda t: judge(zero_mask_recovers(t)), "Sec. 3, Fig. 4"),
    Claim("supermasks_above_chance",
          "Supermasks: a mask applied to an untrained, randomly initialised network performs far "
          "better than chance (86% on MNIST, 41% on CIFAR-10).", supermasks_above_chance,
          "Sec. 5, Table 1"),
    Claim("same_sign_helps",
          "Keeping only weights whose sign did not change (large_final_same_sign) gives better "
          "supermasks than large_final.", same_sign_helps, "Sec. 5, Fig. 5"),
    Claim("learned_beats_pruned",
          "A learned supermask (trained mask, frozen weights) does better than masks found by "
          "pruning (MNIST FC: 95.3%).", learned_beats_pruned, "Sec. 5.1, Table 2"),
]
