"""Tables and figures of the Network Slimming experiment: the paper-style table, γ histograms,
accuracy vs pruning ratio."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.network_slimming.config import PAPER_STEPS_PER_EPOCH, PAPER_TRAIN, SlimConfig, lr_sum
from lib.report import line_plot, markdown, results_dir, write_trials
from lib.runs import atomic_write_text, flat_config

SMALL_GAMMA = 0.01  # |γ| below this counts as switched off in the polarisation summary


def paper_lam_factor(cfg: SlimConfig, n_train: int) -> float:
    """λ × this = the λ giving the same total shrink λ·Σlr over the paper's 160-epoch budget."""
    ours = lr_sum(cfg.setup.train, cfg.setup.train.total_steps(n_train))
    paper = lr_sum(PAPER_TRAIN, round(PAPER_TRAIN.epochs * PAPER_STEPS_PER_EPOCH))
    return ours / paper


def mean_sd(values: pd.Series, digits: int, k: float = 1.0) -> str:
    v = pd.Series(values).dropna() * k
    if v.empty:
        return ""
    return f"{v.mean():.{digits}f}" if len(v) < 2 else f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


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


def gamma_table(gammas: pd.DataFrame) -> pd.DataFrame:
    """Per λ: median |γ| and the share of |γ| < SMALL_GAMMA, mean ± sd over seeds."""
    per_seed = gammas.groupby(["lam", "seed"]).gamma.agg(
        median="median", small=lambda g: (g.abs() < SMALL_GAMMA).mean(), top="max").reset_index()
    rows = []
    for lam, g in per_seed.groupby("lam"):
        rows.append({"λ": f"{lam:g}", "median γ": mean_sd(g["median"], 3),
                     f"share γ < {SMALL_GAMMA}": mean_sd(g.small, 1, 100) + " %",
                     "max γ": mean_sd(g.top, 2), "n": len(g)})
    return pd.DataFrame(rows)


def gamma_histograms(gammas: pd.DataFrame, path: Path) -> None:
    """|γ| of every BN channel, one panel per λ, all seeds pooled."""
    lams = sorted(gammas.lam.unique())
    fig, axes = plt.subplots(1, len(lams), figsize=(3.2 * len(lams), 3.2), squeeze=False,
                             sharex=True)
    top = float(gammas.gamma.abs().max())
    for ax, lam in zip(axes[0], lams):
        g = gammas[gammas.lam == lam].gamma.abs()
        sns.histplot(g, bins=40, binrange=(0, top), ax=ax, color="C0" if lam == 0 else "C3")
        ax.set(title=f"λ = {lam:g}" + (" (no penalty)" if lam == 0 else ""), xlabel="|γ|",
               ylabel="channels")
        ax.grid(alpha=0.3)
    fig.suptitle("BatchNorm scales after training, with and without the L1 penalty", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cfg: SlimConfig, rows: list[dict], gammas: list[dict], scale: str, *,
                 n_train: int, wall_s: float, machine: str) -> Path:
    out = results_dir("network_slimming", scale)
    setup_cols = {k: str(v) if isinstance(v, list) else v for k, v in flat_config(cfg.setup).items()}
    trials = write_trials([{**row, **setup_cols} for row in rows], out)
    gam = pd.DataFrame(gammas)
    atomic_write_text(out / "gammas.csv", gam.to_csv(index=False))

    factor = paper_lam_factor(cfg, n_train)
    s, ft = cfg.setup, cfg.finetune
    unit = lambda t: f"{t.epochs or t.iterations} {'epochs' if t.epochs else 'iterations'}"  # noqa: E731
    header = (
        f"# Network Slimming: {s.model} on {s.dataset} ({scale} scale)\n\n"
        f"Training: {s.train.optimizer} lr {s.train.lr}, momentum {s.train.momentum}, weight "
        f"decay {s.train.weight_decay}, batch {s.train.batch_size}, {unit(s.train)}, lr ÷10 at "
        f"{', '.join(f'{m:.0%}' for m in s.train.milestones)}; λ > 0 adds λ·sign(γ) to every BN "
        f"γ's gradient. 'λ at paper budget' is the λ with the same total shrink λ·Σlr over the "
        f"paper's 160 epochs at batch 64 (our Σlr is {factor:.2g}× the paper's). Pruning: one "
        f"global |γ| threshold removes the given share of all BN'd channels, each layer "
        f"keeping at least min_keep = {cfg.min_keep} of its "
        f"channels; the channels are removed physically. Fine-tuning: {ft.optimizer} lr "
        f"{ft.lr} ({ft.schedule}), momentum {ft.momentum}, {unit(ft)}. Accuracies are of the "
        f"final weights (no early stopping); 'pruned' is before any fine-tuning. Latency: "
        f"median of 20 CPU runs on a batch of {cfg.latency_batch} test images, channels_last; "
        f"speedup = the same seed's unpruned model / the pruned one. widths: channels per "
        f"conv layer, one entry per seed. γ means |γ| throughout. Mean ± sd over seeds.\n\n")
    footer = (f"\n## Polarisation of the BN scales\n\n{markdown(gamma_table(gam))}"
              f"\n## CPU speed of the physically pruned models (every λ and seed pooled)\n\n"
              f"{markdown(speed_table(trials))}"
              f"\nTrials: {len(trials)}; summed training time {trials['train_wall_s'].sum():.0f} s; "
              f"this invocation {wall_s:.0f} s (finished trials are reused, not re-run).\n"
              f"Machine: {machine}.\n")
    atomic_write_text(out / "table.md", header + markdown(paper_table(trials, factor)) + footer)

    gamma_histograms(gam, out / "gamma_hist.png")
    curve = trials[trials.stage.isin(["pruned", "finetuned"])].copy()
    start = trials[trials.prune_ratio == 0]
    curve = pd.concat([curve] + [start.assign(stage=st) for st in ("pruned", "finetuned")])
    curve["λ"] = curve.lam.map(lambda v: f"{v:g}")
    line_plot(curve, x="prune_ratio", y="test_acc", hue="λ", style="stage",
              path=out / "accuracy_vs_ratio.png", xlabel="share of channels removed (global |γ| threshold)",
              ylabel="test accuracy", title="Network Slimming: accuracy after pruning and after fine-tuning")
    return out
