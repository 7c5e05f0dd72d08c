"""Tables and figures of the feature-distillation experiment, and its claims."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.claims import write_claims
from experiments.common import Context
from experiments.feature_kd.claims import CLAIMS
from experiments.feature_kd.config import METHODS, RECIPES
from experiments.feature_kd.layers import Produced
from experiments.provenance import footer_line
from lib.report import (aggregate, footer, markdown, mean_sd, mean_sd_table, recipe_text,
                        save_figure, write_table, write_trials)
from lib.runs import atomic_write_text

ORDER = ("teacher", *METHODS)
FEATURE_NAMES = {"fitnet": "hint", "attention": "AT", "fsp": "FSP"}


def recipe(t: pd.Series) -> str:
    """What the row's student was trained on, from its weights: '0.1·CE + 0.9·KD(T=4) + 50·AT'."""
    if t.method == "teacher":
        return "the teacher (its final weights)"
    terms = [f"{t.ce_weight:g}·CE" if t.ce_weight != 1 else "CE"]
    if t.kd_weight:
        terms.append(f"{t.kd_weight:g}·KD(T={t['T']:g})")
    if t.feature_weight:
        terms.append(f"{t.feature_weight:g}·{FEATURE_NAMES[t.feature]}")
    text = " + ".join(terms)
    if RECIPES[t.method].two_stage:
        first = {"fitnet": f"hint ({t.regressor} W_r)", "fsp": "FSP matrices"}[RECIPES[t.method].feature]
        text = f"stage 1: {first} on the lower layers; stage 2: {text}"
    return text


def balance(rows: pd.DataFrame) -> str:
    """'start → end': a method's feature-term w·term / CE, mean over its trials ('' without)."""
    r = rows.iloc[0]
    start, end = f"ratio_{r.feature}_start", f"ratio_{r.feature}_end"
    if not r.feature_weight or start not in rows:
        return ""
    return f"{rows[start].mean():.2f} → {rows[end].mean():.2f}"


def paired_gain(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method and seed, test accuracy minus the student-alone accuracy of the same seed."""
    alone = trials[trials.method == "student"].set_index("seed").test_acc
    out = trials[~trials.method.isin(["teacher", "student"])].copy()
    out["gain"] = out.test_acc - out.seed.map(alone)
    return out


def write_report(ctx: Context, produced: Produced) -> Path:
    cfg, scale, out, pairs = ctx.cfg, ctx.scale, ctx.out, produced.pairs
    rows = [{"teacher": cfg.teacher.model, "student": cfg.setup.model, **row} for row in produced.rows]
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
    else:
        table["gain"] = ""
    by = trials.groupby("method")
    table["balance"] = table.method.map(by.apply(balance)).fillna("")
    table["last"] = table.method.map(by.selected_last.apply(
        lambda v: f"{int(v.astype(bool).sum())} of {int(v.notna().sum())}" if v.notna().any() else ""))
    table = table[["method", "recipe", "test_acc", "gain", "at_gap", "balance", "last", "n"]]
    table = table.sort_values("method", key=lambda c: c.map({m: i for i, m in enumerate(ORDER)}))
    table = table.replace({"nan": ""}).rename(columns={
        "test_acc": "test acc %", "gain": "Δ vs student (points, paired by seed)",
        "at_gap": "attention gap to teacher", "balance": "w·term / CE, start → end",
        "last": "selected at last eval"})

    s, h = cfg.setup, cfg.hint_train
    budget = lambda c: f"{c.epochs:g} epochs" if c.epochs else f"{c.iterations} iterations"  # noqa: E731
    t_row = trials[trials.method == "teacher"]
    header = (
        f"# Feature distillation: {cfg.teacher.model} → {s.model} on {s.dataset} ({scale} scale)\n\n"
        f"Teacher: {cfg.teacher.model}, trained once ({recipe_text(cfg.teacher.train)}), "
        f"shared with logit_kd and rkd; its row is its final weights, the ones distilled from. "
        f"Students: {s.model}, {recipe_text(s.train)}. Two-stage methods (FitNet, FSP) add a "
        f"stage 1 of {budget(h)}: "
        f"their feature loss alone, on the layers it reads and those below (plus FitNet's "
        f"regressor W_r or FSP's width adapters); stage 2 starts from those layers, the rest at "
        f"the seed's initialisation, and drops W_r / the adapters. **Selection rule:** each "
        f"student is evaluated "
        f"{'every ' + str(s.train.eval_every) + ' steps' if s.train.eval_every else 'every epoch'}; "
        f"the reported test accuracy is the one at the evaluation with the best validation "
        f"accuracy ({s.val_size} images held out of train), never selected on test.\n\n"
        f"Layer pairs (student ← teacher, stage outputs of equal spatial size): FitNet's hint "
        f"`{pairs.hint[0]}` ← `{pairs.hint[1]}`; AT (student side at least {cfg.at_min_depth} "
        f"convs deep) {_pairs(pairs.attention)}; FSP (flows between consecutive stages) "
        f"{_pairs(pairs.fsp)}. Attention gap: the AT loss over AT's pairs between the trained "
        f"student and the teacher on {cfg.probe_size} test images. w·term / CE: the weighted "
        f"feature term over the label cross-entropy, means over the first and the last "
        f"evaluation interval (trials.csv: `ratio_<term>_start`, `_end`, every term). Mean ± sd "
        f"over {cfg.seeds} seeds; Δ is paired by seed (same init and batch order as the "
        f"student-alone run).\n\n")
    students = trials[trials.method != "teacher"]
    # a stage 1 is shared by both two-stage methods of a family and seed: count it once
    family = students.method.str.split("+").str[0]
    hint_s = (students.assign(family=family)[students.method.map(lambda m: RECIPES[m].two_stage)]
              .drop_duplicates(["family", "seed"])["hint_wall_s"].sum()
              if "hint_wall_s" in students else 0.0)
    teacher_line = (f"\nTeacher test accuracy {t_row.test_acc.mean() * 100:.2f} % (n = 1), trained "
                    f"once and cached for every experiment; {len(students)} students.\n")
    note = (f" (of which the shared teacher {t_row.train_wall_s.sum():.0f} s; the two-stage "
            f"methods' stage-1 runs add {hint_s:.0f} s)")
    write_table(out, header, markdown(table), teacher_line,
                footer(trials, footer_line(ctx.provenance(trials.run)), note=note))
    write_balance(out, produced.balance, scale)
    write_claims(CLAIMS, trials, out, f"feature distillation ({scale} scale)")
    plot_accuracy(trials, out / "accuracy.png", f"{cfg.teacher.model} → {s.model} on {s.dataset}")
    plot_gap(trials, out / "attention_gap.png")
    return out


def _pairs(pairs) -> str:
    return ", ".join(f"`{a}` ← `{b}`" for a, b in pairs)


def write_balance(out: Path, rows: list[dict], scale: str) -> None:
    """balance.md: the CE and each term on the untrained students (the weights' measurement)."""
    b = pd.DataFrame(rows)
    names = {"fitnet": "FitNet hint (one stage)", "attention": "AT", "fsp": "FSP (stage 1 only)",
             "kd": "KD (T² · KL)"}
    lines = []
    for term, name in names.items():
        w = b.get(f"weight_{term}")
        weighted = "" if w is None else mean_sd(w * b[term] / b.ce, 2)
        lines.append({"term": name, "value at init": mean_sd(b[term], 4),
                      "weight": "" if w is None else f"{w.iloc[0]:g}", "w·term / CE": weighted})
    text = (f"# Loss balance at initialisation ({scale} scale)\n\n"
            f"The label cross-entropy and each distillation term (unweighted) on the untrained "
            f"student (train mode, as at the first step) and the teacher, for the first "
            f"1024 training images; mean ± sd over {len(b)} seeds. CE = {mean_sd(b.ce, 3)}. "
            f"The default scale's one-stage weights are CE / term, rounded to one significant "
            f"digit (KD keeps Hinton's mix α = 0.9; the two-stage methods train their term "
            f"alone in stage 1, so no weight applies).\n\n" + markdown(pd.DataFrame(lines)))
    atomic_write_text(out / "balance.md", text)


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
