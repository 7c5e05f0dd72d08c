"""Iterative magnitude pruning with rewinding, ticket vs random re-initialisation.

    python -m experiments.lottery_ticket --scale smoke|default|paper [--model conv2] ...

For each seed: train the dense net (level 0), then for each level prune the lowest-magnitude
surviving weights of the previous level's *final* weights, rewind survivors to their initial
values (or to iteration k) and retrain: that is the `ticket`. The `reinit` control trains the
same mask from a fresh random init; `random_mask` (opt-in) a random mask with the same per-layer
sparsity from the ticket's init. Trials live in runs/lottery_ticket/<hash>/; finished ones are
reused, killed ones resume. Outputs: results/lottery_ticket/<scale>/.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch

from experiments.common import Context, Experiment, each_seed, parse_list
from experiments.lottery_ticket.config import VARIANTS, LotteryConfig, Trial, for_scale
from experiments.lottery_ticket.report import write_report
from lib.prune.imp import prune
from lib.prune.mask import Mask, prunable_layers
from lib.runs import atomic_torch_save
from lib.train import Hook


class Snapshot(Hook):
    """Saves the weights after `step` optimiser steps (the late-rewinding point)."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def after_step(self, model, step):
        if step == self.step:
            atomic_torch_save(copy.deepcopy(model.state_dict()), self.path)


def flags(p) -> None:
    p.add_argument("--levels", type=int, default=None, help="pruning rounds after the dense run")
    p.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--rewind-step", type=int, default=None, help="late rewinding iteration k")


def configure(cfg: LotteryConfig, a) -> LotteryConfig:
    if a.rewind_step is not None:
        cfg = replace(cfg, setup=replace(cfg.setup, rewind_step=a.rewind_step))
    if a.variants is not None:
        cfg = replace(cfg, variants=parse_list(a.variants, VARIANTS, "variants"))
    return cfg if a.levels is None else replace(cfg, levels=a.levels)


def run_seed(ctx: Context, seed: int) -> list[dict]:
    """All levels and variants of one seed; returns one row per trial."""
    cfg, setup = ctx.cfg, ctx.cfg.setup
    init_state = copy.deepcopy(ctx.build(setup.model, seed).state_dict())
    kinds = prunable_layers(ctx.build(setup.model, seed))
    rewind_path = ctx.run(Trial(setup, seed, 0, "ticket")).path("rewind.pt")
    rows, masks, finals = [], {}, {}
    for level in range(cfg.levels + 1):
        for variant in cfg.variants:
            if level == 0 and variant != "ticket":
                continue  # at level 0 every variant is the same dense net
            run = ctx.run(Trial(setup, seed, level, variant))
            gen = torch.Generator().manual_seed(seed * 1000 + level)
            if variant == "random_mask":
                prev = masks.get(("random_mask", level - 1), masks[("ticket", 0)])
                mask = prune(replace(setup.prune, criterion="random"), prev, kinds, init_state,
                             init_state, gen)
            elif variant == "ticket" and level > 0:
                mask = prune(setup.prune, masks[("ticket", level - 1)], kinds, init_state,
                             finals[level - 1], gen)
            elif variant == "ticket":
                mask = Mask.ones(ctx.build(setup.model, seed))
            else:  # reinit: the ticket's mask
                mask = masks[("ticket", level)]
            masks[(variant, level)] = mask
            start_state = init_state
            if setup.rewind_step and level > 0:
                start_state = torch.load(rewind_path, map_location=ctx.device, weights_only=True)

            def build(variant=variant, start_state=start_state):
                if variant == "reinit":  # a new init, same architecture
                    return ctx.build(setup.model, seed + 100_000 * level)
                model = ctx.build(setup.model, seed)
                model.load_state_dict(start_state)
                return model

            def hooks_for(model, mask=mask, level=level):
                hooks = [mask.hook(model)]
                if level == 0 and setup.rewind_step:
                    hooks.append(Snapshot(setup.rewind_step, rewind_path))
                return hooks

            def after(model, res, run=run, variant=variant, mask=mask):
                if variant == "ticket":
                    atomic_torch_save(model.state_dict(), run.path("final.pt"))
                mask.save(run.path("mask.pt"))
                return {"weights_left": mask.density()}

            name = f"s{seed}-L{level}-{variant}"
            res = ctx.train(run, stage="train" if level == 0 else "prune", name=name, seed=seed,
                            train_cfg=setup.train, build=build, hooks_for=hooks_for, after=after)
            if variant == "ticket":
                finals[level] = torch.load(run.path("final.pt"), map_location=ctx.device,
                                           weights_only=True)
            print(f"{name:>20}: {res['weights_left']:7.2%} left, test acc {res['test_acc']:.4f} at "
                  f"iteration {res['early_stop_iter']} ({res['train_wall_s']:.1f} s)", flush=True)
            rows.append({"seed": seed, "level": level, "variant": variant, **res})
    return rows


EXPERIMENT = Experiment(
    name="lottery_ticket", doc=__doc__, for_scale=for_scale, run=each_seed(run_seed),
    report=write_report, model="lenet_300_100", model_help="lenet_300_100, conv2, conv4, conv6",
    flags=flags, configure=configure, prune_flags=True)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
