"""Tables and figures of the quantization experiment: accuracy vs bits per model, the precision
curve, int8 vs float, and the claims (experiments/quantization/claims.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.claims import write_claims
from experiments.common import Context
from experiments.provenance import footer_line
from experiments.quantization.claims import CLAIMS
from lib.report import (aggregate, footer, line_plot, markdown, mean_sd, mean_sd_table,
                        recipe_text, write_table, write_trials)
from lib.runs import atomic_write_text

BY = ["model", "method", "bits", "act_bits", "granularity", "calibration"]
METRICS = ["test_acc", "size_bytes", "latency_ms"]
ORDER = ("float", "float_ft", "ptq", "qat", "int8", "fixed_point", "float16", "bfloat16")
MANTISSA_BITS = {"float16": 10, "bfloat16": 7, "float": 23}


def wa(bits, act_bits) -> str:
    """'W4A8', 'W4' (float activations)."""
    return f"W{int(bits)}" + (f"A{int(act_bits)}" if act_bits else "")


def variant(t: pd.Series) -> str:
    """A short legend label: 'ptq WkAk per_channel mse', 'ptq WkA8 ...', 'qat WkA8', ..."""
    acts = "Ak" if t.act_bits == t.bits else f"A{int(t.act_bits)}" if t.act_bits else ""
    calib = f" {t.calibration}" if t.act_bits and t.method == "ptq" else ""
    gran = f" {t.granularity}" if t.method == "ptq" else ""
    return f"{t.method} Wk{acts}{gran}{calib}"


def normalise(trials: pd.DataFrame) -> pd.DataFrame:
    """Empty text fields as '' and widths as ints (trials.csv reads them back as NaN / float)."""
    trials = trials.copy()
    for col in ("granularity", "calibration"):
        trials[col] = trials[col].fillna("")
    for col in ("bits", "act_bits", "seed"):
        trials[col] = trials[col].fillna(0).astype(int)
    return trials


def int8_lines(trials: pd.DataFrame) -> str:
    """One line per model: int8 vs float accuracy, saved size, weight bytes, latency."""
    lines = []
    for m, t in trials[trials.method == "int8"].groupby("model", sort=False):
        fp = trials[(trials.model == m) & (trials.method == "float")]
        lines.append(
            f"- {m}: test acc {mean_sd(t.test_acc, 2, 100)} (float {mean_sd(fp.test_acc, 2, 100)}); "
            f"saved {t.size_bytes.mean():.0f} vs {t.float_size_bytes.mean():.0f} bytes "
            f"({t.float_size_bytes.mean() / t.size_bytes.mean():.2f}× smaller), of which weights "
            f"{t.weight_bytes.mean():.0f} vs {t.float_weight_bytes.mean():.0f} bytes "
            f"({t.float_weight_bytes.mean() / t.weight_bytes.mean():.2f}×); latency "
            f"{mean_sd(t.latency_ms)} vs {mean_sd(t.float_latency_ms)} ms "
            f"({mean_sd(t.float_latency_ms / t.latency_ms)}× faster).")
    return "\nint8 (torch.ao, x86) vs float, mean ± sd over seeds:\n" + "\n".join(lines) + "\n"


def summary_table(trials: pd.DataFrame) -> str:
    """The rows the claims read, one column per model: test acc % mean ± sd (n)."""
    rows = [("float", dict(method="float")),
            ("float fine-tuned as QAT (control)", dict(method="float_ft")),
            *[(f"PTQ {wa(b, a)} per-{g.split('_')[1]}{' ' + c if c else ''}",
               dict(method="ptq", bits=b, act_bits=a, granularity=g, calibration=c))
              for b, a, g, c in ((8, 8, "per_channel", "minmax"), (4, 0, "per_tensor", ""),
                                 (4, 0, "per_channel", ""), (4, 8, "per_channel", "mse"),
                                 (4, 4, "per_channel", "mse"))],
            *[(f"QAT {wa(b, a)}", dict(method="qat", bits=b, act_bits=a))
              for b, a in ((8, 8), (4, 8), (4, 4))],
            ("int8 (torch.ao)", dict(method="int8"))]
    models = list(dict.fromkeys(trials.model))
    out = pd.DataFrame({"arm": [r[0] for r in rows]})
    for m in models:
        cells = []
        for _, where in rows:
            sel = trials[trials.model == m]
            for k, v in where.items():
                sel = sel[sel[k] == v]
            cells.append(f"{mean_sd(sel.test_acc, 2, 100)} (n={len(sel)})" if len(sel) else "")
        out[m] = cells
    return markdown(out)


def write_report(ctx: Context, rows: list[dict]) -> Path:
    """trials.csv, table.md, claims.md / claims.csv and the plots."""
    cfg, out = ctx.cfg, ctx.out
    trials = normalise(write_trials(rows, out))  # each row carries its model's setup

    agg = aggregate(trials, BY, METRICS)
    table = mean_sd_table(agg, BY, METRICS, digits={"size_bytes": 0, "latency_ms": 2},
                          percent=["test_acc"])
    table = table.replace({"nan": ""}).rename(columns={
        "act_bits": "act bits", "test_acc": "test acc %", "size_bytes": "size (bytes)",
        "latency_ms": "latency (ms)"})
    table["act bits"] = table["act bits"].map(lambda a: a or "float")
    rank = {m: i for i, m in enumerate(ORDER)}
    models = {m: i for i, m in enumerate(dict.fromkeys(trials.model))}
    table = table.sort_values(["model", "method", "bits"], key=lambda c: (
        c.map(models) if c.name == "model" else c.map(rank) if c.name == "method" else -c),
        kind="stable")
    lines = []
    for s, ft in cfg.models():
        lines.append(f"- {s.model}: float {recipe_text(s.train)}; QAT and its float control "
                     f"fine-tune for {recipe_text(ft)}.")
    header = (
        f"# Quantization: {', '.join(models)} on {cfg.setup.dataset} ({ctx.scale} scale)\n\n"
        + (f"{cfg.source}\n\n" if cfg.source else "")
        + "\n".join(lines) + "\n\n"
        "BatchNorm is folded into the convs before any fake quantization (as deployed int8 "
        "models are); int8 goes through torch.ao, which folds it itself. Every accuracy is of the "
        "final weights (no early stopping), so rows compare directly with the float row. Weights "
        "are symmetric, activations per tensor and asymmetric, their range calibrated on "
        f"{cfg.calib_size} training images (`calibration`); `act bits` float: weights alone. "
        "`float_ft`: the float model fine-tuned with QAT's recipe without fake quantization, "
        "QAT's control. Size: estimated (weights at `bits`, biases float32) except int8, whose "
        "size is the saved state dict; latency: median of 20 CPU runs on a batch of "
        f"{cfg.latency_batch} test images. fixed_point `bits` = fraction bits. Mean ± sd over "
        "seeds.\n\n## The arms the claims compare (test acc %)\n\n")
    produced_by = footer_line(ctx.provenance(trials.run))
    arms = summary_table(trials) + int8_lines(trials)
    atomic_write_text(out / "arms.md", "# The arms the claims compare (test acc %)\n\n" + arms)
    write_table(out, header, arms, "\n## Every trial\n\n", markdown(table),
                footer(trials, produced_by))
    write_claims(CLAIMS, trials, out, f"Krishnamoorthi 2018, {', '.join(models)} on "
                                      f"{cfg.setup.dataset} ({ctx.scale})")

    quant = trials[trials.method.isin(["ptq", "qat"])].copy()
    quant["variant"] = quant.apply(variant, axis=1)
    line_plot(quant, x="bits", y="test_acc", hue="variant", style="model",
              path=out / "accuracy_vs_bits.png", xlabel="weight bits k",
              ylabel="test accuracy", title="Accuracy vs bit width: PTQ variants and QAT")

    prec = trials[trials.method.isin(["fixed_point", "float16", "bfloat16", "float"])].copy()
    prec["format"] = prec.method
    is_float = prec.method != "fixed_point"
    prec.loc[is_float, "bits"] = prec.loc[is_float, "method"].map(MANTISSA_BITS)
    line_plot(prec, x="bits", y="test_acc", hue="format", style="model",
              path=out / "precision.png",
              xlabel="fraction bits (fixed point) or mantissa bits (floats)",
              ylabel="test accuracy", title="Least significant bits: weight precision vs accuracy")
    return out
