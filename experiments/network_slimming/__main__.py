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

import copy
from dataclasses import replace

import torch
from torch import nn

from experiments.common import (Stopwatch, base_parser, fail, load_data, machine,
                                pick_device, preset, run_eval, run_trial)
from experiments.network_slimming.config import SlimConfig, Trial, for_scale
from experiments.network_slimming.report import write_report
from lib import models
from lib.metrics import count_macs, count_params, latency_ms
from lib.prune import structured
from lib.prune.slimming import SlimmingHook, bn_gammas
from lib.prune.surgery import load_pruned, prunable_units, prune_channels, save_pruned
from lib.runs import Run, atomic_torch_save

EXPERIMENT = "network_slimming"


def parse_floats(text: str, field: str) -> tuple[float, ...]:
    try:
        out = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"{field}: expected comma-separated numbers, got '{text}'") from None
    if not out:
        raise ValueError(f"{field}: empty list")
    return out


def parse_args(argv=None) -> tuple[SlimConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    p.add_argument("--model", default="vgg_narrow", help="a BN model surgery supports: vgg_*, resnet*")
    p.add_argument("--dataset", default=None, help="override the scale's dataset")
    p.add_argument("--lams", default=None, help="comma-separated λ > 0 for sparsity training")
    p.add_argument("--ratios", default=None, help="comma-separated global pruning ratios in (0, 1)")
    p.add_argument("--min-keep", type=float, default=None,
                   help="per-layer floor: fraction (0, 1) of each layer's channels, or a count >= 1")
    a = p.parse_args(argv)
    try:
        scale, cfg = preset(a, for_scale)
        if a.seeds is not None:
            cfg = replace(cfg, seeds=a.seeds)
        if a.lams is not None:
            cfg = replace(cfg, lams=parse_floats(a.lams, "lams"))
        if a.ratios is not None:
            cfg = replace(cfg, ratios=parse_floats(a.ratios, "ratios"))
        if a.min_keep is not None:
            keep = int(a.min_keep) if a.min_keep >= 1 and a.min_keep == int(a.min_keep) else a.min_keep
            cfg = replace(cfg, min_keep=keep)
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


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


def run_lam(cfg: SlimConfig, seed: int, lam: float, data, scale: str, device,
            gammas: list[dict]) -> list[dict]:
    """The trained model for (seed, λ), then each ratio pruned and fine-tuned; their rows."""
    setup, tag = cfg.setup, f"s{seed}-lam{lam:g}"
    batch = data.test_x[:cfg.latency_batch].cpu()

    def fresh():
        torch.manual_seed(seed)
        return models.build(setup.model, data.input_shape, data.num_classes).to(device)

    trial = Trial(setup, seed, lam)
    run = Run(EXPERIMENT, trial, scale=scale)

    def after_train(m, _):
        atomic_torch_save(m.state_dict(), run.path("final.pt"))
        return {**measure(m, batch), "widths": layer_widths(m)}

    res = run_trial(run, experiment=EXPERIMENT, stage="train", scale=scale, name=tag, seed=seed,
                    data=data, train_cfg=setup.train, build=fresh,
                    hooks_for=lambda m: [SlimmingHook(lam)] if lam > 0 else [], after=after_train)
    model = fresh()
    model.load_state_dict(torch.load(run.path("final.pt"), map_location=device, weights_only=True))
    model.eval()
    for layer, g in bn_gammas(model).items():
        gammas += [{"seed": seed, "lam": lam, "layer": layer, "gamma": float(v)} for v in g.cpu()]
    base = {"seed": seed, "lam": lam, "method": "slimming" if lam > 0 else "baseline",
            "prune_ratio": 0.0, "run": res["run"]}
    rows = [{**res, **base, "stage": "sparse" if lam > 0 else "baseline",
             "early_stop_test_acc": res["test_acc"], "test_acc": res["final_test_acc"],
             "val_acc": res["final_val_acc"]}]
    print(f"{tag:>22}: test acc {res['final_test_acc']:.4f}", flush=True)

    scores = structured.importance("bn_gamma", model)  # |γ| of each prunable layer's BN
    for ratio in cfg.ratios:
        rows += prune_and_finetune(cfg, replace(trial, prune_ratio=ratio, min_keep=cfg.min_keep),
                                   model, scores, data, scale, device, base)
    return rows


def prune_and_finetune(cfg: SlimConfig, trial: Trial, model: nn.Module, scores: dict, data,
                       scale: str, device, base: dict) -> list[dict]:
    """`model` pruned under one global threshold at `trial.prune_ratio` (saved, evaluated),
    then that saved model loaded back and fine-tuned: the rows of both stages."""
    ratio, tag = trial.prune_ratio, f"s{trial.seed}-lam{trial.lam:g}-r{trial.prune_ratio:g}"
    prun = Run(EXPERIMENT, trial, scale=scale)
    measured: dict = {}  # filled by build(), read by run_eval after it

    def build_pruned():
        keep = structured.select_global(scores, ratio, cfg.min_keep)
        pruned = prune_channels(model, keep)
        save_pruned(pruned, prun.path("pruned.pt"))
        measured.update(measure(pruned, data.test_x[:cfg.latency_batch].cpu()),
                        widths=layer_widths(pruned), threshold=largest_pruned(scores, keep))
        return pruned.to(device)

    pres = run_eval(prun, experiment=EXPERIMENT, scale=scale, name=tag, data=data,
                    build=build_pruned, extra=measured, stage="prune")
    frun = Run(EXPERIMENT, replace(trial, finetune=cfg.finetune), scale=scale)

    def after_finetune(m, _):
        save_pruned(m, frun.path("final.pt"))
        return {"params": count_params(m), "macs": count_macs(m, data.input_shape),
                "widths": layer_widths(m)}

    fres = run_trial(frun, experiment=EXPERIMENT, stage="finetune", scale=scale, name=f"{tag}-ft",
                     seed=trial.seed, data=data, train_cfg=cfg.finetune,
                     build=lambda: load_pruned(prun.path("pruned.pt"), map_location=str(device)),
                     after=after_finetune)
    print(f"{tag:>22}: pruned {pres['test_acc']:.4f} -> fine-tuned {fres['final_test_acc']:.4f}, "
          f"{pres['params']} params, widths {pres['widths']}", flush=True)
    prow = {**pres, **base, "prune_ratio": ratio, "stage": "pruned", "run": pres["run"]}
    frow = {**fres, **base, "prune_ratio": ratio, "stage": "finetuned", "run": fres["run"],
            "latency_ms": pres["latency_ms"], "latency_cl_ms": pres["latency_cl_ms"],
            "threshold": pres["threshold"], "early_stop_test_acc": fres["test_acc"],
            "test_acc": fres["final_test_acc"], "val_acc": fres["final_val_acc"]}
    return [prow, frow]


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    data = load_data(cfg.setup, device)
    rows, gammas = [], []
    for seed in range(cfg.seeds):
        for lam in (0.0, *cfg.lams):
            rows += run_lam(cfg, seed, lam, data, scale, device, gammas)
    out = write_report(cfg, rows, gammas, scale, n_train=len(data.train_x), wall_s=clock.seconds, machine=machine())
    print(f"wrote {out}/trials.csv, gammas.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
