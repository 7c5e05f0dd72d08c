"""Tables and figures of the lottery-ticket experiment (the paper's Figures 3 and 4)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.claims import write_claims
from experiments.common import Context
from experiments.lottery_ticket.claims import CLAIMS
from experiments.lottery_ticket.config import Trial
from experiments.provenance import footer_line
from lib.report import (aggregate, footer, line_plot, markdown, mean_sd_table, recipe_text,
                        write_table, write_trials)
from lib.runs import atomic_write_text

METRICS = ["weights_left", "test_acc", "final_test_acc", "early_stop_iter", "val_acc"]


def learning_curves(ctx: Context, trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial's evaluation rows (from its metrics.csv), tagged with seed, level, variant."""
    frames = []
    for t in trials.itertuples():
        run = ctx.run(Trial(ctx.cfg.setup, int(t.seed), int(t.level), t.variant))
        curve = pd.read_csv(run.path("metrics.csv"))
        frames.append(curve.assign(seed=t.seed, level=t.level, variant=t.variant,
                                   weights_left=t.weights_left))
    return pd.concat(frames, ignore_index=True)


def write_report(ctx: Context, rows: list[dict]) -> Path:
    cfg, scale, out = ctx.cfg, ctx.scale, ctx.out
    trials = write_trials(rows, out, setup=cfg.setup)
    curves = learning_curves(ctx, trials)
    atomic_write_text(out / "curves.csv", curves.to_csv(index=False))

    agg = aggregate(trials, ["level", "variant"], METRICS)
    table = mean_sd_table(agg, ["level", "variant"], METRICS, digits={"early_stop_iter": 0},
                          percent=["weights_left", "test_acc", "final_test_acc", "val_acc"])
    table = table.rename(columns={"weights_left": "weights left %", "test_acc": "test acc % (early stop)",
                                  "final_test_acc": "final test acc %", "early_stop_iter": "early-stop iter",
                                  "val_acc": "val acc %"})
    s = cfg.setup
    header = (f"# Lottery ticket: {s.model} on {s.dataset} ({scale} scale)\n\n"
              f"Each trial: {recipe_text(s.train)}; evaluated every {s.train.eval_every} steps; "
              f"prune {s.prune.rate_fc:.0%} fc / {s.prune.rate_conv:.0%} conv / "
              f"{s.prune.rate_output:.0%} output per level ({s.prune.scope}), rewind to iteration "
              f"{s.rewind_step}. Mean ± sd over seeds; test accuracy at the iteration of minimum "
              f"validation loss.\n\n")
    produced_by = footer_line(ctx.provenance(trials.run))
    write_table(out, header, markdown(table), footer(trials, produced_by))
    write_claims(CLAIMS, trials, out, f"Frankle & Carbin 2019, {s.model} on {s.dataset} ({scale})")

    line_plot(trials, x="weights_left", y="test_acc", hue="variant", path=out / "test_acc.png",
              logx=True, invert_x=True, xlabel="fraction of weights remaining (log)",
              ylabel="test accuracy at early stop", title="Winning tickets vs random reinit")
    line_plot(trials, x="weights_left", y="early_stop_iter", hue="variant",
              path=out / "early_stop.png", logx=True, invert_x=True,
              xlabel="fraction of weights remaining (log)", ylabel="early-stopping iteration",
              title="How fast each network learns")
    pick = _levels_to_show(trials)
    shown = curves[curves.level.isin(pick) & curves.step.gt(0)].copy()
    shown["weights left"] = (shown.weights_left * 100).round(1).astype(str) + "%"
    line_plot(shown, x="step", y="test_acc", hue="weights left", style="variant",
              path=out / "learning_curves.png", xlabel="training iteration",
              ylabel="test accuracy", title="Learning curves at several sparsities")
    return out


def _levels_to_show(trials: pd.DataFrame) -> list[int]:
    """Dense, ~51%, ~21%, ~3.6% (or the closest levels this run has)."""
    levels = sorted(trials.level.unique())
    left = trials.groupby("level").weights_left.mean()
    picks = {min(levels, key=lambda lv: abs(left[lv] - target)) for target in (1.0, 0.513, 0.211, 0.036)}
    return sorted(picks)
