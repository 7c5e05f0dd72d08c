"""Unstructured mask criteria: a score per weight from its initial and final values.

Higher scores are kept. The names and formulas follow Zhou et al. 2019, "Deconstructing Lottery
Tickets" (Figure 1); `large_final` is the lottery-ticket paper's magnitude pruning. In the two
"init and final" criteria, alpha = std(w_f) / std(w_i) of the layer brings both magnitudes to
one scale before comparing them (the paper scales w_i by a constant; this is our choice of it).
`random` ignores the weights: keeping the top-k of its scores is a uniformly random mask.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Criterion = Callable[[Tensor, Tensor, torch.Generator], Tensor]


def _alpha(wi: Tensor, wf: Tensor) -> Tensor:
    return wf.std() / wi.std().clamp_min(1e-12)


def _random(wi: Tensor, wf: Tensor, g: torch.Generator) -> Tensor:
    return torch.rand(wi.shape, generator=g).to(wi.device)


CRITERIA: dict[str, Criterion] = {
    "large_final": lambda wi, wf, g: wf.abs(),
    "small_final": lambda wi, wf, g: -wf.abs(),
    "large_init": lambda wi, wf, g: wi.abs(),
    "small_init": lambda wi, wf, g: -wi.abs(),
    "large_init_large_final": lambda wi, wf, g: torch.minimum(_alpha(wi, wf) * wi.abs(), wf.abs()),
    "small_init_small_final": lambda wi, wf, g: -torch.maximum(_alpha(wi, wf) * wi.abs(), wf.abs()),
    "magnitude_increase": lambda wi, wf, g: wf.abs() - wi.abs(),
    "movement": lambda wi, wf, g: (wf - wi).abs(),
    "random": _random,
    # keep large final weights, but only those whose sign did (not) change during training
    "large_final_same_sign": lambda wi, wf, g: (wi.sign() * wf).clamp_min(0),
    "large_final_diff_sign": lambda wi, wf, g: (-wi.sign() * wf).clamp_min(0),
}


def check_criterion(name: str, field: str = "criterion") -> None:
    """One-line error for a criterion the registry does not know."""
    if name not in CRITERIA:
        raise ValueError(f"{field}: unknown '{name}', choose from {', '.join(CRITERIA)}")


def scores(name: str, w_init: dict[str, Tensor], w_final: dict[str, Tensor],
           generator: torch.Generator) -> dict[str, Tensor]:
    """Score every weight of every layer in `w_init` with criterion `name`."""
    check_criterion(name)
    return {n: CRITERIA[name](w_init[n].float(), w_final[n].float(), generator) for n in w_init}
