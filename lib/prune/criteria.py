"""Unstructured mask criteria: a score per weight from its initial and final values.

Higher scores are kept. The names and formulas follow Zhou et al. 2019, "Deconstructing Lottery
Tickets" (Figure 1) and the authors' code; `large_final` is the lottery-ticket paper's magnitude
pruning. The two "init and final" criteria keep a weight when both |w_i| and |w_f| pass the same
within-layer percentile (the authors search that percentile so the layer keeps its quota): that
is ranking by min(percentile rank of |w_i|, percentile rank of |w_f|) among the layer's live
weights. `random` ignores the weights: keeping the top-k of its scores is a uniformly random mask.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Criterion = Callable[[Tensor, Tensor, torch.Generator], Tensor]


def _rank(x: Tensor, alive: Tensor | None) -> Tensor:
    """Rank of every entry of `x` in its layer (0 = smallest); dead entries rank below all."""
    flat = x.flatten().double()
    if alive is not None:
        flat = torch.where(alive.flatten().to(flat.device), flat, torch.tensor(-float("inf")))
    ranks = torch.empty_like(flat)
    ranks[torch.argsort(flat, stable=True)] = torch.arange(len(flat), dtype=flat.dtype)
    return ranks.view_as(x)


def both_large(a: Tensor, b: Tensor, alive: Tensor | None = None) -> Tensor:
    """min(rank a, rank b): the top-k of it are the weights large in both at one percentile."""
    return torch.minimum(_rank(a, alive), _rank(b, alive)).float()


def _random(wi: Tensor, wf: Tensor, g: torch.Generator) -> Tensor:
    return torch.rand(wi.shape, generator=g).to(wi.device)


CRITERIA: dict[str, Criterion] = {
    "large_final": lambda wi, wf, g: wf.abs(),
    "small_final": lambda wi, wf, g: -wf.abs(),
    "large_init": lambda wi, wf, g: wi.abs(),
    "small_init": lambda wi, wf, g: -wi.abs(),
    # with no mask, ranks among all weights; `scores` ranks among the live ones (`alive`)
    "large_init_large_final": lambda wi, wf, g: both_large(wi.abs(), wf.abs()),
    "small_init_small_final": lambda wi, wf, g: both_large(-wi.abs(), -wf.abs()),
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


RANKED = {"large_init_large_final": 1.0, "small_init_small_final": -1.0}  # sign of |w| ranked


def scores(name: str, w_init: dict[str, Tensor], w_final: dict[str, Tensor],
           generator: torch.Generator, alive: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Score every weight of every layer in `w_init` with criterion `name`; `alive` (the current
    mask) matters only to the rank-based criteria, whose ranks are among live weights."""
    check_criterion(name)
    if name in RANKED:
        sign = RANKED[name]
        return {n: both_large(sign * w_init[n].float().abs(), sign * w_final[n].float().abs(),
                              alive[n] if alive else None) for n in w_init}
    return {n: CRITERIA[name](w_init[n].float(), w_final[n].float(), generator) for n in w_init}
