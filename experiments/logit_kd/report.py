"""Tables and figures of the logit-distillation experiment."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.claims import write_claims
from experiments.common import Context
from experiments.logit_kd.claims import CLAIMS, refinery_kept
from experiments.provenance import footer_line
from lib.report import (aggregate, footer, markdown, mean_sd_table, recipe_text, save_figure,
                        write_table, write_trials)

BY = ["method", "teacher", "student", "generation"]
ORDER = ("teacher", "student", "kd", "dml", "ban", "ban_ensemble", "lr", "lr_stop_rule", "ta_kd")


def refinery_stop_rule(trials: pd.DataFrame) -> pd.DataFrame:
    """The lr_stop_rule rows: per seed, the generation Label Refinery's stop rule keeps."""
    out = refinery_kept(trials)
    if len(out):  # one table row whatever generation each seed kept
        out["kept"] = out.generation.astype(int)
        out["method"] = "lr_stop_rule"
        out["teacher"] = f"generation kept per seed: {', '.join(map(str, out.kept))}"
        out["generation"] = float("nan")
    return out


def matching(trials: pd.DataFrame, key: pd.Series) -> pd.DataFrame:
    """The trials of the table row `key` (same BY columns; a NaN matches NaN)."""
    sel = trials
    for c in BY:
        sel = sel[sel[c].isna() if pd.isna(key[c]) else sel[c] == key[c]]
    return sel


def paired_delta(trials: pd.DataFrame, table_rows: pd.DataFrame) -> list[str]:
    """Per table row: mean ± sd over seeds of (its test acc − the same model's student alone),
    in points; blank for a model trained only as an assistant (no student-alone row)."""
    students = trials[trials.method == "student"]
    out = []
    for _, key in table_rows.iterrows():
        sel = matching(trials, key)
        alone = students[students.student == key.student].set_index("seed").test_acc
        if key.method in ("teacher", "student") or not len(alone):
            out.append("")
            continue
        d = 100 * (sel.test_acc.to_numpy() - alone.loc[sel.seed].to_numpy())
        out.append(f"{d.mean():+.2f} ± {d.std(ddof=1):.2f}" if len(d) > 1 else f"{d.mean():+.2f}")
    return out


def balance(trials: pd.DataFrame, table_rows: pd.DataFrame) -> list[str]:
    """Per table row: 'start → end', the mean over its trials of each logged distillation term's
    w·term / CE (trials.csv `ratio_<term>_start`, `_end`); blank where none is logged (the
    student alone, the ensemble, Label Refinery, which has no label term)."""
    terms = [c.removeprefix("ratio_").removesuffix("_start") for c in trials
             if c.startswith("ratio_") and c.endswith("_start")]
    out = []
    for _, key in table_rows.iterrows():
        sel = matching(trials, key)
        out.append("; ".join(f"{sel[f'ratio_{t}_start'].mean():.2f} → {sel[f'ratio_{t}_end'].mean():.2f}"
                             for t in terms if sel[f"ratio_{t}_start"].notna().any()))
    return out


def fit(trials: pd.DataFrame, table_rows: pd.DataFrame) -> list[str]:
    """Per table row: the mean over its trials of `train_acc` (the selected weights' accuracy on
    the training set), in %; blank where none was logged (the ensemble, the stop-rule row, DML,
    and trials trained before the lab logged it)."""
    out = []
    for _, key in table_rows.iterrows():
        acc = matching(trials, key).get("train_acc", pd.Series(dtype=float)).dropna()
        out.append(f"{100 * acc.mean():.2f}" if len(acc) else "")
    return out


def selection(setup) -> str:
    """The header's sentence on which weights a trial reports and hands down."""
    if setup.select == "final":
        return ("**Selection: each accuracy is the test accuracy of the final weights, at the end "
                "of the schedule (no early stop, no selection on validation); those weights are "
                "what a chain passes on.**")
    return ("**Selection: each accuracy is the test accuracy at the evaluation with the lowest "
            "validation loss (never selected on test); those weights are what a chain passes on.**")


def write_report(ctx: Context, rows: list[dict]) -> Path:
    cfg, scale, out = ctx.cfg, ctx.scale, ctx.out
    trials = write_trials(rows, out, setup=cfg.setup)
    trials["teacher"] = trials["teacher"].fillna("")
    if "improved" not in trials:
        trials["improved"] = pd.NA
    full = pd.concat([trials, refinery_stop_rule(trials)], ignore_index=True)

    agg = aggregate(full, BY, ["test_acc"])
    table = mean_sd_table(agg, BY, ["test_acc"], percent=["test_acc"])
    rank = {m: i for i, m in enumerate(ORDER)}
    table = table.sort_values(["method", "generation"], key=lambda c: c.map(rank) if
                              c.name == "method" else c, kind="stable").reset_index(drop=True)
    table.insert(5, "Δ vs alone (pts)", paired_delta(full, table))
    table.insert(6, "w·term / CE, start → end", balance(full, table))
    has_fit = "train_acc" in trials and trials.train_acc.notna().any()  # trials since it was logged
    if has_fit:
        table.insert(5, "train acc %", fit(full, table))
    table = table.rename(columns={"test_acc": "test acc %"})

    s, t = cfg.setup, cfg.teacher
    header = (
        f"# Logit distillation: {t.model} -> {s.model} on {s.dataset} ({scale} scale)\n\n"
        f"Every student: {recipe_text(s.train)}. Teacher ({t.model}, seed {t.seed}, trained "
        f"once and shared): {recipe_text(t.train)}; its row is the test accuracy of the "
        f"final weights the students learn from. KD, Born-Again (ban) and TA-KD use "
        f"`α·T²·KL + (1 − α)·CE` with α = {cfg.alpha}, T = {cfg.T}; Label Refinery (lr) trains "
        f"on softmax(previous generation) only; DML trains {cfg.dml_peers} peers together "
        f"(simultaneous updates; one row per peer, so n = peers × seeds). Generation 0 of ban "
        f"and lr is the student alone. lr_stop_rule: per seed, the last refinement that "
        f"improved validation accuracy (at most {cfg.refinery_max}). TA-KD: the smaller "
        f"{cfg.ta_student} alone (student), by KD from the teacher (kd) and through the assistant "
        f"({cfg.assistant or s.model}, its kd trial; ta_kd generation 2). {selection(s)} Δ: paired by seed against the "
        f"student alone. w·term / CE: the weighted distillation term (α·T²·KL; DML: the "
        f"peers' mimicry KL) over the unweighted label cross-entropy, means over the first and the last "
        f"evaluation interval, averaged over the row's trials (trials.csv: `ratio_<term>_start`, "
        f"`_end`); none for Label Refinery, which has no label term. Mean ± sd over seeds."
        + (" train acc %: the selected weights' accuracy on the training set (unaugmented), "
           "mean over the row's trials: how much of its training set a network fits, and so "
           "how many of the soft targets it hands down name another class than the label."
           if has_fit else "") + "\n\n")
    teacher_s = trials.loc[trials.method == "teacher", "train_wall_s"].sum()
    note = (f" (of which the shared teacher {teacher_s:.0f} s, trained once for logit_kd, "
            f"feature_kd and rkd)")
    write_table(out, header, markdown(table),
                footer(trials, footer_line(ctx.provenance(trials.run)), note=note))
    write_claims(CLAIMS, trials, out, f"logit distillation ({scale} scale)")
    method_plot(full, out / "accuracy_per_method.png", f"{t.model} -> {s.model}, {s.dataset}")
    generation_plot(trials, out / "accuracy_per_generation.png")
    return out


def method_plot(full: pd.DataFrame, path: Path, title: str) -> None:
    """Test accuracy per method (each generation its own point), mean and sd over seeds."""
    df = full.copy()
    student = df[df.method == "student"].student.iloc[0]

    def label(r) -> str:
        plain = r.method in ("teacher", "student", "kd", "dml") or pd.isna(r.generation)
        name = r.method if plain else f"{r.method} g{int(r.generation)}"
        return name if r.student == student or r.method == "teacher" else f"{name} ({r.student})"

    df["label"] = df.apply(label, axis=1)
    order = sorted(df.label.unique(), key=lambda lab: (ORDER.index(lab.split(" ")[0]), lab))
    fig, ax = plt.subplots(figsize=(8.4, 4.6))
    sns.pointplot(data=df, x="label", y="test_acc", order=order, errorbar="sd", linestyles="none",
                  capsize=0.3, ax=ax)
    ax.axhline(df[(df.method == "student") & (df.student == student)].test_acc.mean(),
               color="grey", ls="--", lw=1, label=f"{student} alone (mean)")
    ax.set(title=f"Test accuracy per method: {title}", xlabel="", ylabel="test accuracy (± sd)")
    ax.tick_params(axis="x", rotation=45)
    for t in ax.get_xticklabels():
        t.set_horizontalalignment("right")
    ax.legend()  # the student-alone line: save_figure moves the legend outside
    save_figure(fig, ax, path)


def generation_plot(trials: pd.DataFrame, path: Path) -> None:
    """Born-Again and Label Refinery accuracy per generation, generation 0 = student alone."""
    parts = []
    for method in ("ban", "lr"):
        chain = trials[trials.method == method]
        if len(chain):
            gen0 = trials[(trials.method == "student")
                          & (trials.student == chain.student.iloc[0])].assign(method=method)
            parts.append(pd.concat([gen0, chain]))
    ens = trials[trials.method == "ban_ensemble"]
    if len(ens):
        parts.append(ens.assign(method="ban_ensemble (gens 1..k)"))
    if not parts:
        return
    df = pd.concat(parts, ignore_index=True)
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    sns.lineplot(data=df, x="generation", y="test_acc", hue="method", errorbar="sd", marker="o",
                 ax=ax)
    teacher = trials[trials.method == "teacher"]
    if len(teacher):
        ax.axhline(teacher.test_acc.mean(), color="k", ls=":", lw=1, label="teacher")
    ax.set_xticks(sorted(df.generation.unique().astype(int)))
    ax.set(title="Born-Again and Label Refinery per generation (mean ± sd over seeds)",
           xlabel="generation (0 = student alone)", ylabel="test accuracy")
    save_figure(fig, ax, path)
