"""What kept and pruned weights become before retraining (Zhou et al. 2019, Sections 3-4).

Mask-1 actions set the starting value of the *kept* weights of one layer; mask-0 actions say
what the *pruned* weights are while the kept ones train (zero, or frozen at a value). All work
on one layer's tensors: `w_init` and `w_final` (its initial and trained weights), `keep` (bool
mask), `fresh` (a new random initialisation of the same layer) and a seeded generator.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Mask1 = Callable[[Tensor, Tensor, Tensor, torch.Generator], Tensor]


def _reshuffle(values: Tensor, keep: Tensor, g: torch.Generator) -> Tensor:
    """Permute `values` among the kept positions of the layer; pruned positions unchanged."""
    out = values.clone()
    idx = keep.flatten().nonzero().squeeze(1)
    perm = idx[torch.randperm(len(idx), generator=g).to(idx.device)]
    out.view(-1)[idx] = values.reshape(-1)[perm]
    return out


def _shuffled_signs(w: Tensor, g: torch.Generator) -> Tensor:
    """The layer's init signs in a random order: as many positive weights as at init (the
    authors' random_signed_constant), at random places."""
    signs = w.sign().flatten()
    return signs[torch.randperm(len(signs), generator=g).to(signs.device)].view_as(w)


def signed_constant(w_init: Tensor) -> Tensor:
    """alpha * sign(w_init), alpha = std of the layer's initial weights."""
    return w_init.std() * w_init.sign()


MASK1: dict[str, Mask1] = {
    "rewind": lambda wi, fresh, keep, g: wi.clone(),
    "random_reinit": lambda wi, fresh, keep, g: fresh.clone(),
    "random_reshuffle": lambda wi, fresh, keep, g: _reshuffle(wi, keep, g),
    "signed_reinit": lambda wi, fresh, keep, g: fresh.abs() * wi.sign(),
    "signed_reshuffle": lambda wi, fresh, keep, g: _reshuffle(wi, keep, g).abs() * wi.sign(),
    "signed_constant": lambda wi, fresh, keep, g: signed_constant(wi),
    "random_signed_constant": lambda wi, fresh, keep, g: wi.std() * _shuffled_signs(wi, g),
}

# the value pruned weights are held at while the kept ones train; None = zero
MASK0: dict[str, Callable[[Tensor, Tensor], Tensor | None]] = {
    "zero": lambda wi, wf: None,
    "freeze_init": lambda wi, wf: wi.clone(),
    # zero only the pruned weights that shrank during training, freeze the others at init
    "freeze_init_zero_mask": lambda wi, wf: torch.where(wf.abs() < wi.abs(), torch.zeros_like(wi), wi),
}


def check_name(name: str, registry: dict, field: str) -> None:
    """One-line error for a name missing from `registry`."""
    if name not in registry:
        raise ValueError(f"{field}: unknown '{name}', choose from {', '.join(registry)}")


def mask1_values(name: str, w_init: dict[str, Tensor], fresh: dict[str, Tensor],
                 mask: dict[str, Tensor], g: torch.Generator) -> dict[str, Tensor]:
    """Starting weights of every masked layer under mask-1 action `name` (pruned entries are
    left as the action computed them; the mask hook then sets them)."""
    check_name(name, MASK1, "ablation")
    return {n: MASK1[name](w_init[n], fresh[n], mask[n], g) for n in mask}


def mask0_fill(name: str, w_init: dict[str, Tensor], w_final: dict[str, Tensor],
               mask: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """Fixed values of pruned weights under mask-0 action `name`; None means zero."""
    check_name(name, MASK0, "mask0")
    fills = {n: MASK0[name](w_init[n], w_final[n]) for n in mask}
    return None if all(v is None for v in fills.values()) else fills
