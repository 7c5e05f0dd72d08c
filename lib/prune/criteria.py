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

Criterion = Callable[[Tensor, Tensor, torch.Generator, Tensor | None], Tensor]  # (w_i, w_f, g, alive)


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


def _random(wi: Tensor, wf: Tensor, g: torch.Generator, alive: Tensor | None = None) -> Tensor:
    return torch.rand(wi.shape, generator=g).to(wi.device)


CRITERIA: dict[str, Criterion] = {
    "large_final": lambda wi, wf, g, alive=None: wf.abs(),
    "small_final": lambda wi, wf, g, alive=None: -wf.abs(),
    "large_init": lambda wi, wf, g, alive=None: wi.abs(),
    "small_init": lambda wi, wf, g, alive=None: -wi.abs(),
    # ranks among the live weights (`alive`, the current mask; all of them when None)
    "large_init_large_final": lambda wi, wf, g, alive=None: both_large(wi.abs(), wf.abs(), alive),
    "small_init_small_final": lambda wi, wf, g, alive=None: both_large(-wi.abs(), -wf.abs(), alive),
    "magnitude_increase": lambda wi, wf, g, alive=None: wf.abs() - wi.abs(),
    "movement": lambda wi, wf, g, alive=None: (wf - wi).abs(),
    "random": _random,
    # keep large final weights, but only those whose sign did (not) change during training
    "large_final_same_sign": lambda wi, wf, g, alive=None: (wi.sign() * wf).clamp_min(0),
    "large_final_diff_sign": lambda wi, wf, g, alive=None: (-wi.sign() * wf).clamp_min(0),
}


def check_criterion(name: str, field: str = "criterion") -> None:
    """One-line error for a criterion the registry does not know."""
    if name not in CRITERIA:
        raise ValueError(f"{field}: unknown '{name}', choose from {', '.join(CRITERIA)}")


def scores(name: str, w_init: dict[str, Tensor], w_final: dict[str, Tensor],
           generator: torch.Generator, alive: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Score every weight of every layer in `w_init` with criterion `name`; `alive` (the current
    mask) matters only to the rank-based criteria, whose ranks are among live weights."""
    check_criterion(name)
    return {n: CRITERIA[name](w_init[n].float(), w_final[n].float(), generator,
                              alive[n] if alive else None) for n in w_init}
