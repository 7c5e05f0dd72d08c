"""From trials to tables and plots: tidy trials.csv -> table.md (mean ± sd, n) -> PNGs."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from lib.runs import atomic_write_bytes, atomic_write_text, flat_config  # noqa: E402
from lib.train import TrainConfig  # noqa: E402


def config_columns(cfg) -> dict:
    """Every field of dataclass `cfg` as a column value (`train.lr`, ...; lists as text)."""
    return {k: str(v) if isinstance(v, list) else v for k, v in flat_config(cfg).items()}


def write_trials(rows: list[dict], out_dir: Path, setup=None) -> pd.DataFrame:
    """Write the tidy table: one row per trial, every config field and metric a column
    (the fields of `setup`, when given, are added to every row; a row's own keys win)."""
    cols = config_columns(setup) if setup is not None else {}
    df = pd.DataFrame([{**cols, **row} for row in rows])
    atomic_write_text(out_dir / "trials.csv", df.to_csv(index=False))
    return df


def recipe_text(t: TrainConfig) -> str:
    """A training recipe in words, for report headers: 'sgd lr 0.1 momentum 0.9 ...'."""
    parts = [f"{t.optimizer} lr {t.lr:g}"]
    if t.momentum:
        parts.append(f"momentum {t.momentum:g}")
    if t.weight_decay:
        parts.append(f"weight decay {t.weight_decay:g}")
    parts.append(f"batch {t.batch_size}")
    parts.append(f"{t.epochs:g} epochs" if t.epochs else f"{t.iterations} iterations")
    if t.patience:
        watched = "loss" if t.early_stop_on == "val_loss" else "accuracy"
        parts[-1] = (f"at most {parts[-1]}, stopped once {t.patience} evaluations in a row bring "
                     f"no better validation {watched}")
    if t.schedule == "step":  # the milestones as the recipe states them (fractions of training)
        length, unit = (t.epochs, "epochs") if t.epochs else (t.iterations, "iterations")
        at = ", ".join(f"{m * length:g}" for m in t.milestones)
        parts.append(f"step schedule (lr ×{t.gamma:g} at {unit} {at})")
    elif t.schedule != "constant":
        parts.append(f"{t.schedule} schedule")
    if t.augment:
        parts.append("crop+flip augmentation")
    if t.budget != 1:
        parts.append(f"cut to {t.budget:g} of its steps (--budget)")
    return ", ".join(parts)


def footer(trials: pd.DataFrame, produced_by: str, note: str = "") -> str:
    """The last lines of every table.md: trial count, summed training time, and how the trials
    were produced (`produced_by`: the command, wall time and machine of the invocations)."""
    wall = trials["train_wall_s"].sum() if "train_wall_s" in trials else 0.0
    last = ""
    if "diverged" in trials:  # a non-finite loss stopped them: results, marked, not errors
        n = int(diverged(trials).sum())
        last += (f" {n} of {len(trials)} trials diverged (non-finite loss; training stopped "
                 f"there, marked in trials.csv and the tables).") if n else ""
    if "selected_last" in trials:  # a model selected at its last evaluation is still learning
        trained = trials[trials.selected_last.notna()]
        n = int(trained.selected_last.astype(bool).sum())
        last += (f" {n} of {len(trained)} trained trials were selected at their last evaluation "
                f"(still learning when training stopped).")
    return (f"\nTrials: {len(trials)}; summed training time {wall:.0f} s{note}. Finished trials "
            f"are reused, never re-run.{last}\n{produced_by}\n")


def write_table(out_dir: Path, *parts: str) -> None:
    """table.md from its parts (header, markdown tables, footer), written atomically."""
    atomic_write_text(out_dir / "table.md", "".join(parts))


def save_figure(fig, ax, path: Path, legend: bool = True) -> None:
    """The house style of every plot: light grid, legend outside the axes, tight, 120 dpi."""
    ax.grid(alpha=0.3)
    if legend and ax.get_legend() is not None:
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()  # drawn in memory, then written atomically like every other output
    fig.savefig(buf, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def aggregate(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, sample sd and n of each metric over the rows sharing the `by` columns (seeds)."""
    grouped = df.groupby(list(by), sort=True, dropna=False)[list(metrics)]
    out = grouped.agg(["mean", "std", "count"])
    out.columns = [f"{m}_{s.replace('std', 'sd').replace('count', 'n')}" for m, s in out.columns]
    if "diverged" in df:  # kept in the means, and counted so that the table can say so
        out["diverged"] = diverged(df).groupby([df[b] for b in by], sort=True, dropna=False).sum()
    return out.reset_index()


def diverged(trials: pd.DataFrame) -> pd.Series:
    """True for the trials stopped by a non-finite loss (`diverged` is absent, or empty, for
    trials that converged)."""
    if "diverged" not in trials:
        return pd.Series(False, index=trials.index)
    return trials["diverged"].map(lambda v: v is True or str(v).lower() == "true")


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.4g}"
    return str(v)


def mean_sd_table(agg: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                  digits: dict[str, int] | None = None, scale: dict[str, float] | None = None,
                  percent: Sequence[str] = ()) -> pd.DataFrame:
    """Collapse `<m>_mean`, `<m>_sd`, `<m>_n` into one 'mean ± sd' column per metric, plus n.

    Metrics in `percent` (fractions) are shown ×100 with 2 decimals unless `digits`/`scale`
    say otherwise; a metric none of a row's trials has is left blank."""
    digits = {**{m: 2 for m in percent}, **(digits or {})}
    scale = {**{m: 100.0 for m in percent}, **(scale or {})}
    out = agg[list(by)].copy()
    for m in metrics:
        d, k = digits.get(m, 4), scale.get(m, 1.0)
        mean, sd = agg[f"{m}_mean"] * k, agg[f"{m}_sd"] * k
        out[m] = ["" if pd.isna(a) else f"{a:.{d}f}" if pd.isna(b) else f"{a:.{d}f} ± {b:.{d}f}"
                  for a, b in zip(mean, sd)]
    out["n"] = agg[f"{metrics[0]}_n"].astype(int)
    if "diverged" in agg and agg["diverged"].any():
        out["diverged"] = [f"{int(d)} of {n}" if d else "" for d, n in zip(agg["diverged"], out["n"])]
    return out


def mean_sd(values: Sequence[float] | pd.Series, digits: int = 2, k: float = 1.0) -> str:
    """'mean ± sd' of `values` × k, for tables built row by row (just the mean for one value,
    '' for none; NaNs are dropped)."""
    v = pd.Series(values, dtype=float).dropna() * k
    if v.empty:
        return ""
    return f"{v.mean():.{digits}f}" if len(v) < 2 else f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def line_plot(df: pd.DataFrame, *, x: str, y: str, hue: str | None, path: Path, title: str,
              logx: bool = False, xlabel: str | None = None, ylabel: str | None = None,
              style: str | None = None, invert_x: bool = False) -> None:
    """Seaborn line plot of y vs x with a mean line and a ±sd band over seeds.

    The legend sits outside the axes; with many hue levels the palette is tab20 so that
    neighbouring levels stay distinguishable. On a log axis with few x values, those values
    are the ticks, labelled in percent when x is a fraction.
    """
    n_hue = df[hue].nunique() if hue else 1
    palette = sns.color_palette("tab20" if n_hue > 10 else "tab10", n_hue) if hue else None
    fig, ax = plt.subplots(figsize=(8.4, 4.4))
    sns.lineplot(data=df, x=x, y=y, hue=hue, style=style, errorbar="sd", marker="o",
                 markersize=4, ax=ax, palette=palette)
    if logx:
        ax.set_xscale("log")
        ticks = sorted(df[x].unique())
        if len(ticks) <= 10:
            ax.set_xticks(ticks, [f"{t:.1%}" if df[x].max() <= 1 else f"{t:g}" for t in ticks])
            ax.minorticks_off()
    if invert_x:
        ax.invert_xaxis()
    ax.set(title=title, xlabel=xlabel or x, ylabel=ylabel or y)
    save_figure(fig, ax, path)
