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

from experiments.common import (Stopwatch, add_model_args, add_prune_args, add_train_args,
                                base_parser, fail, load_data, machine, parse_list, pick_device,
                                preset, run_trial)
from experiments.lottery_ticket.config import VARIANTS, LotteryConfig, Trial, for_scale
from experiments.lottery_ticket.report import write_report
from lib import models
from lib.prune.imp import prune
from lib.prune.mask import Mask, prunable_layers
from lib.runs import Run, atomic_torch_save
from lib.train import Hook

EXPERIMENT = "lottery_ticket"


class Snapshot(Hook):
    """Saves the weights after `step` optimiser steps (the late-rewinding point)."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def after_step(self, model, step):
        if step == self.step:
            atomic_torch_save(copy.deepcopy(model.state_dict()), self.path)


def parse_args(argv=None) -> tuple[LotteryConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    add_model_args(p)
    p.add_argument("--levels", type=int, default=None, help="pruning rounds after the dense run")
    p.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--rewind-step", type=int, default=None, help="late rewinding iteration k")
    add_train_args(p)
    add_prune_args(p)
    a = p.parse_args(argv)
    try:
        scale, cfg = preset(a, for_scale)
        setup = cfg.setup
        if a.rewind_step is not None:
            setup = replace(setup, rewind_step=a.rewind_step)
        variants = cfg.variants if a.variants is None else parse_list(a.variants, VARIANTS, "variants")
        cfg = replace(cfg, setup=setup, variants=variants,
                      levels=cfg.levels if a.levels is None else a.levels,
                      seeds=cfg.seeds if a.seeds is None else a.seeds)
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


def run_seed(cfg: LotteryConfig, seed: int, data, scale: str, device) -> list[dict]:
    """All levels and variants of one seed; returns one row per trial."""
    setup = cfg.setup

    def fresh(init_seed: int):
        torch.manual_seed(init_seed)
        return models.build(setup.model, data.input_shape, data.num_classes).to(device)

    init_state = copy.deepcopy(fresh(seed).state_dict())
    kinds = prunable_layers(fresh(seed))
    rows, masks, finals = [], {}, {}
    for level in range(cfg.levels + 1):
        for variant in cfg.variants:
            if level == 0 and variant != "ticket":
                continue  # at level 0 every variant is the same dense net
            run = Run(EXPERIMENT, Trial(setup, seed, level, variant), scale=scale)
            gen = torch.Generator().manual_seed(seed * 1000 + level)
            if variant == "random_mask":
                prev = masks.get(("random_mask", level - 1), masks[("ticket", 0)])
                mask = prune(replace(setup.prune, criterion="random"), prev, kinds, init_state,
                             init_state, gen)
            elif variant == "ticket" and level > 0:
                mask = prune(setup.prune, masks[("ticket", level - 1)], kinds, init_state,
                             finals[level - 1], gen)
            elif variant == "ticket":
                mask = Mask.ones(fresh(seed))
            else:  # reinit: the ticket's mask
                mask = masks[("ticket", level)]
            masks[(variant, level)] = mask
            rewind_path = Run(EXPERIMENT, Trial(setup, seed, 0, "ticket"), scale=scale).path("rewind.pt")
            start_state = init_state
            if setup.rewind_step and level > 0:
                start_state = torch.load(rewind_path, map_location=device, weights_only=True)

            def build(variant=variant, start_state=start_state):
                if variant == "reinit":
                    return fresh(seed + 100_000 * level)  # a new init, same architecture
                model = fresh(seed)
                model.load_state_dict(start_state)
                return model

            def hooks_for(model, mask=mask, level=level):
                hooks = [mask.hook(model)]
                if level == 0 and setup.rewind_step:
                    hooks.append(Snapshot(setup.rewind_step, rewind_path))
                return hooks

            def after(model, res, run=run, variant=variant):
                if variant == "ticket":
                    atomic_torch_save(model.state_dict(), run.path("final.pt"))
                mask.save(run.path("mask.pt"))
                return {"weights_left": mask.density()}

            name = f"s{seed}-L{level}-{variant}"
            res = run_trial(run, experiment=EXPERIMENT, stage="train" if level == 0 else "prune",
                            scale=scale, name=name, seed=seed, data=data, train_cfg=setup.train,
                            build=build, hooks_for=hooks_for, after=after)
            if variant == "ticket":
                finals[level] = torch.load(run.path("final.pt"), map_location=device, weights_only=True)
            print(f"{name:>20}: {res['weights_left']:7.2%} left, test acc {res['test_acc']:.4f} at "
                  f"iteration {res['early_stop_iter']} ({res['train_wall_s']:.1f} s)", flush=True)
            rows.append({"seed": seed, "level": level, "variant": variant, **res})
    return rows


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    data = load_data(cfg.setup, device)
    rows = [row for seed in range(cfg.seeds) for row in run_seed(cfg, seed, data, scale, device)]
    out = write_report(cfg, rows, scale, wall_s=clock.seconds, machine=machine())
    print(f"wrote {out}/trials.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
