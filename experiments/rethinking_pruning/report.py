"""Tables and figures of the rethinking-pruning experiment.

table.md has four parts: fine-tuned vs Scratch-E vs Scratch-B per method and ratio (the
paper's Tables 1-4), winning-ticket vs random init per learning rate (its Section 6), what the
init scale alone does (Scratch-E's fresh init of the pruned architecture vs a random init with
the ticket's scale), and every (method, ratio, variant, lr, epochs) group in full. Accuracies are
in %, mean ± sd over seeds. claims.md / claims.csv judge the paper's claims
(experiments/rethinking_pruning/claims.py).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.claims import write_claims
from experiments.common import Context
from experiments.provenance import footer_line
from experiments.rethinking_pruning.claims import CLAIMS
from lib.report import (aggregate, footer, markdown, mean_sd, mean_sd_table, recipe_text,
                        save_figure, write_table, write_trials)

VARIANTS = ("baseline", "baseline_long", "pruned", "finetune", "scratch_e", "scratch_b", "ticket_init", "random_init")
BY = ["method", "prune_ratio", "variant", "lr", "epochs"]
METRICS = ["test_acc", "params", "macs"]


def pm(accuracies: pd.Series) -> str:
    """'mean ± sd' of accuracies, in %."""
    return mean_sd(accuracies, digits=2, k=100.0)


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
        long = trials[(trials.variant == "baseline_long") & (trials.lr == lr)]
        if len(long) and method != "slimming":  # the large model for the same longest budget
            out[-1]["large model, Scratch-B's epochs"] = (f"{pm(long.test_acc)} "
                                                          f"({long.epochs.mean():.3g})")
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


def init_scale_table(trials: pd.DataFrame, lr: float) -> pd.DataFrame:
    """At the large model's `lr`, per structured method and ratio: the ticket, a random init with
    the ticket's per-layer scale, and Scratch-E's fresh init of the pruned architecture, with the
    mean std of their initial conv weights; scratch − random is the init scale's effect."""
    out = []
    at = trials[(trials.lr == lr) & (trials.method != "unstructured")]
    for (method, ratio), g in at[at.variant.isin(["ticket_init", "random_init", "scratch_e"])] \
            .groupby(["method", "prune_ratio"], sort=False):
        v = {k: x.set_index("seed") for k, x in g.groupby("variant")}
        if not {"ticket_init", "random_init", "scratch_e"} <= set(v):
            continue
        row = {"method": method, "prune ratio": ratio}
        for name, label in (("ticket_init", "ticket"), ("random_init", "random init"),
                            ("scratch_e", "Scratch-E")):
            row[f"{label} init std"] = f"{v[name].init_std.mean():.3f}"
            row[f"{label} acc"] = pm(v[name].test_acc)
        row["Scratch-E − random"] = pm((v["scratch_e"].test_acc - v["random_init"].test_acc).dropna())
        out.append(row)
    return pd.DataFrame(out)


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
    save_figure(fig, ax, path)


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
    save_figure(fig, ax, path)


def write_report(ctx: Context, rows: list[dict]) -> Path:
    """trials.csv, table.md (four parts, see the module docstring), claims and the plots."""
    cfg, out = ctx.cfg, ctx.out
    trials = write_trials(rows, out, setup=cfg.setup)
    s, lr0 = cfg.setup, cfg.setup.train.lr
    header = (
        f"# Rethinking the value of pruning: {s.model} on {s.dataset} ({ctx.scale} scale)\n\n"
        f"Large model: {recipe_text(s.train)}; the slimming baseline "
        f"adds the BN-γ penalty λ = {cfg.lam:g}. Pruning, one shot from the trained model: l1 "
        f"removes each conv's lowest-L1 filters, slimming the channels under one global |γ| "
        f"threshold (each layer keeps ≥ {cfg.min_keep}), unstructured each layer's smallest "
        f"weights (masked, dense shape). fine-tuned: the pruned weights, "
        f"{recipe_text(cfg.finetune)}. Scratch-E: the "
        f"pruned architecture (or mask) from a fresh init, the large model's recipe. Scratch-B: "
        f"the same, epochs × min(cost ratio, {cfg.scratch_b_cap:g}); cost ratio = MACs large / "
        f"pruned (structured) or parameters / non-zero parameters (unstructured). Test accuracy "
        f"(%) of the final weights, mean ± sd over {cfg.seeds} seeds. params and MACs: pruned / "
        f"large; unstructured params count non-zero weights, its MACs are dense.\n\n")
    scratch = scratch_table(trials, lr0)  # empty in a lottery-only run (--methods none)
    body = ("## Fine-tuned vs trained from scratch\n\n" + markdown(scratch) + "\n") if len(scratch) else ""
    lot = lottery_table(trials)
    if len(lot):
        body += ("## Winning-ticket init vs random init\n\nThe large model is trained at `lr`, "
                 "pruned, and the pruned net retrained at the same `lr` and schedule from its "
                 "original init restricted to what was kept (ticket) or from a fresh init of the large "
                 "model restricted the same way (random: the ticket's per-layer init scale). At "
                 f"lr {lr0:g} the unstructured random init is the Scratch-E run. ticket − random: "
                 "mean ± sd of the per-seed difference.\n\n" + markdown(lot))
    scale = init_scale_table(trials, lr0)
    if len(scale):
        body += ("\n## Init scale alone (structured pruning, lr " f"{lr0:g})\n\nThe random init "
                 "is a fresh init of the large model cut to the kept filters, so its per-layer "
                 "scale is the ticket's; Scratch-E starts from a fresh init of the smaller "
                 "architecture (Kaiming fan-out: 1/√(out channels), so larger filters at half "
                 "width). init std: mean over conv layers of the std of the initial weights. "
                 "Scratch-E − random: mean ± sd of the per-seed difference, the effect of the "
                 "init scale alone.\n\n" + markdown(scale))
    agg = aggregate(trials, BY, METRICS)
    full = mean_sd_table(agg, BY, METRICS, digits={"params": 0, "macs": 0}, percent=["test_acc"])
    order = {v: i for i, v in enumerate(VARIANTS)}
    full = full.sort_values(["method", "prune_ratio", "variant", "lr"], kind="stable",
                            key=lambda c: c.map(order) if c.name == "variant" else c)
    body += "\n## Every trial group\n\n" + markdown(full.rename(columns={"test_acc": "test acc %"}))
    # a run shared by two rows (random init at lr0 is Scratch-E) is counted once
    runs = trials.drop_duplicates("run")
    note = f" ({len(trials)} table rows: a run that two rows share counts once)"
    write_table(out, header, body, footer(runs, footer_line(ctx.provenance(trials.run)), note))

    write_claims(CLAIMS, trials, out, f"Liu et al. 2019, {s.model} on {s.dataset} ({ctx.scale})")
    bar_plot(trials, out / "finetune_vs_scratch.png", lr0)
    lot_rows = trials[trials.variant.isin(["ticket_init", "random_init"])].copy()
    if len(lot_rows):
        lottery_plot(lot_rows, out / "ticket_vs_random.png")
    return out
