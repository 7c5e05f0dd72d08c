"""Tables and figures of the rkd experiment: accuracy and embedding structure per method."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from torch import Tensor

from experiments.claims import write_claims
from experiments.common import Context
from experiments.provenance import footer_line
from experiments.rkd.claims import CLAIMS
from experiments.rkd.config import METHODS
from experiments.rkd.layers import Layers
from experiments.rkd.structure import spearman
from lib.report import (aggregate, config_columns, footer, markdown, mean_sd, mean_sd_table,
                        recipe_text, save_figure, write_table, write_trials)
from lib.runs import atomic_write_text

STRUCTURE = ["dist_spearman", "angle_pearson", "rkd_d_loss", "knn_overlap", "recall_at_1"]
METRICS = ["test_acc", "delta_acc", *STRUCTURE]
SHORT = {"rkd_distance": "D", "rkd_angle": "A", "sp": "SP"}
ORDER = ["teacher", *METHODS]
LABELS = {"test_acc": "test acc %", "delta_acc": "Δ vs student (points)",
          "dist_spearman": "distance Spearman", "angle_pearson": "angle Pearson",
          "rkd_d_loss": "RKD-D loss", "knn_overlap": "kNN overlap", "recall_at_1": "recall@1 %"}


@dataclass
class Produced:
    """What the run hands the report: one row per trial (the teacher's first), the layers the
    terms read, the raw pixels' structure metrics, seed 0's pairwise distances per model, and the
    loss balance at initialisation."""

    rows: list[dict]
    layers: Layers
    pixels: dict[str, float]
    scatter: dict[str, Tensor]
    balance: list[dict]  # per seed: CE and each term on the untrained student


def with_delta(trials: pd.DataFrame) -> pd.DataFrame:
    """Adds `delta_acc`: a trial's test accuracy minus the student-alone one of the same seed."""
    alone = trials[trials.method == "student"].set_index("seed").test_acc
    out = trials.copy()
    out["delta_acc"] = [acc - alone.get(seed, math.nan) if m != "teacher" else math.nan
                        for m, seed, acc in zip(out.method, out.seed, out.test_acc)]
    return out


def write_report(ctx: Context, produced: Produced) -> Path:
    cfg, out, layers, pixels = ctx.cfg, ctx.out, produced.layers, produced.pixels
    setup_cols = {f"setup.{k}": v for k, v in config_columns(cfg.setup).items()}
    layer_cols = {f"{side}_{role}_layer": name for side, names in
                  (("student", layers.student), ("teacher", layers.teacher))
                  for role, name in names.items() if role != "logits"}
    trials = write_trials([{**row, **layer_cols, **setup_cols} for row in produced.rows], out)
    trials = with_delta(trials)

    agg = aggregate(trials, ["method"], METRICS)
    table = mean_sd_table(agg, ["method"], METRICS,
                          percent=["test_acc", "delta_acc", "recall_at_1"], digits={"dist_spearman": 3, "angle_pearson": 3, "rkd_d_loss": 4,
                                  "knn_overlap": 3})
    table = table.replace({"nan": ""})
    table["terms"] = table.method.map(lambda m: " + ".join(("CE", *METHODS[m])) if m in METHODS
                                      else "labels (shared teacher)")
    table = table.sort_values("method", key=lambda c: c.map(ORDER.index), kind="stable")
    by = trials.groupby("method")
    table["se2"] = table.method.map(by.delta_acc.apply(
        lambda d: f"{200 * d.std() / math.sqrt(len(d)):.2f}" if len(d) > 1 else "")).fillna("")
    table["balance"] = table.method.map(lambda m: balance(trials[trials.method == m], m))
    table["last"] = table.method.map(by.selected_last.apply(
        lambda v: f"{int(v.astype(bool).sum())} of {int(v.notna().sum())}" if v.notna().any()
        else "") if "selected_last" in trials else {}).fillna("")
    table = table[["method", "terms", "test_acc", "delta_acc", "se2", *STRUCTURE, "balance",
                   "last", "n"]].rename(
        columns={**LABELS, "knn_overlap": f"kNN overlap (k={cfg.knn_k})",
                 "se2": "2·se of Δ (points)", "balance": "w·term / CE, start → end",
                 "last": "selected at last eval"})

    s = cfg.setup
    header = (
        f"# Relational KD and SP: {s.teacher.model} → {s.model} on {s.dataset} ({ctx.scale} "
        f"scale)\n\n"
        f"Teacher: the shared {s.teacher.model} of `experiments.teachers` (one model, seed "
        f"{s.teacher.seed}; its row is its final weights). Students: {recipe_text(s.train)}. "
        f"Loss = CE on the labels + the listed terms: RKD distance ×"
        f"{s.w_distance:g} and angle ×{s.w_angle:g} on the penultimate embeddings (student "
        f"`{layers.student['embed']}`, teacher `{layers.teacher['embed']}`), SP ×{s.w_sp:g} on "
        f"the last conv features (`{layers.student['conv']}`, `{layers.teacher['conv']}`), KD "
        f"α = {s.kd_alpha:g} at T = {s.kd_T:g} (CE then weighted {1 - s.kd_alpha:g}). "
        f"Selection: each student's test accuracy is read at its evaluation with the "
        f"{'highest validation accuracy' if s.train.early_stop_on == 'val_acc' else 'lowest validation loss'}"
        f" (never selected on test); the structure metrics are measured at those "
        f"same weights on the first {cfg.struct_size} test images: Spearman correlation of the "
        f"student's and the teacher's pairwise distances, Pearson correlation of triplet-angle "
        f"cosines ({cfg.angle_size} images), the RKD distance loss (batches of "
        f"{cfg.loss_batch}), the overlap of the {cfg.knn_k} nearest neighbours, and "
        f"leave-one-out recall@1 of the labels. Δ is paired by seed. Mean ± sd over seeds. "
        f"2·se of Δ: twice the standard error of the paired difference, sd(Δ)/√n, the "
        f"smallest gain the verdict rule counts as real with these seeds (and the largest "
        f"loss it still calls no loss). w·term / CE: each weighted relational term over the "
        f"label cross-entropy, means over the first and the last evaluation interval "
        f"(trials.csv: `ratio_<term>_start`, `_end`).\n\n")
    reference = (f"\nReference, the raw pixels against the teacher: distance Spearman "
                 f"{pixels['dist_spearman']:.3f}, angle Pearson {pixels['angle_pearson']:.3f}, "
                 f"RKD-D loss {pixels['rkd_d_loss']:.4f}, kNN overlap "
                 f"{pixels['knn_overlap']:.3f}, recall@1 {100 * pixels['recall_at_1']:.2f}.\n")
    t_wall = trials[trials.method == "teacher"].train_wall_s.sum()
    note = f" over {len(trials) - 1} students and the shared teacher (the teacher: {t_wall:.0f} s)"
    write_table(out, header, markdown(table), reference,
                footer(trials, footer_line(ctx.provenance(trials.run)), note=note))
    write_balance(out, produced.balance, ctx.scale)
    write_claims(CLAIMS, trials, out, f"relational KD and SP ({ctx.scale} scale)")

    students = trials[trials.method != "teacher"]
    order = [m for m in METHODS if m in set(students.method)]
    accuracy_plot(students, trials, order, out / "accuracy.png")
    structure_plot(students, order, pixels, out / "structure.png")
    distance_plot(produced.scatter, out / "distances.png")
    return out


def balance(rows: pd.DataFrame, method: str) -> str:
    """'start → end' of each relational term's w·term / CE, mean over the method's trials."""
    parts = []
    for term in METHODS.get(method, ()):
        start, end = f"ratio_{term}_start", f"ratio_{term}_end"
        if term != "kd" and start in rows and rows[start].notna().any():
            parts.append(f"{SHORT[term]} {rows[start].mean():.2f} → {rows[end].mean():.2f}")
    return "; ".join(parts)


def write_balance(out: Path, rows: list[dict], scale: str) -> None:
    """balance.md: the CE and each term on the untrained students (the weights' measurement)."""
    b = pd.DataFrame(rows)
    lines = []
    for term in ("rkd_distance", "rkd_angle", "sp", "kd"):
        w = b[f"weight_{term}"]
        lines.append({"term": term, "value at init": mean_sd(b[term], 4), "weight": f"{w.iloc[0]:g}",
                      "w·term / CE": mean_sd(w * b[term] / b.ce, 2)})
    text = (f"# Loss balance at initialisation ({scale} scale)\n\n"
            f"The label cross-entropy and each distillation term (unweighted) on the untrained "
            f"student (train mode, as at the first step) and the teacher, averaged over the "
            f"first 8 training batches of 128; mean ± sd over {len(b)} seeds. CE = "
            f"{mean_sd(b.ce, 3)}. The default scale's relational weights are CE / term, rounded "
            f"to one significant digit; KD keeps Hinton's mix, α = 0.9 (its weight here).\n\n"
            + markdown(pd.DataFrame(lines)))
    atomic_write_text(out / "balance.md", text)


def accuracy_plot(students: pd.DataFrame, trials: pd.DataFrame, order: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    sns.pointplot(data=students, y="method", x="test_acc", order=order, errorbar="sd",
                  linestyle="none", capsize=0.3, ax=ax, color="C0")
    sns.stripplot(data=students, y="method", x="test_acc", order=order, ax=ax, color="0.5",
                  size=3, alpha=0.6)
    for method, color in (("teacher", "C3"), ("student", "C2")):
        acc = trials[trials.method == method].test_acc.mean()
        ax.axvline(acc, color=color, ls="--", lw=1, label=f"{method} {100 * acc:.2f}%")
    ax.set(title="Test accuracy per method (mean ± sd over seeds, dots: seeds)",
           xlabel="test accuracy (best-validation point)", ylabel="")
    ax.legend()
    save_figure(fig, ax, path)


def structure_plot(students: pd.DataFrame, order: list[str], pixels: dict, path: Path) -> None:
    metrics = ["dist_spearman", "angle_pearson", "knn_overlap", "recall_at_1"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(13, 4.2), sharey=True)
    for ax, m in zip(axes, metrics):
        sns.pointplot(data=students, y="method", x=m, order=order, errorbar="sd",
                      linestyle="none", capsize=0.3, ax=ax, color="C0")
        ax.axvline(pixels[m], color="0.5", ls=":", lw=1, label="raw pixels")
        ax.set(xlabel=LABELS[m].replace(" %", ""), ylabel="")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle("How much of the teacher's embedding structure each student keeps (test sample)")
    save_figure(fig, axes[0], path, legend=False)  # the legend stays inside the first panel


def distance_plot(scatter: dict, path: Path) -> None:
    """Student vs teacher normalised pairwise distances (seed 0), one panel per method."""
    teacher = scatter["teacher"].float()
    methods = [m for m in scatter if m != "teacher"]
    cols = min(5, max(1, len(methods)))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.9 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax, m in zip(axes.flat, methods):
        s = scatter[m].float()
        ax.scatter(teacher, s, s=2, alpha=0.25, lw=0)
        hi = float(max(teacher.max(), s.max()))
        ax.plot([0, hi], [0, hi], color="C3", lw=0.8)
        ax.set_title(f"{m}  ρ={spearman(s, teacher):.3f}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(methods):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("teacher distance / mean")
    for ax in axes[:, 0]:
        ax.set_ylabel("student distance / mean")
    fig.suptitle("Pairwise distances on test images, student vs teacher (seed 0, normalised "
                 "by the mean as in RKD)", fontsize=10)
    save_figure(fig, axes[0, 0], path, legend=False)

