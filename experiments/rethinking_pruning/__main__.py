"""Rethinking the value of network pruning: fine-tuned vs trained from scratch, ticket vs random.

    python -m experiments.rethinking_pruning --scale smoke|default|paper [--seeds N] [--model vgg16]
        [--methods l1,slimming,unstructured] [--lottery-methods l1,unstructured]

For each seed, the large model is trained once per (learning rate, BN-γ penalty) it is needed
at, and reused by every method (stage "train"). Then, per method of `methods` (l1 filters,
Network Slimming, unstructured magnitude) and prune ratio:
- pruned: its accuracy right after pruning, no training (stage "prune");
- finetune: the pruned weights trained on with the fine-tuning recipe;
- scratch_e: the pruned architecture (or mask) from a fresh init, the large model's epochs;
- scratch_b: the same for epochs × min(cost ratio, cap), the same computation budget.
And the lottery comparison (`lottery_methods`: l1 and unstructured), at each learning rate of
`lottery_lrs`: the large model trained at that rate, pruned, then retrained at it for its
epochs from the winning ticket (its original init, restricted to what was kept) or from a
random init of the large model restricted the same way (the same per-layer init scale as the
ticket). Scratch-E of a filter-pruned net starts from a fresh init of the smaller architecture
instead, as in the paper, whose filters start √2 larger at half width: at the large model's lr,
Scratch-E vs random init measures what that init scale alone does. For unstructured pruning
the two are one start, so random init at the large model's lr is the Scratch-E run itself.
Trials live in runs/rethinking_pruning/<hash>/; finished ones are reused, killed ones resume.
Outputs: results/rethinking_pruning/<scale>/.
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from torch import nn

from experiments.common import Context, Experiment, each_seed, lazy, parse_floats, parse_list
from experiments.rethinking_pruning.config import (LOTTERY_METHODS, METHODS, MODELS, RethinkConfig,
                                                   Trial, for_scale, scaled)
from experiments.rethinking_pruning.pruning import Pruned, init_std, prune_model
from lib.metrics import count_macs, count_params
from lib.prune.slimming import SlimmingHook
from lib.runs import atomic_torch_save
from lib.train import TrainConfig


def flags(p: argparse.ArgumentParser) -> None:
    for m in METHODS:
        p.add_argument(f"--{m}-ratios", default=None, help=f"comma list of {m} prune ratios in (0, 1)")
    p.add_argument("--lam", type=float, default=None, help="BN-γ L1 penalty of the slimming baseline")
    p.add_argument("--lottery-lrs", default=None, help="comma list of learning rates (ticket vs random)")
    p.add_argument("--methods", default=None,
                   help=f"comma list: fine-tuned vs scratch for these, from {', '.join(METHODS)}")
    p.add_argument("--lottery-methods", default=None,
                   help=f"comma list: ticket vs random init for these, from {', '.join(LOTTERY_METHODS)}")


def configure(cfg: RethinkConfig, a: argparse.Namespace) -> RethinkConfig:
    """`cfg` with the per-method ratios, --lam and --lottery-lrs applied."""
    changes = {f"{m}_ratios": parse_floats(getattr(a, f"{m}_ratios"), f"{m}_ratios")
               for m in METHODS if getattr(a, f"{m}_ratios") is not None}
    if a.lottery_lrs is not None:
        changes["lottery_lrs"] = parse_floats(a.lottery_lrs, "lottery_lrs")
    if a.lam is not None:
        changes["lam"] = a.lam
    if a.methods is not None:
        changes["methods"] = parse_list(a.methods, METHODS, "methods")
    if a.lottery_methods is not None:
        changes["lottery_methods"] = parse_list(a.lottery_methods, LOTTERY_METHODS, "lottery_methods")
    return replace(cfg, **changes)


def run_seed(ctx: Context, seed: int) -> list[dict]:
    """Every trial of one seed: the large models, each method's pruned nets and their
    retraining variants, and the lottery comparison; one row per trial."""
    cfg, setup, rows = ctx.cfg, ctx.cfg.setup, []
    shape = ctx.data.input_shape

    def fresh(torch_seed: int = seed) -> nn.Module:
        return ctx.build(setup.model, torch_seed)

    def base_lr(lr: float) -> float:
        return 0.0 if lr == setup.train.lr else lr

    def epochs(train_cfg: TrainConfig) -> float:
        """Epochs of a recipe (smoke counts iterations: converted at its batch size)."""
        n = len(ctx.data.train_x)
        return train_cfg.epochs or round(train_cfg.iterations * train_cfg.batch_size / n, 3)

    large, nets = {}, {}  # (lr, lam) -> trained large model; (method, ratio, lr) -> Pruned

    def large_model(lr: float, lam: float) -> nn.Module:
        """Train (or reuse) the large model at `lr` with BN-γ penalty `lam`; add its row."""
        if (lr, lam) in large:
            return large[(lr, lam)]
        run = ctx.run(Trial(setup, seed, base_lr=base_lr(lr), base_lam=lam))
        name = f"s{seed}-large-lr{lr:g}" + (f"-lam{lam:g}" if lam else "")

        def after(m: nn.Module, _) -> dict:
            atomic_torch_save(m.state_dict(), run.path("final.pt"))
            return {"params": count_params(m), "macs": count_macs(m, shape)}

        res = ctx.train(run, stage="train", name=name, seed=seed,
                        train_cfg=replace(setup.train, lr=lr), build=fresh,
                        hooks_for=lambda m: [SlimmingHook(lam)] if lam else [], after=after)
        model = fresh()
        model.load_state_dict(run.load("final.pt", ctx.device))
        large[(lr, lam)] = model.eval()
        rows.append(row(res, method="slimming" if lam else "unpruned", prune_ratio=0.0,
                        variant="baseline", lr=lr, epochs=epochs(setup.train), budget=1.0,
                        start="init", init_std=init_std(fresh())))
        print(f"{name:>40}: test acc {rows[-1]['test_acc']:.4f}", flush=True)
        return model

    def pruned_net(method: str, ratio: float, lr: float) -> tuple[Pruned, float]:
        lam = cfg.lam if method == "slimming" else 0.0
        if (method, ratio, lr) not in nets:
            final = large_model(lr, lam)
            nets[(method, ratio, lr)] = prune_model(method, ratio, final, fresh(), fresh, seed,
                                                    shape, cfg.min_keep)
        return nets[(method, ratio, lr)], lam

    def retrain(method: str, ratio: float, lr: float, start: str, variant: str,
                train_cfg: TrainConfig | None = None) -> Pruned:
        """One pruned-net trial: trained with `train_cfg`, or (None) evaluated as pruned."""
        pr, lam = pruned_net(method, ratio, lr)
        trial = Trial(setup, seed, base_lr=base_lr(lr), base_lam=lam, method=method,
                      prune_ratio=ratio, min_keep=cfg.min_keep if method == "slimming" else 1,
                      start=start, retrain=train_cfg)
        run = ctx.run(trial)
        name = f"s{seed}-{method}{ratio:g}-{variant}-lr{lr:g}"
        if train_cfg is None:
            measured: dict = {}  # filled by build(), read by run_eval after it

            def build() -> nn.Module:
                m = pr.start(start)
                measured.update(pr.measure(m))
                return m

            res = ctx.evaluate(run, name=name, build=build, extra=measured, stage="prune")
        else:
            stage = "finetune" if start == "trained" else "train"
            res = ctx.train(run, stage=stage, name=name, seed=seed, train_cfg=train_cfg,
                            build=lambda: pr.start(start), hooks_for=pr.hooks_for,
                            after=lambda m, r: pr.measure(m))
        rows.append(row(res, method=method, prune_ratio=ratio, variant=variant,
                        lr=train_cfg.lr if train_cfg else lr,
                        epochs=epochs(train_cfg) if train_cfg else 0.0, budget=pr.budget,
                        start=start, init_std=init_std(pr.start(start)) if start != "trained"
                        else float("nan")))
        print(f"{name:>40}: test acc {rows[-1]['test_acc']:.4f}", flush=True)
        return pr

    lr0 = setup.train.lr
    if cfg.long_baseline:  # the convergence control: the large model for Scratch-B's budget
        long_cfg = scaled(setup.train, cfg.scratch_b_cap)
        run = ctx.run(Trial(setup, seed, retrain=long_cfg))
        res = ctx.train(run, stage="train", name=f"s{seed}-large-lr{lr0:g}-long", seed=seed,
                        train_cfg=long_cfg, build=fresh,
                        after=lambda m, _: {"params": count_params(m), "macs": count_macs(m, shape)})
        rows.append(row(res, method="unpruned", prune_ratio=0.0, variant="baseline_long", lr=lr0,
                        epochs=epochs(long_cfg), budget=cfg.scratch_b_cap, start="init",
                        init_std=init_std(fresh())))
    for method in cfg.methods:
        # the paper's Scratch-E/B: a fresh init of the pruned architecture (for a mask, of the
        # masked large model: the same start as the lottery's random init)
        scratch = "random" if method == "unstructured" else "scratch"
        for ratio in cfg.ratios(method):
            pr = retrain(method, ratio, lr0, "trained", "pruned")
            retrain(method, ratio, lr0, "trained", "finetune", cfg.finetune)
            retrain(method, ratio, lr0, scratch, "scratch_e", setup.train)
            factor = min(pr.budget, cfg.scratch_b_cap)
            retrain(method, ratio, lr0, scratch, "scratch_b", scaled(setup.train, factor))
    for method in cfg.lottery_methods:
        for ratio in cfg.ratios(method):
            for lr in cfg.lottery_lrs:
                at_lr = replace(setup.train, lr=lr)
                retrain(method, ratio, lr, "ticket", "ticket_init", at_lr)
                retrain(method, ratio, lr, "random", "random_init", at_lr)
    return [{"seed": seed, **r} for r in rows]


def row(res: dict, **fields) -> dict:
    """A trials.csv row: test_acc is the final weights' (fixed schedules, as the paper)."""
    return {**fields, "params": res["params"], "macs": res["macs"], "test_acc": res["final_test_acc"],
            "early_stop_test_acc": res["test_acc"], "val_acc": res.get("final_val_acc", res["val_acc"]),
            "selected_last": res.get("selected_last", float("nan")),  # NaN: evaluated, not trained
            "train_wall_s": res["train_wall_s"], "run": res["run"]}


HELP = "a VGG or ResNet with BN that surgery supports: vgg_narrow, vgg16, resnet56, ..."
write_report = lazy("experiments.rethinking_pruning.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment("rethinking_pruning", __doc__, for_scale, each_seed(run_seed),
                        write_report, model=MODELS, model_help=HELP, flags=flags,
                        configure=configure)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
