"""Tables and figures of the feature-distillation experiment."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.common import Context
from experiments.feature_kd.config import METHODS
from experiments.provenance import footer_line
from lib.report import (aggregate, footer, markdown, mean_sd_table, recipe_text, save_figure,
                        write_table, write_trials)

ORDER = ("teacher", *METHODS)
FEATURE_NAMES = {"fitnet": "hint", "attention": "AT"}


def recipe(t: pd.Series) -> str:
    """What the row's student was trained on, from its weights: '0.1·CE + 0.9·KD(T=4) + 1000·AT'."""
    if t.method == "teacher":
        return "the teacher (its final weights)"
    terms = [f"{t.ce_weight:g}·CE" if t.ce_weight != 1 else "CE"]
    if t.kd_weight:
        terms.append(f"{t.kd_weight:g}·KD(T={t['T']:g})")
    if t.feature_weight:
        terms.append(f"{t.feature_weight:g}·{FEATURE_NAMES[t.feature]}")
    text = " + ".join(terms)
    if t.method.startswith("fitnet_2stage"):
        text = f"stage 1: hint on the lower layers; stage 2: {text}"
    return text


def paired_gain(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method and seed, test accuracy minus the student-alone accuracy of the same seed."""
    alone = trials[trials.method == "student"].set_index("seed").test_acc
    out = trials[~trials.method.isin(["teacher", "student"])].copy()
    out["gain"] = out.test_acc - out.seed.map(alone)
    return out


def write_report(ctx: Context, produced: tuple[list[dict], list[tuple[str, str]]]) -> Path:
    cfg, scale, out = ctx.cfg, ctx.scale, ctx.out
    rows, pairs = produced
    rows = [{"teacher": cfg.teacher.model, "student": cfg.setup.model, **row} for row in rows]
    trials = write_trials(rows, out, setup=cfg.setup)
    trials["recipe"] = trials.apply(recipe, axis=1)

    agg = aggregate(trials, ["method", "recipe"], ["test_acc", "at_gap"])
    table = mean_sd_table(agg, ["method", "recipe"], ["test_acc", "at_gap"],
                          digits={"at_gap": 4}, percent=["test_acc"])
    gains = paired_gain(trials)
    if "student" in set(trials.method):
        g = aggregate(gains, ["method"], ["gain"])
        table = table.merge(mean_sd_table(g, ["method"], ["gain"], percent=["gain"]).drop(columns="n"),
                            on="method", how="left").fillna("")
        table = table[["method", "recipe", "test_acc", "gain", "at_gap", "n"]]
    table = table.sort_values("method", key=lambda c: c.map({m: i for i, m in enumerate(ORDER)}))
    table = table.replace({"nan": ""}).rename(columns={
        "test_acc": "test acc %", "gain": "Δ vs student (points, paired by seed)",
        "at_gap": "attention gap to teacher"})

    s, h = cfg.setup, cfg.hint_train
    budget = lambda c: f"{c.epochs:g} epochs" if c.epochs else f"{c.iterations} iterations"  # noqa: E731
    t_row = trials[trials.method == "teacher"]
    header = (
        f"# Feature distillation: {cfg.teacher.model} → {s.model} on {s.dataset} ({scale} scale)\n\n"
        f"Teacher: {cfg.teacher.model}, trained once ({recipe_text(cfg.teacher.train)}), "
        f"shared with logit_kd and rkd; its row is its final weights, the ones distilled from. "
        f"Students: {s.model}, {recipe_text(s.train)}. FitNet two-stage adds a stage 1 of "
        f"{budget(h)} (hint loss alone, "
        f"layers up to the guided one plus the 1x1-conv regressor W_r; stage 2 starts from "
        f"those layers and W_r is dropped). **Selection rule:** each student is evaluated "
        f"{'every ' + str(s.train.eval_every) + ' steps' if s.train.eval_every else 'every epoch'}; "
        f"the reported test accuracy is the one at the evaluation with the best validation "
        f"accuracy ({s.val_size} images held out of train), never selected on test.\n\n"
        f"Layer pairs (student ← teacher, the stage outputs of equal spatial size): "
        f"{', '.join(f'`{a}` ← `{b}`' for a, b in pairs)}. AT uses them all; FitNet's hint is "
        f"the middle pair. Attention gap: the AT loss (Σ over the pairs of the mean squared "
        f"difference of normalised attention maps) between the trained student and the teacher "
        f"on {cfg.probe_size} test images. Mean ± sd over {cfg.seeds} seeds; Δ is paired by "
        f"seed (same init and batch order as the student-alone run).\n\n")
    students = trials[trials.method != "teacher"]
    # a stage 1 is shared by both two-stage methods of a seed: count it once
    hint_s = students[students.method.str.startswith("fitnet_2stage")].drop_duplicates(
        "seed")["hint_wall_s"].sum() if "hint_wall_s" in students else 0.0
    teacher_line = (f"\nTeacher test accuracy {t_row.test_acc.mean() * 100:.2f} % (n = 1), trained "
                    f"once and cached for every experiment; {len(students)} students.\n")
    note = (f" (of which the shared teacher {t_row.train_wall_s.sum():.0f} s; FitNet's stage-1 "
            f"runs add {hint_s:.0f} s)")
    write_table(out, header, markdown(table), teacher_line,
                footer(trials, footer_line(ctx.provenance(trials.run)), note=note))
    plot_accuracy(trials, out / "accuracy.png", f"{cfg.teacher.model} → {s.model} on {s.dataset}")
    plot_gap(trials, out / "attention_gap.png")
    return out


def plot_accuracy(trials: pd.DataFrame, path: Path, title: str) -> None:
    """Test accuracy per method (mean ± sd over seeds, seeds as dots); teacher and student lines."""
    students = trials[trials.method != "teacher"]
    order = [m for m in METHODS if m in set(students.method)]
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    sns.pointplot(data=students, y="method", x="test_acc", order=order, errorbar="sd",
                  linestyles="none", color="k", ax=ax)
    sns.stripplot(data=students, y="method", x="test_acc", order=order, hue="method",
                  palette="tab10", size=5, alpha=0.7, legend=False, ax=ax)
    for method, style in (("teacher", "--"), ("student", ":")):
        acc = trials[trials.method == method].test_acc
        if len(acc):
            ax.axvline(acc.mean(), color="grey", ls=style, label=f"{method} {acc.mean():.4f}")
    ax.set(title=f"{title}: test accuracy at the best validation point", xlabel="test accuracy",
           ylabel="")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, ax, path, legend=False)  # the legend stays inside, at lower right


def plot_gap(trials: pd.DataFrame, path: Path) -> None:
    """Does matching attention maps go with accuracy? Attention gap vs test accuracy per trial."""
    students = trials[trials.method != "teacher"]
    fig, ax = plt.subplots(figsize=(7.4, 4.4))
    sns.scatterplot(data=students, x="at_gap", y="test_acc", hue="method", style="method",
                    hue_order=[m for m in METHODS if m in set(students.method)], s=50, ax=ax)
    ax.set(title="Attention gap to the teacher (probe test images) vs test accuracy",
           xlabel="attention gap (AT loss to the teacher)", ylabel="test accuracy")
    save_figure(fig, ax, path)
