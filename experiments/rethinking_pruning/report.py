"""Tables and figures of the rethinking-pruning experiment.

table.md has three parts: fine-tuned vs Scratch-E vs Scratch-B per method and ratio (the
paper's Tables 1-4), winning-ticket vs random init per learning rate (its Section 6), and every
(method, ratio, variant, lr, epochs) group in full. Accuracies are in %, mean ± sd over seeds.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from experiments.rethinking_pruning.config import RethinkConfig  # noqa: E402
from lib.report import aggregate, markdown, mean_sd_table, results_dir, write_trials  # noqa: E402
from lib.runs import atomic_write_text, flat_config  # noqa: E402

VARIANTS = ("baseline", "pruned", "finetune", "scratch_e", "scratch_b", "ticket_init", "random_init")
BY = ["method", "prune_ratio", "variant", "lr", "epochs"]
METRICS = ["test_acc", "params", "macs"]


def pm(values: pd.Series, k: float = 100.0, digits: int = 2) -> str:
    """'mean ± sd' of `values` × k (just the mean for one value, '' for none)."""
    v = values.dropna() * k
    if v.empty:
        return ""
    return f"{v.mean():.{digits}f}" if len(v) < 2 else f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def baseline_of(trials: pd.DataFrame, method: str, lr: float) -> pd.DataFrame:
    """Rows of the large model `method` pruned: the sparsity-trained one for slimming."""
    base = trials[(trials.variant == "baseline") & (trials.lr == lr)]
    return base[base.method == ("slimming" if method == "slimming" else "unpruned")]


def scratch_table(trials: pd.DataFrame, lr: float) -> pd.DataFrame:
    """Per method and ratio: baseline, pruned, fine-tuned, Scratch-E, Scratch-B (test acc %)."""
    out = []
    pruned = trials[trials.variant.isin(["pruned", "finetune", "scratch_e", "scratch_b"])]
    for (method, ratio), t in pruned.groupby(["method", "prune_ratio"], sort=False):
        base = baseline_of(trials, method, lr)
        v = {k: g for k, g in t.groupby("variant")}
        if "scratch_e" not in v:
            continue
        out.append({"method": method, "prune ratio": ratio,
                    "params": f"{v['scratch_e'].params.mean():,.0f} / {base.params.mean():,.0f}",
                    "MACs": f"{v['scratch_e'].macs.mean():,.0f} / {base.macs.mean():,.0f}",
                    "baseline": pm(base.test_acc), "pruned": pm(v["pruned"].test_acc),
                    "fine-tuned": pm(v["finetune"].test_acc), "Scratch-E": pm(v["scratch_e"].test_acc),
                    "Scratch-B": pm(v["scratch_b"].test_acc),
                    "Scratch-B epochs": f"{v['scratch_b'].epochs.mean():.3g} "
                                        f"(cost ratio {v['scratch_b'].budget.mean():.2f})"})
    return pd.DataFrame(out)


def lottery_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method, ratio and lr: large model, ticket init, random init, their per-seed gap."""
    out = []
    t = trials[trials.variant.isin(["ticket_init", "random_init"])]
    for (method, ratio, lr), g in t.groupby(["method", "prune_ratio", "lr"], sort=False):
        tick = g[g.variant == "ticket_init"].set_index("seed").test_acc
        rand = g[g.variant == "random_init"].set_index("seed").test_acc
        out.append({"method": method, "prune ratio": ratio, "lr": lr,
                    "large model": pm(baseline_of(trials, method, lr).test_acc),
                    "ticket init": pm(tick), "random init": pm(rand),
                    "ticket − random": pm((tick - rand).dropna())})
    return pd.DataFrame(out).sort_values(["method", "prune ratio", "lr"]) if out else pd.DataFrame()


def bar_plot(trials: pd.DataFrame, path: Path, lr: float) -> None:
    """Accuracy of baseline / fine-tuned / Scratch-E / Scratch-B per method (mean, sd bars)."""
    keep = ["baseline", "finetune", "scratch_e", "scratch_b"]
    rows = []
    for method in ("l1", "slimming", "unstructured"):
        pruned = trials[(trials.method == method) & (trials.variant != "baseline")]
        for ratio in sorted(pruned.prune_ratio.unique()):
            label = f"{method} {ratio:g}"
            part = trials[(trials.method == method) & (trials.prune_ratio == ratio)
                          & trials.variant.isin(keep[1:])]
            base = baseline_of(trials, method, lr).assign(variant="baseline")
            rows.append(pd.concat([base, part]).assign(group=label))
    if not rows:
        return
    df = pd.concat(rows)
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    sns.barplot(data=df, x="group", y="test_acc", hue="variant", hue_order=keep, errorbar="sd", ax=ax)
    lo = df.test_acc.min()
    ax.set_ylim(max(0.0, lo - 0.03), min(1.0, df.test_acc.max() + 0.02))
    ax.set(title="Fine-tuned pruned weights vs the pruned architecture trained from scratch",
           xlabel="method and prune ratio", ylabel="test accuracy")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def lottery_plot(lot: pd.DataFrame, path: Path) -> None:
    """Ticket vs random init per learning rate: one colour pair per pruning (mean, sd bars)."""
    lot = lot.assign(curve=lot.method + " " + lot.prune_ratio.map("{:g}".format) + ", "
                     + lot.variant.str.replace("_init", " init"), lr=lot.lr.map("{:g}".format))
    order = sorted(lot.curve.unique())
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    sns.pointplot(data=lot, x="lr", y="test_acc", hue="curve", hue_order=order, errorbar="sd",
                  dodge=0.3, palette=sns.color_palette("Paired", len(order)), ax=ax,
                  order=sorted(lot.lr.unique(), key=float))
    ax.set(title="Winning-ticket init vs random init of the pruned net",
           xlabel="learning rate (large model and retraining)", ylabel="test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cfg: RethinkConfig, rows: list[dict], scale: str, *, wall_s: float,
                 machine: str) -> Path:
    out = results_dir("rethinking_pruning", scale)
    setup_cols = {k: str(v) if isinstance(v, list) else v for k, v in flat_config(cfg.setup).items()}
    trials = write_trials([{**row, **setup_cols} for row in rows], out)
    lr0 = cfg.setup.train.lr
    s, ft = cfg.setup, cfg.finetune
    unit = "epochs" if s.train.epochs else "iterations"
    header = (
        f"# Rethinking the value of pruning: {s.model} on {s.dataset} ({scale} scale)\n\n"
        f"Large model: SGD lr {lr0} (momentum {s.train.momentum}, weight decay "
        f"{s.train.weight_decay}, lr ÷10 at 50% and 75%), batch {s.train.batch_size}, "
        f"{s.train.epochs or s.train.iterations} {unit}; the slimming baseline adds the BN-γ "
        f"penalty λ = {cfg.lam:g}. Pruning, one shot from the trained model: l1 removes each conv's "
        f"lowest-L1 filters, slimming the channels under one global |γ| threshold (each layer "
        f"keeps ≥ {cfg.min_keep}), unstructured each layer's smallest weights (masked, dense "
        f"shape). fine-tuned: the pruned weights, SGD lr {ft.lr} for "
        f"{ft.epochs or ft.iterations} {'epochs' if ft.epochs else 'iterations'}. Scratch-E: the "
        f"pruned architecture (or mask) from a random init, the large model's recipe. Scratch-B: "
        f"the same, epochs × min(cost ratio, {cfg.scratch_b_cap:g}); cost ratio = MACs large / "
        f"pruned (structured) or parameters / non-zero parameters (unstructured). Test accuracy "
        f"(%) of the final weights, mean ± sd over {cfg.seeds} seeds. params and MACs: pruned / "
        f"large; unstructured params count non-zero weights, its MACs are dense.\n\n")
    body = "## Fine-tuned vs trained from scratch\n\n" + markdown(scratch_table(trials, lr0))
    lot = lottery_table(trials)
    if len(lot):
        body += ("\n## Winning-ticket init vs random init\n\nThe large model is trained at `lr`, "
                 "pruned, and the pruned net retrained at the same `lr` and schedule from its "
                 "original init restricted to what was kept (ticket) or from a random init. At "
                 f"lr {lr0:g} random init is the Scratch-E run. ticket − random: mean ± sd of the "
                 "per-seed difference.\n\n" + markdown(lot))
    agg = aggregate(trials, BY, METRICS)
    full = mean_sd_table(agg, BY, METRICS, digits={"test_acc": 2, "params": 0, "macs": 0},
                         scale={"test_acc": 100})
    order = {v: i for i, v in enumerate(VARIANTS)}
    full = full.sort_values(["method", "prune_ratio", "variant", "lr"], kind="stable",
                            key=lambda c: c.map(order) if c.name == "variant" else c)
    body += "\n## Every trial group\n\n" + markdown(full.rename(columns={"test_acc": "test acc %"}))
    footer = (f"\nTrials: {len(trials)} rows ({trials.run.nunique()} distinct runs); summed "
              f"training time {trials.drop_duplicates('run').train_wall_s.sum():.0f} s; this "
              f"invocation {wall_s:.0f} s (finished trials are reused, not re-run).\n"
              f"Machine: {machine}.\n")
    atomic_write_text(out / "table.md", header + body + footer)

    bar_plot(trials, out / "finetune_vs_scratch.png", lr0)
    lot_rows = trials[trials.variant.isin(["ticket_init", "random_init"])].copy()
    if len(lot_rows):
        lottery_plot(lot_rows, out / "ticket_vs_random.png")
    return out
