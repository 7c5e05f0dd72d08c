"""The claims of Liu et al. (ICLR 2019), *Rethinking the Value of Network Pruning*, checked on
our trials.

Every comparison is paired by seed: the arms of one seed prune the same large model. A "matches"
claim is a no-worse comparison (the paper states no tolerance, so the rule's 2·se); "no gain over
random init" is judged as random init no worse than the ticket. Accuracies are the final
weights' (fixed schedules, as the paper).
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import Claim, Comparison, better, judge, no_worse, per_seed, untested

SMALL_LR, LARGE_LR = 0.01, 0.1  # the two learning rates of the paper's Section 6


def _arm(trials: pd.DataFrame, method: str, variant: str, lr: float | None = None) -> pd.Series:
    where = dict(method=method, variant=variant)
    rows = trials if lr is None else trials[(trials.lr - lr).abs() < 1e-12]
    return per_seed(rows, **where)


def _ratios(trials: pd.DataFrame, method: str, variant: str) -> list[float]:
    rows = trials[(trials.method == method) & (trials.variant == variant)]
    return sorted(rows.prune_ratio.unique())


def _large(trials: pd.DataFrame, lr: float) -> pd.Series:
    rows = trials[(trials.variant == "baseline") & (trials.method == "unpruned")
                  & ((trials.lr - lr).abs() < 1e-12)]
    return rows.groupby("seed").test_acc.mean().astype(float)


def scratch_vs_finetune(trials: pd.DataFrame, method: str, variant: str) -> list[Comparison]:
    """`variant` (scratch_e or scratch_b) no worse than fine-tuned, at each ratio of `method`."""
    out = []
    for ratio in _ratios(trials, method, variant):
        at = trials[trials.prune_ratio == ratio]
        out.append(no_worse(f"{method} {ratio:g}: {variant.replace('_', '-')} vs fine-tuned",
                            _arm(at, method, variant), _arm(at, method, "finetune")))
    return out


def _scratch_claim(method: str, variant: str):
    def check(trials: pd.DataFrame):
        parts = scratch_vs_finetune(trials, method, variant)
        return judge(parts) if parts else untested(
            f"needs {method} fine-tuned and {variant.replace('_', '-')} trials (--methods {method})")
    return check


def ticket_vs_random(trials: pd.DataFrame, method: str, lr: float, kind: str) -> list[Comparison]:
    """At `lr`, per ratio: ticket better than random init (`kind` "better") or random init no
    worse than the ticket ("no_gain")."""
    out = []
    for ratio in _ratios(trials, method, "ticket_init"):
        at = trials[trials.prune_ratio == ratio]
        t, r = _arm(at, method, "ticket_init", lr), _arm(at, method, "random_init", lr)
        if kind == "better":
            out.append(better(f"{method} {ratio:g} lr {lr:g}: ticket vs random init", t, r))
        else:
            out.append(no_worse(f"{method} {ratio:g} lr {lr:g}: random init vs ticket", r, t))
    return out


def ticket_no_gain_structured(trials: pd.DataFrame):
    return judge([p for lr in (LARGE_LR, SMALL_LR)
                  for p in ticket_vs_random(trials, "l1", lr, "no_gain")],
                 note="" if len(_arm(trials, "l1", "ticket_init")) else
                 "needs the l1 lottery trials (--lottery-methods l1)")


def ticket_helps_unstructured_small_lr_only(trials: pd.DataFrame):
    return judge(ticket_vs_random(trials, "unstructured", SMALL_LR, "better")
                 + ticket_vs_random(trials, "unstructured", LARGE_LR, "no_gain"),
                 note="" if len(_arm(trials, "unstructured", "ticket_init")) else
                 "needs the unstructured lottery trials (--lottery-methods unstructured)")


def small_lr_is_worse(trials: pd.DataFrame):
    parts = [better(f"large model, lr {LARGE_LR:g} vs lr {SMALL_LR:g}", _large(trials, LARGE_LR),
                    _large(trials, SMALL_LR))]
    for method in ("l1", "unstructured"):
        for ratio in _ratios(trials, method, "ticket_init"):
            at = trials[trials.prune_ratio == ratio]
            parts.append(better(f"{method} {ratio:g}: random init at lr {LARGE_LR:g} vs ticket at "
                                f"lr {SMALL_LR:g}", _arm(at, method, "random_init", LARGE_LR),
                                _arm(at, method, "ticket_init", SMALL_LR)))
    return judge(parts)


CLAIMS = [
    Claim("l1_scratch_e_matches_finetune",
          "For L1-norm filter pruning (a predefined target architecture), training the pruned "
          "model from scratch for the large model's epochs (Scratch-E) reaches accuracy "
          "comparable to fine-tuning the pruned weights.",
          _scratch_claim("l1", "scratch_e"), "Sec. 4.1, Table 1"),
    Claim("l1_scratch_b_matches_finetune",
          "With the same computation budget as the large model (Scratch-B), the L1-pruned model "
          "trained from scratch matches or beats the fine-tuned one.",
          _scratch_claim("l1", "scratch_b"), "Sec. 4.1, Table 1"),
    Claim("slimming_scratch_b_matches_finetune",
          "The same holds for automatically found architectures (Network Slimming): Scratch-B "
          "matches or beats fine-tuning.",
          _scratch_claim("slimming", "scratch_b"), "Sec. 4.2, Table 4"),
    Claim("unstructured_scratch_b_matches_finetune",
          "For unstructured magnitude pruning on CIFAR, Scratch-B matches fine-tuning except at "
          "very high sparsity (and falls behind on ImageNet).",
          _scratch_claim("unstructured", "scratch_b"), "Sec. 4.3"),
    Claim("ticket_no_gain_structured",
          "For structured pruning (L1-norm filters) the winning-ticket initialization brings no "
          "improvement over random initialization, at lr 0.1 and at lr 0.01.",
          ticket_no_gain_structured, "Sec. 6"),
    Claim("ticket_helps_unstructured_small_lr_only",
          "For unstructured pruning the winning ticket helps only at the small learning rate "
          "(0.01); at the standard lr 0.1 it is no better than random initialization.",
          ticket_helps_unstructured_small_lr_only, "Sec. 6"),
    Claim("small_lr_is_worse",
          "The small learning rate (0.01) yields lower accuracy than the standard 0.1: with the "
          "optimal learning rate the winning ticket brings no improvement.",
          small_lr_is_worse, "Sec. 6"),
]
