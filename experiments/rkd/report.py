"""Tables and figures of the rkd experiment: accuracy and embedding structure per method."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd
import seaborn as sns  # noqa: E402

from experiments.rkd.config import METHODS, RKDConfig
from lib.report import aggregate, markdown, mean_sd_table, results_dir, write_trials
from lib.runs import atomic_write_text, flat_config

STRUCTURE = ["dist_spearman", "angle_pearson", "rkd_d_loss", "knn_overlap", "recall_at_1"]
METRICS = ["test_acc", "delta_acc", *STRUCTURE]
ORDER = ["teacher", *METHODS]
LABELS = {"test_acc": "test acc %", "delta_acc": "Δ vs student (points)",
          "dist_spearman": "distance Spearman", "angle_pearson": "angle Pearson",
          "rkd_d_loss": "RKD-D loss", "knn_overlap": "kNN overlap", "recall_at_1": "recall@1 %"}


def with_delta(trials: pd.DataFrame) -> pd.DataFrame:
    """Adds `delta_acc`: a trial's test accuracy minus the student-alone one of the same seed."""
    alone = trials[trials.method == "student"].set_index("seed").test_acc
    out = trials.copy()
    out["delta_acc"] = [acc - alone.get(seed, math.nan) if m != "teacher" else math.nan
                        for m, seed, acc in zip(out.method, out.seed, out.test_acc)]
    return out


def write_report(cfg: RKDConfig, rows: list[dict], scale: str, *, wall_s: float, machine: str,
                 layers, pixels: dict, scatter: dict) -> Path:
    out = results_dir("rkd", scale)
    setup_cols = {f"setup.{k}": str(v) if isinstance(v, list) else v
                  for k, v in flat_config(cfg.setup).items()}
    layer_cols = {f"{side}_{role}_layer": name for side, names in
                  (("student", layers.student), ("teacher", layers.teacher))
                  for role, name in names.items() if role != "logits"}
    trials = write_trials([{**row, **layer_cols, **setup_cols} for row in rows], out)
    trials = with_delta(trials)

    agg = aggregate(trials, ["method"], METRICS)
    table = mean_sd_table(agg, ["method"], METRICS,
                          digits={"test_acc": 2, "delta_acc": 2, "dist_spearman": 3,
                                  "angle_pearson": 3, "rkd_d_loss": 4, "knn_overlap": 3,
                                  "recall_at_1": 2},
                          scale={"test_acc": 100, "delta_acc": 100, "recall_at_1": 100})
    table = table.replace({"nan": ""})
    table["terms"] = table.method.map(lambda m: " + ".join(("CE", *METHODS[m])) if m in METHODS
                                      else "labels (shared teacher)")
    table = table.sort_values("method", key=lambda c: c.map(ORDER.index), kind="stable")
    table = table[["method", "terms", *METRICS, "n"]].rename(
        columns={**LABELS, "knn_overlap": f"kNN overlap (k={cfg.knn_k})"})

    s = cfg.setup
    t = s.train
    budget = f"{t.epochs:g} epochs" if t.epochs else f"{t.iterations} iterations"
    header = (
        f"# Relational KD and SP: {s.teacher.model} → {s.model} on {s.dataset} ({scale} scale)\n\n"
        f"Teacher: the shared {s.teacher.model} of `experiments.teachers` (one model, seed "
        f"{s.teacher.seed}; its row is its final weights). Students: {t.optimizer} lr {t.lr}, "
        f"momentum {t.momentum}, weight decay {t.weight_decay}, batch {t.batch_size}, {budget}, "
        f"{t.schedule} schedule. Loss = CE on the labels + the listed terms: RKD distance ×"
        f"{s.w_distance:g} and angle ×{s.w_angle:g} on the penultimate embeddings (student "
        f"`{layers.student['embed']}`, teacher `{layers.teacher['embed']}`), SP ×{s.w_sp:g} on "
        f"the last conv features (`{layers.student['conv']}`, `{layers.teacher['conv']}`), KD "
        f"α = {s.kd_alpha:g} at T = {s.kd_T:g} (CE then weighted {1 - s.kd_alpha:g}). "
        f"Selection: each student's test accuracy is read at its evaluation with the lowest "
        f"validation loss (never selected on test); the structure metrics are measured at those "
        f"same weights on the first {cfg.struct_size} test images: Spearman correlation of the "
        f"student's and the teacher's pairwise distances, Pearson correlation of triplet-angle "
        f"cosines ({cfg.angle_size} images), the RKD distance loss (batches of "
        f"{cfg.loss_batch}), the overlap of the {cfg.knn_k} nearest neighbours, and "
        f"leave-one-out recall@1 of the labels. Δ is paired by seed. Mean ± sd over seeds.\n\n")
    footer = (f"\nReference, the raw pixels against the teacher: distance Spearman "
              f"{pixels['dist_spearman']:.3f}, angle Pearson {pixels['angle_pearson']:.3f}, RKD-D "
              f"loss {pixels['rkd_d_loss']:.4f}, kNN overlap {pixels['knn_overlap']:.3f}, recall@1 "
              f"{100 * pixels['recall_at_1']:.2f}.\n"
              f"\nTrials: {len(trials) - 1} students + the teacher; summed student training "
              f"time {trials[trials.method != 'teacher'].train_wall_s.sum():.0f} s; this "
              f"invocation {wall_s:.0f} s (finished trials and the teacher are reused, not "
              f"re-run).\nMachine: {machine}.\n")
    atomic_write_text(out / "table.md", header + markdown(table) + footer)

    students = trials[trials.method != "teacher"]
    order = [m for m in METHODS if m in set(students.method)]
    accuracy_plot(students, trials, order, out / "accuracy.png")
    structure_plot(students, order, pixels, out / "structure.png")
    distance_plot(scatter, out / "distances.png")
    return out


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
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    _save(fig, path)


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
    _save(fig, path)


def distance_plot(scatter: dict, path: Path) -> None:
    """Student vs teacher normalised pairwise distances (seed 0), one panel per method."""
    from experiments.rkd.structure import spearman

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
    for ax in axes.flat[len(methods):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("teacher distance / mean")
    for ax in axes[:, 0]:
        ax.set_ylabel("student distance / mean")
    fig.suptitle("Pairwise distances on test images, student vs teacher (seed 0, normalised "
                 "by the mean as in RKD)", fontsize=10)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
