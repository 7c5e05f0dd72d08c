"""Tables and figures of the quantization experiment: accuracy vs bits, the precision curve."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.common import Context
from experiments.provenance import footer_line
from lib.report import (aggregate, footer, line_plot, markdown, mean_sd_table, recipe_text,
                        write_table, write_trials)

BY = ["method", "bits", "scope", "granularity", "calibration"]
METRICS = ["test_acc", "size_bytes", "latency_ms"]
MANTISSA_BITS = {"float16": 10, "bfloat16": 7, "float": 23}


def variant(t: pd.Series) -> str:
    """A short legend label: 'ptq w+a per_channel mse', 'qat', ..."""
    scope = "w+a" if t.scope == "weights+acts" else "w"
    if t.method == "qat":
        return "qat w+a per_channel"
    calib = f" {t.calibration}" if t.scope == "weights+acts" else ""
    return f"ptq {scope} {t.granularity}{calib}"


def write_report(ctx: Context, rows: list[dict]) -> Path:
    """trials.csv, table.md (one row per method and bit width) and the two plots."""
    cfg, out = ctx.cfg, ctx.out
    trials = write_trials(rows, out, setup=cfg.setup)
    for col in ("scope", "granularity", "calibration"):
        trials[col] = trials[col].fillna("")

    agg = aggregate(trials, BY, METRICS)
    table = mean_sd_table(agg, BY, METRICS, digits={"size_bytes": 0, "latency_ms": 2},
                          percent=["test_acc"])
    table = table.replace({"nan": ""}).rename(columns={
        "test_acc": "test acc %", "size_bytes": "size (bytes)", "latency_ms": "latency (ms)"})
    order = {m: i for i, m in enumerate(("float", "ptq", "qat", "int8", "fixed_point", "float16",
                                          "bfloat16"))}
    table = table.sort_values(["method", "bits"], key=lambda c: c.map(order) if c.name == "method"
                              else -c, kind="stable")
    s = cfg.setup
    header = (f"# Quantization: {s.model} on {s.dataset} ({ctx.scale} scale)\n\n"
              f"Float model: {recipe_text(s.train)}; QAT fine-tunes it with "
              f"{recipe_text(cfg.qat)}. "
              f"Every accuracy is of the final weights (no early stopping), so PTQ rows compare "
              f"directly with the float row. Weights are quantized symmetrically, activations "
              f"(weights+acts) per tensor, asymmetric, range calibrated on {cfg.calib_size} "
              f"training images. Size: estimated (quantized weights at `bits`, biases float32) "
              f"except int8, whose size is the saved state dict; int8 latency and the float "
              f"model's are the median of 20 CPU runs on a batch of {cfg.latency_batch} test "
              f"images. fixed_point `bits` = fraction bits. Mean ± sd over seeds.\n\n")
    int8 = trials[trials.method == "int8"]
    compare = ""
    if len(int8):
        compare = (f"\nint8 vs float: size {int8.size_bytes.mean():.0f} vs "
                   f"{int8.float_size_bytes.mean():.0f} bytes "
                   f"({int8.size_bytes.mean() / int8.float_size_bytes.mean():.2f}×), latency "
                   f"{int8.latency_ms.mean():.2f} vs {int8.float_latency_ms.mean():.2f} ms.\n")
    produced_by = footer_line(ctx.provenance(trials.run))
    write_table(out, header, markdown(table), compare, footer(trials, produced_by))

    quant = trials[trials.method.isin(["ptq", "qat"])].copy()
    quant["variant"] = quant.apply(variant, axis=1)
    line_plot(quant, x="bits", y="test_acc", hue="variant", path=out / "accuracy_vs_bits.png",
              xlabel="bits (weights, and activations for w+a)", ylabel="test accuracy",
              title="Accuracy vs bit width: PTQ variants and QAT")

    prec = trials[trials.method.isin(["fixed_point", "float16", "bfloat16", "float"])].copy()
    prec["format"] = prec.method
    is_float = prec.method != "fixed_point"
    prec.loc[is_float, "bits"] = prec.loc[is_float, "method"].map(MANTISSA_BITS)
    line_plot(prec, x="bits", y="test_acc", hue="format", path=out / "precision.png",
              xlabel="fraction bits (fixed point) or mantissa bits (floats)",
              ylabel="test accuracy", title="Least significant bits: weight precision vs accuracy")
    return out
