"""Tables and figures of the Network Slimming experiment: the paper-style table, γ histograms,
accuracy vs pruning ratio."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.claims import write_claims
from experiments.common import Context
from experiments.network_slimming.claims import CLAIMS
from experiments.network_slimming.config import (PAPER_STEPS_PER_EPOCH, PAPER_TRAIN, SMALL_GAMMA,
                                                 SlimConfig, lr_sum)
from experiments.provenance import footer_line
from lib.report import (footer, line_plot, markdown, mean_sd, recipe_text, save_figure,
                        write_table, write_trials)
from lib.runs import atomic_write_text



def paper_lam_factor(cfg: SlimConfig, n_train: int) -> float:
    """λ × this = the λ giving the same total shrink λ·Σlr over the paper's 160-epoch budget."""
    ours = lr_sum(cfg.setup.train, cfg.setup.train.total_steps(n_train))
    paper = lr_sum(PAPER_TRAIN, round(PAPER_TRAIN.epochs * PAPER_STEPS_PER_EPOCH))
    return ours / paper


def paper_table(trials: pd.DataFrame, factor: float) -> pd.DataFrame:
    """One row per (λ, ratio): accuracy trained / pruned / fine-tuned, size, speed (mean ± sd)."""
    dense = trials[trials.prune_ratio == 0].set_index(["seed", "lam"])
    rows = []
    for (lam, ratio), g in trials.groupby(["lam", "prune_ratio"]):
        pr, ft = g[g.stage == "pruned"], g[g.stage == "finetuned"]
        trained = dense.xs(lam, level="lam")
        size = pr if ratio > 0 else g
        ref = trained.loc[size.seed]
        rows.append({
            "λ": f"{lam:g}" if lam else "0 (baseline)",
            "λ at paper budget": f"{lam * factor:.1e}" if lam else "",
            "pruned": f"{ratio:.0%}",
            "trained acc %": mean_sd(trained.test_acc, 2, 100),
            "pruned acc %": mean_sd(pr.test_acc, 2, 100),
            "fine-tuned acc %": mean_sd(ft.test_acc, 2, 100),
            "params": f"{size.params.mean():,.0f}",
            "MACs": f"{size.macs.mean() / 1e6:.2f}M",
            "latency ms": mean_sd(size.latency_cl_ms, 2),
            "speedup": mean_sd(ref.latency_cl_ms.values / size.latency_cl_ms.values, 2)
            if ratio > 0 else "",
            "γ threshold": mean_sd(pr.threshold, 3) if ratio > 0 else "",
            "widths": " / ".join(size.widths.astype(str)),
            "n": len(size),
        })
    return pd.DataFrame(rows)


def speed_table(trials: pd.DataFrame) -> pd.DataFrame:
    """CPU latency of the unpruned and pruned models in both memory layouts, and the speedup
    over the same seed's unpruned model, pooled over every λ and seed."""
    models = trials[trials.stage != "finetuned"]
    dense = models[models.prune_ratio == 0].set_index(["seed", "lam"])
    rows = []
    for ratio, g in models.groupby("prune_ratio"):
        ref = dense.loc[list(zip(g.seed, g.lam))]
        row = {"pruned": f"{ratio:.0%}", "params": f"{g.params.mean():,.0f}",
               "MACs": f"{g.macs.mean() / 1e6:.2f}M"}
        for col, name in (("latency_ms", "NCHW"), ("latency_cl_ms", "channels_last")):
            row[f"{name} ms"] = mean_sd(g[col], 2)
            row[f"{name} speedup"] = mean_sd(ref[col].values / g[col].values, 2)
        rows.append({**row, "n": len(g)})
    return pd.DataFrame(rows)


def trained_gammas(gammas: pd.DataFrame) -> pd.DataFrame:
    """|γ| of the trained models (before pruning); older gammas.csv files have no stage column."""
    return gammas[gammas.stage == "trained"] if "stage" in gammas else gammas


def gamma_table(gammas: pd.DataFrame) -> pd.DataFrame:
    """Per λ: median |γ| and the share of |γ| < SMALL_GAMMA of the trained models, mean ± sd
    over seeds."""
    per_seed = trained_gammas(gammas).groupby(["lam", "seed"]).gamma.agg(
        median="median", small=lambda g: (g.abs() < SMALL_GAMMA).mean(), top="max").reset_index()
    rows = []
    for lam, g in per_seed.groupby("lam"):
        rows.append({"λ": f"{lam:g}", "median γ": mean_sd(g["median"], 3),
                     f"share γ < {SMALL_GAMMA}": mean_sd(g.small, 1, 100) + " %",
                     "max γ": mean_sd(g.top, 2), "n": len(g)})
    return pd.DataFrame(rows)


def gamma_histograms(gammas: pd.DataFrame, path: Path) -> None:
    """|γ| of every BN channel, one column per λ, all seeds pooled: the trained model (before
    pruning) on top; below it, the model pruned at the largest ratio and fine-tuned (after)."""
    lams = sorted(gammas.lam.unique())
    after = gammas[gammas.stage == "finetuned"] if "stage" in gammas else gammas.iloc[:0]
    ratio = after.prune_ratio.max() if len(after) else None
    stages = [("trained", trained_gammas(gammas), "before pruning")]
    if ratio is not None:
        stages.append(("finetuned", after[after.prune_ratio == ratio],
                       f"{ratio:.0%} pruned, fine-tuned"))
    fig, axes = plt.subplots(len(stages), len(lams), figsize=(3.2 * len(lams), 3.0 * len(stages)),
                             squeeze=False, sharex=True)
    top = float(gammas.gamma.abs().max())
    for row, (_, g_stage, label) in zip(axes, stages):
        for ax, lam in zip(row, lams):
            g = g_stage[g_stage.lam == lam].gamma.abs()
            sns.histplot(g, bins=40, binrange=(0, top), ax=ax, color="C0" if lam == 0 else "C3")
            ax.set(title=f"λ = {lam:g}" + (" (no penalty)" if lam == 0 else "") + f": {label}",
                   xlabel="|γ|", ylabel="channels")
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
    fig.suptitle("BatchNorm scales with and without the L1 penalty, before and after pruning",
                 fontsize=10)
    save_figure(fig, ax, path, legend=False)


def write_report(ctx: Context, produced: tuple[list[dict], list[dict]]) -> Path:
    """trials.csv, gammas.csv, table.md and the plots, from `run`'s rows and BN |γ|."""
    rows, gammas = produced
    cfg, out = ctx.cfg, ctx.out
    trials = write_trials(rows, out, setup=cfg.setup)
    gam = pd.DataFrame(gammas)
    atomic_write_text(out / "gammas.csv", gam.to_csv(index=False))

    factor = paper_lam_factor(cfg, len(ctx.data.train_x))
    s = cfg.setup
    header = (
        f"# Network Slimming: {s.model} on {s.dataset} ({ctx.scale} scale)\n\n"
        f"Training: {recipe_text(s.train)}; λ > 0 adds λ·sign(γ) to every BN "
        f"γ's gradient. 'λ at paper budget' is the λ with the same total shrink λ·Σlr over the "
        f"paper's 160 epochs at batch 64 (our Σlr is {factor:.2g}× the paper's). Pruning: one "
        f"global |γ| threshold removes the given share of all BN'd channels, each layer "
        f"keeping at least min_keep = {cfg.min_keep} of its "
        f"channels; the channels are removed physically. Fine-tuning: {recipe_text(cfg.finetune)}. "
        f"Accuracies are of the final weights (no early stopping); 'pruned' is before any "
        f"fine-tuning. Latency: median of 20 CPU runs on a batch of {cfg.latency_batch} test "
        f"images, channels_last; speedup = the same seed's unpruned model / the pruned one. "
        f"widths: channels per conv layer, one entry per seed. γ means |γ| throughout. "
        f"Mean ± sd over seeds.\n\n")
    extra = (f"\n## Polarisation of the BN scales\n\n{markdown(gamma_table(gam))}"
             f"\n## CPU speed of the physically pruned models (every λ and seed pooled)\n\n"
             f"{markdown(speed_table(trials))}")
    write_table(out, header, markdown(paper_table(trials, factor)), extra,
                footer(trials, footer_line(ctx.provenance(trials.run))))

    write_claims(CLAIMS, trials, out, f"Liu et al. 2017, {s.model} on {s.dataset} ({ctx.scale})")
    gamma_histograms(gam, out / "gamma_hist.png")
    curve = trials[trials.stage.isin(["pruned", "finetuned"])].copy()
    start = trials[trials.prune_ratio == 0]
    curve = pd.concat([curve] + [start.assign(stage=st) for st in ("pruned", "finetuned")])
    curve["λ"] = curve.lam.map(lambda v: f"{v:g}")
    line_plot(curve, x="prune_ratio", y="test_acc", hue="λ", style="stage",
              path=out / "accuracy_vs_ratio.png", xlabel="share of channels removed (global |γ| threshold)",
              ylabel="test accuracy", title="Network Slimming: accuracy after pruning and after fine-tuning")
    return out
