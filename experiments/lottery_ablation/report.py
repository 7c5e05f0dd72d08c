"""Tables, mask statistics and figures of the lottery-ablation experiment."""
from __future__ import annotations

from itertools import product
from pathlib import Path

import pandas as pd
import torch

from experiments.claims import write_claims
from experiments.common import Context
from experiments.lottery_ablation.claims import CLAIMS
from experiments.provenance import footer_line
from lib.prune.mask import Mask
from lib.report import (aggregate, footer, line_plot, markdown, mean_sd_table, recipe_text,
                        write_table, write_trials)
from lib.runs import atomic_write_text

KEYS = ["study", "criterion", "ablation", "mask0", "level", "mask_eval"]
METRICS = ["weights_left", "test_acc", "early_stop_iter", "final_test_acc", "train_loss", "val_loss"]


def mask_statistics(seed: int, masks: dict[tuple[str, int], Mask], w_init: dict,
                    w_final: dict) -> tuple[list[dict], list[dict]]:
    """Jaccard overlap between criteria's masks per level, and sign flips per layer."""
    overlap = []
    for (c1, lv), (c2, lv2) in product(masks, masks):
        if lv != lv2:
            continue
        a, b = masks[(c1, lv)], masks[(c2, lv)]
        inter = sum(int((a[n] & b[n]).sum()) for n in a)
        union = sum(int((a[n] | b[n]).sum()) for n in a)
        overlap.append({"seed": seed, "level": lv, "weights_left": a.density(),
                        "criterion_a": c1, "criterion_b": c2, "jaccard": inter / max(union, 1)})
    flips = []
    for name in next(iter(masks.values())):
        flipped = torch.sign(w_init[name]) != torch.sign(w_final[name])
        flips.append({"seed": seed, "layer": name, "level": 0, "subset": "all",
                      "sign_flip_fraction": flipped.float().mean().item()})
        for (c, lv), m in masks.items():
            if c != "large_final":
                continue
            for subset, sel in (("kept", m[name]), ("pruned", ~m[name])):
                flips.append({"seed": seed, "layer": name, "level": lv, "subset": subset,
                              "sign_flip_fraction": flipped[sel].float().mean().item() if sel.any() else float("nan")})
    return overlap, flips


def write_report(ctx: Context, produced: tuple[list[dict], list[dict], list[dict]]) -> Path:
    """trials.csv, overlap.csv, sign_flips.csv, table.md (one section per study) and the plots."""
    (rows, overlap, flips), cfg, out = produced, ctx.cfg, ctx.out
    trials = write_trials([{"mask_eval": "", **r} for r in rows], out, setup=cfg.setup)
    atomic_write_text(out / "overlap.csv", pd.DataFrame(overlap).to_csv(index=False))
    atomic_write_text(out / "sign_flips.csv", pd.DataFrame(flips).to_csv(index=False))

    agg = aggregate(trials, KEYS, METRICS)
    table = mean_sd_table(agg, KEYS, METRICS, digits={"early_stop_iter": 0, "train_loss": 3, "val_loss": 3},
                          percent=["weights_left", "test_acc", "final_test_acc"])
    s = cfg.setup
    parts = [f"# Deconstructing lottery tickets: {s.model} on {s.dataset} ({ctx.scale} scale)\n\n",
             f"{s.mode} pruning to the per-layer sparsity of IMP levels {list(cfg.levels)} "
             f"({s.prune.rate_fc:.0%} fc / {s.prune.rate_conv:.0%} conv / {s.prune.rate_output:.0%} "
             f"output per round); retraining: {recipe_text(s.train)}; learned supermasks: "
             f"{recipe_text(s.supermask_train)}. Accuracies in %, mean ± sd over seeds; trained "
             f"rows at the iteration of minimum validation loss, with the training loss (mean "
             f"over the evaluation interval ending there) and the validation loss at it.\n"]
    for study in ["dense", "criteria", "mask1", "mask0", "supermask"]:
        part = table[table.study == study].drop(columns=["study"])
        if len(part):
            parts.append(f"\n## {study}\n\n" + markdown(part.rename(columns={
                "weights_left": "weights left %", "test_acc": "test acc %", "final_test_acc": "final test acc %",
                "early_stop_iter": "early-stop iter", "train_loss": "train loss", "val_loss": "val loss"})))
    unique = trials.drop_duplicates("run")  # a trial shared by several studies counts once
    produced_by = footer_line(ctx.provenance(unique.run))
    write_table(out, *parts, footer(unique, produced_by, note=f" ({len(trials)} table rows)"))
    atomic_write_text(out / "summary.md", summary(trials, ctx.scale))
    write_claims(CLAIMS, trials, out, f"Zhou et al. 2019, {s.model} on {s.dataset} ({ctx.scale})")
    _plots(trials, out)
    return out


SECTIONS = [("Mask criteria (retrained, kept weights rewound to init)", "criteria", "criterion"),
            ("Mask-1 actions (large_final mask, pruned weights zero)", "mask1", "ablation"),
            ("Mask-0 actions (large_final mask, kept weights rewound)", "mask0", "mask0")]


def _pivot(rows: pd.DataFrame, by: list[str]) -> str:
    """Test accuracy (%, mean ± sd over seeds): one row per `by`, one column per weights left."""
    rows = rows.assign(left=rows.groupby("level").weights_left.transform("mean"))
    cells = rows.groupby([*by, "left"]).test_acc.agg(["mean", "std"]).reset_index()
    cells["cell"] = [f"{100 * m:.2f} ± {100 * (0 if pd.isna(sd) else sd):.2f}"
                     for m, sd in zip(cells["mean"], cells["std"])]
    wide = cells.pivot(index=by, columns="left", values="cell")
    order = rows.groupby(by).test_acc.mean().sort_values(ascending=False).index
    wide = wide.loc[order].sort_index(axis=1, ascending=False)
    wide.columns = [f"{c:.1%} left" for c in wide.columns]
    return markdown(wide.reset_index())


def summary(trials: pd.DataFrame, scale: str) -> str:
    """The README's view of table.md: each study as a table of test accuracy by weights left,
    rows sorted by their mean over levels (the same trials, nothing else computed)."""
    dense = trials[trials.study == "dense"].test_acc
    parts = [f"# Summary ({scale} scale)\n\nTest accuracy in %, mean ± sd over seeds, at the "
             f"iteration of minimum validation loss. The dense network: "
             f"{100 * dense.mean():.2f} ± {100 * dense.std():.2f}.\n"]
    for title, study, by in SECTIONS:
        part = trials[trials.study == study]
        if len(part):
            parts.append(f"\n**{title}**\n\n{_pivot(part, [by])}")
    sup = trials[trials.study == "supermask"]
    untrained = sup[~sup.trained.astype(bool)]
    if len(untrained):
        parts.append("\n**Supermasks: each criterion's mask on the untrained weights (their init "
                     "values, or a signed constant), no training; chance is 10%**\n\n"
                     + _pivot(untrained, ["criterion", "ablation"]))
    learned = sup[sup.trained.astype(bool)]
    if len(learned):
        parts.append("\n**Learned supermasks (weights frozen; the mask thresholded at σ > 0.5, or "
                     "sampled)**\n\n" + _pivot(learned, ["ablation", "mask_eval"]))
    return "".join(parts)


def _plots(trials: pd.DataFrame, out: Path) -> None:
    dense = trials[trials.study == "dense"]
    for study, hue, title in (("criteria", "criterion", "Mask criteria (kept weights rewound to init)"),
                              ("mask1", "ablation", "Mask-1: what kept weights restart from"),
                              ("mask0", "mask0", "Mask-0: what pruned weights are")):
        part = trials[trials.study == study]
        if len(part):
            part = pd.concat([part, *[dense.assign(**{hue: v}) for v in part[hue].unique()]])
            line_plot(part, x="weights_left", y="test_acc", hue=hue, path=out / f"{study}.png",
                      logx=True, invert_x=True, title=title, xlabel="fraction of weights remaining (log)",
                      ylabel="test accuracy at early stop")
    sm = trials[(trials.study == "supermask") & ~trials.trained.astype(bool)]
    if len(sm):
        line_plot(sm, x="weights_left", y="test_acc", hue="criterion", style="ablation",
                  path=out / "supermask.png", logx=True, invert_x=True,
                  title="Supermasks: masks on untrained weights (no training)",
                  xlabel="fraction of weights remaining (log)", ylabel="test accuracy at init")
