"""Network Slimming (Liu et al. ICCV 2017): sparsity training on BN γ, global pruning, fine-tuning.

    python -m experiments.network_slimming --scale smoke|default|paper [--seeds N]
        [--lams 1e-3,3e-3] [--ratios 0.3,0.5,0.7] [--min-keep 0.1] [--model vgg_narrow]

For each seed and each λ in (0, *lams), four stages:
- "baseline" (λ = 0) or "sparse" (λ > 0): train with the L1 penalty λ·Σ|γ| on BN scales,
  applied as the subgradient λ·sign(γ) (lib.prune.slimming.SlimmingHook); final weights saved;
- "pruned": at each ratio, remove that fraction of all BN'd channels under one global |γ|
  threshold (structured.importance('bn_gamma') + select_global, each layer keeping its floor
  `min_keep`), physically (surgery.prune_channels); saved with surgery.save_pruned; evaluated
  with no training;
- "finetuned": the saved pruned model loaded back (surgery.load_pruned) and fine-tuned.
Every stage records parameters, MACs and the measured CPU latency of its model. The λ = 0 rows
are plain BN-γ pruning without sparsity training: the control for what the penalty buys.
Trials live in runs/network_slimming/<hash>/; finished ones are reused. Outputs:
results/network_slimming/<scale>/ (trials.csv, gammas.csv, table.md, plots).
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import torch
from torch import nn

from experiments.common import Context, Experiment, parse_floats, lazy
from experiments.network_slimming.config import MODELS, SMALL_GAMMA, SlimConfig, Trial, for_scale
from lib.metrics import count_macs, count_params, latency_ms
from lib.prune import structured
from lib.prune.slimming import SlimmingHook, bn_gammas
from lib.prune.surgery import load_pruned, prunable_units, prune_channels, save_pruned


def flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lams", default=None, help="comma-separated λ > 0 for sparsity training")
    p.add_argument("--ratios", default=None, help="comma-separated global pruning ratios in (0, 1)")
    p.add_argument("--min-keep", type=float, default=None,
                   help="per-layer floor: fraction (0, 1) of each layer's channels, or a count >= 1")


def configure(cfg: SlimConfig, a: argparse.Namespace) -> SlimConfig:
    """`cfg` with --lams, --ratios and --min-keep applied (a whole --min-keep is a count)."""
    if a.lams is not None:
        cfg = replace(cfg, lams=parse_floats(a.lams, "lams"))
    if a.ratios is not None:
        cfg = replace(cfg, ratios=parse_floats(a.ratios, "ratios"))
    if a.min_keep is not None:
        keep = int(a.min_keep) if a.min_keep >= 1 and a.min_keep == int(a.min_keep) else a.min_keep
        cfg = replace(cfg, min_keep=keep)
    return cfg


def measure(model: nn.Module, batch: torch.Tensor) -> dict:
    """Size and CPU speed of a copy of `model`: params, MACs, median latency (ms) on `batch`
    in NCHW (`latency_ms`) and channels_last (`latency_cl_ms`) memory layout."""
    m = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    out = {"params": count_params(m), "macs": count_macs(m, tuple(batch.shape[1:])),
           "latency_ms": latency_ms(m, batch)}
    m = m.to(memory_format=torch.channels_last)
    out["latency_cl_ms"] = latency_ms(m, batch.contiguous(memory_format=torch.channels_last))
    return out


def largest_pruned(scores: dict[str, torch.Tensor], keep: dict[str, torch.Tensor]) -> float:
    """The global |γ| threshold that was applied: the largest score of a removed channel."""
    gone = []
    for name, s in scores.items():
        mask = torch.ones(len(s), dtype=torch.bool)
        mask[keep[name]] = False
        gone.append(s[mask])
    gone = torch.cat(gone)
    return float(gone.max()) if len(gone) else 0.0


def layer_widths(model: nn.Module) -> str:
    """Channels of every prunable layer, e.g. '16-32-64-64'."""
    mods = dict(model.named_modules())
    return "-".join(str(mods[n].weight.shape[0]) for n in prunable_units(model))


def gamma_rows(model: nn.Module, **where) -> list[dict]:
    """One row per BN channel of `model`: its |γ|, with the columns `where`."""
    return [{**where, "layer": layer, "gamma": float(v)}
            for layer, g in bn_gammas(model).items() for v in g.cpu()]


def run_lam(ctx: Context, seed: int, lam: float, gammas: list[dict]) -> list[dict]:
    """The trained model for (seed, λ), then each ratio pruned and fine-tuned; their rows.
    Appends the BN |γ| of the trained model (stage "trained", before pruning) and of each
    fine-tuned pruned model (stage "finetuned", after) to `gammas`."""
    cfg, setup, tag = ctx.cfg, ctx.cfg.setup, f"s{seed}-lam{lam:g}"
    batch = ctx.data.test_x[:cfg.latency_batch].cpu()
    trial = Trial(setup, seed, lam)
    run = ctx.run(trial)

    model, res = ctx.train_final(
        run, model=setup.model, seed=seed, name=tag, train_cfg=setup.train,
        hooks_for=lambda m: [SlimmingHook(lam)] if lam > 0 else [],
        after=lambda m, _: {**measure(m, batch), "widths": layer_widths(m)})
    trained = gamma_rows(model, seed=seed, lam=lam, stage="trained", prune_ratio=0.0)
    gammas += trained
    small = sum(abs(g["gamma"]) < SMALL_GAMMA for g in trained) / max(1, len(trained))
    base = {"seed": seed, "lam": lam, "method": "slimming" if lam > 0 else "baseline",
            "prune_ratio": 0.0, "run": res["run"]}
    rows = [{**res, **base, "stage": "sparse" if lam > 0 else "baseline", "gamma_small_share": small,
             "early_stop_test_acc": res["test_acc"], "test_acc": res["final_test_acc"],
             "val_acc": res["final_val_acc"]}]
    print(f"{tag:>22}: test acc {res['final_test_acc']:.4f}", flush=True)

    scores = structured.importance("bn_gamma", model)  # |γ| of each prunable layer's BN
    for ratio in cfg.ratios:
        rows += prune_and_finetune(ctx, replace(trial, prune_ratio=ratio, min_keep=cfg.min_keep),
                                   model, scores, base, gammas)
    return rows


def prune_and_finetune(ctx: Context, trial: Trial, model: nn.Module, scores: dict,
                       base: dict, gammas: list[dict]) -> list[dict]:
    """`model` pruned under one global threshold at `trial.prune_ratio` (saved, evaluated),
    then that saved model loaded back and fine-tuned: the rows of both stages. Appends the
    fine-tuned model's BN |γ| to `gammas`."""
    cfg = ctx.cfg
    ratio, tag = trial.prune_ratio, f"s{trial.seed}-lam{trial.lam:g}-r{trial.prune_ratio:g}"
    prun = ctx.run(trial)
    measured: dict = {}  # filled by build(), read by run_eval after it

    def build_pruned() -> nn.Module:
        keep = structured.select_global(scores, ratio, cfg.min_keep)
        pruned = prune_channels(model, keep)
        save_pruned(pruned, prun.path("pruned.pt"))
        measured.update(measure(pruned, ctx.data.test_x[:cfg.latency_batch].cpu()),
                        widths=layer_widths(pruned), threshold=largest_pruned(scores, keep))
        return pruned.to(ctx.device)

    pres = ctx.evaluate(prun, name=tag, build=build_pruned, extra=measured, stage="prune")
    frun = ctx.run(replace(trial, finetune=cfg.finetune))

    def after_finetune(m: nn.Module, _) -> dict:
        save_pruned(m, frun.path("final.pt"))
        return {"params": count_params(m), "macs": count_macs(m, ctx.data.input_shape),
                "widths": layer_widths(m)}

    fres = ctx.train(frun, stage="finetune", name=f"{tag}-ft", seed=trial.seed,
                     train_cfg=cfg.finetune, after=after_finetune,
                     build=lambda: prun.load("pruned.pt", str(ctx.device), load_pruned))
    tuned = frun.load("final.pt", "cpu", load_pruned)
    gammas += gamma_rows(tuned, seed=trial.seed, lam=trial.lam, stage="finetuned", prune_ratio=ratio)
    print(f"{tag:>22}: pruned {pres['test_acc']:.4f} -> fine-tuned {fres['final_test_acc']:.4f}, "
          f"{pres['params']} params, widths {pres['widths']}", flush=True)
    prow = {**pres, **base, "prune_ratio": ratio, "stage": "pruned", "run": pres["run"]}
    frow = {**fres, **base, "prune_ratio": ratio, "stage": "finetuned", "run": fres["run"],
            "latency_ms": pres["latency_ms"], "latency_cl_ms": pres["latency_cl_ms"],
            "threshold": pres["threshold"], "early_stop_test_acc": fres["test_acc"],
            "test_acc": fres["final_test_acc"], "val_acc": fres["final_val_acc"]}
    return [prow, frow]


def run(ctx: Context) -> tuple[list[dict], list[dict]]:
    """Every (seed, λ), λ = 0 first: the trials' rows and every trained model's BN |γ|."""
    rows, gammas = [], []
    for seed in range(ctx.cfg.seeds):
        for lam in (0.0, *ctx.cfg.lams):
            rows += run_lam(ctx, seed, lam, gammas)
    return rows, gammas


write_report = lazy("experiments.network_slimming.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="network_slimming", doc=__doc__, for_scale=for_scale, model=MODELS,
    model_help="a BN model surgery supports: vgg_*, vgg11/16/19, resnet*",
    flags=flags, configure=configure, report=write_report, run=run)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
