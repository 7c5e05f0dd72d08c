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


def write_report(ctx: Context, rows: list[dict]) -> Path:
    """trials.csv, table.md (criteria side by side at each ratio) and the two accuracy plots."""
    cfg, out = ctx.cfg, ctx.out
    trials = write_trials(rows, out, setup=cfg.setup)

    s = cfg.setup
    header = (f"# Filter importance at equal MACs: {s.model} on {s.dataset} ({ctx.scale} scale)\n\n"
              f"Baseline: {recipe_text(s.train)}. Each criterion removes the same fraction "
              f"(`ratio per layer`) of the filters of every prunable layer, lowest scores first, "
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
