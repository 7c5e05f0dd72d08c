"""Tables and figures of the filter-importance experiment: accuracy of every criterion at equal
MACs, right after pruning and after fine-tuning."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.claims import write_claims
from experiments.common import Context
from experiments.filter_importance.claims import CLAIMS
from experiments.provenance import footer_line
from lib.report import (aggregate, footer, line_plot, markdown, mean_sd_table, recipe_text,
                        write_table, write_trials)
from lib.runs import atomic_write_text


def accuracy_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (prune ratio, criterion): size, MACs reduction, accuracy pruned / fine-tuned."""
    size = aggregate(trials[trials.stage != "finetuned"], ["prune_ratio", "method"],
                     ["params", "macs", "macs_reduction", "latency_ms"])
    acc = {}
    for stage in ("baseline", "pruned", "finetuned"):
        agg = aggregate(trials[trials.stage == stage], ["prune_ratio", "method"], ["test_acc"])
        acc[stage] = mean_sd_table(agg, ["prune_ratio", "method"], ["test_acc"], percent=["test_acc"])
    table = size[["prune_ratio", "method"]].copy()
    table["params"] = size.params_mean.round().astype(int)
    table["MACs"] = size.macs_mean.round().astype(int)
    table["MACs reduction %"] = (100 * size.macs_reduction_mean).map(lambda v: f"{v:.1f}")
    table["latency (ms)"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(size.latency_ms_mean, size.latency_ms_sd)]
    keys = ["prune_ratio", "method"]
    base = acc["baseline"].rename(columns={"test_acc": "pruned test acc %"})
    pruned = pd.concat([base, acc["pruned"].rename(columns={"test_acc": "pruned test acc %"})])
    table = table.merge(pruned[keys + ["pruned test acc %", "n"]], on=keys, how="left")
    ft = acc["finetuned"].rename(columns={"test_acc": "fine-tuned test acc %"}).drop(columns="n")
    table = table.merge(ft, on=keys, how="left").fillna("")
    order = {m: i for i, m in enumerate(["dense", "l1", "l2", "fpgm", "apoz", "bn_gamma", "random"])}
    table = table.sort_values(keys, key=lambda c: c.map(order) if c.name == "method" else c)
    return table.rename(columns={"prune_ratio": "ratio per layer", "method": "criterion"})


def sensitivity_table(sens: pd.DataFrame) -> pd.DataFrame:
    """One row per pruned fraction, one column per layer: validation accuracy (%) of the
    baseline with that layer alone pruned by l1, mean ± sd over seeds."""
    agg = aggregate(sens, ["layer", "prune_ratio"], ["val_acc"])
    cells = mean_sd_table(agg, ["layer", "prune_ratio"], ["val_acc"], percent=["val_acc"])
    table = cells.pivot(index="prune_ratio", columns="layer", values="val_acc")
    table = table[list(dict.fromkeys(sens.layer))].reset_index()  # the layers in network order
    return table.rename(columns={"prune_ratio": "fraction of the layer's filters removed"})


def write_sensitivity(ctx: Context, sens: pd.DataFrame, dense: pd.DataFrame) -> None:
    """sensitivity.csv (one row per seed, layer and fraction), sensitivity.md and .png."""
    out = ctx.out
    atomic_write_text(out / "sensitivity.csv", sens.to_csv(index=False))
    dense_val = f"{100 * dense.val_acc.mean():.2f}"
    atomic_write_text(out / "sensitivity.md", f"# Sensitivity of each layer to pruning: {ctx.cfg.setup.model} "
                     f"({ctx.scale} scale)\n\nEach prunable layer alone loses the fraction of its "
                     f"filters with the smallest L1 norm, with no retraining (Li et al. 2017, "
                     f"Fig. 2b). Validation accuracy in %, mean ± sd over seeds; the baseline's: "
                     f"{dense_val}. The layers to prune are chosen on validation, not test.\n\n"
                f"{markdown(sensitivity_table(sens))}\n")
    line_plot(sens, x="prune_ratio", y="val_acc", hue="layer", path=out / "sensitivity.png",
              xlabel="fraction of the layer's filters removed (l1, no retraining)",
              ylabel="validation accuracy", title="Sensitivity of each layer to pruning")


def write_report(ctx: Context, rows: list[dict]) -> Path:
    """trials.csv, table.md (criteria side by side at each ratio) and the two accuracy plots;
    with --sensitivity, the sensitivity table and plot."""
    cfg, out = ctx.cfg, ctx.out
    sens = pd.DataFrame([r for r in rows if r["stage"] == "sensitivity"])
    trials = write_trials([r for r in rows if r["stage"] != "sensitivity"], out, setup=cfg.setup)
    if len(sens):
        write_sensitivity(ctx, sens, trials[trials.stage == "baseline"])

    s = cfg.setup
    which = (f"of the listed layers ({', '.join(cfg.layers)}; the others keep every filter)"
             if cfg.layers else "of every prunable layer")
    header = (f"# Filter importance at equal MACs: {s.model} on {s.dataset} ({ctx.scale} scale)\n\n"
              f"Baseline: {recipe_text(s.train)}. Each criterion removes the same fraction "
              f"(`ratio per layer`) of the filters {which}, lowest scores first, "
              f"so every criterion gives the same architecture at a ratio (equal params and "
              f"MACs); the smaller model is built by surgery, evaluated right away (`pruned`), "
              f"then fine-tuned: {recipe_text(cfg.finetune)}. APoZ is measured on "
              f"{cfg.apoz_samples} training images. Accuracies are of the final weights (no "
              f"early stopping). Latency: median of 20 CPU runs on a batch of "
              f"{cfg.latency_batch}. Mean ± sd over seeds; n = seeds.\n\n")
    ft = trials[trials.stage == "finetuned"]
    note = f" ({ft['train_wall_s'].sum():.0f} s of it fine-tuning)"
    produced_by = footer_line(ctx.provenance(trials.run))
    write_table(out, header, markdown(accuracy_table(trials)), footer(trials, produced_by, note))
    write_claims(CLAIMS, trials, out, f"filter importance, {s.model} on {s.dataset} ({ctx.scale})")

    pruned = trials[trials.stage != "baseline"].copy()
    pruned["macs_reduction_%"] = (100 * pruned.macs_reduction).round(1)
    for stage, title in (("pruned", "right after pruning (no fine-tuning)"),
                         ("finetuned", "after fine-tuning")):
        line_plot(pruned[pruned.stage == stage], x="macs_reduction_%", y="test_acc", hue="method",
                  path=out / f"accuracy_{stage}.png", xlabel="MACs removed (%)",
                  ylabel="test accuracy", title=f"Filter criteria at equal MACs: {title}")
    return out
