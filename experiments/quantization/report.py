"""Tables and figures of the quantization experiment: accuracy vs bits, the precision curve."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.quantization.config import QuantConfig
from lib.report import aggregate, line_plot, markdown, mean_sd_table, results_dir, write_trials
from lib.runs import atomic_write_text, flat_config

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


def write_report(cfg: QuantConfig, rows: list[dict], scale: str, *, wall_s: float,
                 machine: str) -> Path:
    out = results_dir("quantization", scale)
    setup_cols = {k: str(v) if isinstance(v, list) else v for k, v in flat_config(cfg.setup).items()}
    trials = write_trials([{**row, **setup_cols} for row in rows], out)
    for col in ("scope", "granularity", "calibration"):
        trials[col] = trials[col].fillna("")

    agg = aggregate(trials, BY, METRICS)
    table = mean_sd_table(agg, BY, METRICS, digits={"test_acc": 2, "size_bytes": 0, "latency_ms": 2},
                          scale={"test_acc": 100})
    table = table.replace({"nan": ""}).rename(columns={
        "test_acc": "test acc %", "size_bytes": "size (bytes)", "latency_ms": "latency (ms)"})
    order = {m: i for i, m in enumerate(("float", "ptq", "qat", "int8", "fixed_point", "float16",
                                          "bfloat16"))}
    table = table.sort_values(["method", "bits"], key=lambda c: c.map(order) if c.name == "method"
                              else -c, kind="stable")
    s = cfg.setup
    header = (f"# Quantization: {s.model} on {s.dataset} ({scale} scale)\n\n"
              f"Float model: {s.train.optimizer} lr {s.train.lr}, batch {s.train.batch_size}, "
              f"{s.train.epochs or s.train.iterations} {'epochs' if s.train.epochs else 'iterations'}; "
              f"QAT fine-tunes it with {cfg.qat.optimizer} lr {cfg.qat.lr} for "
              f"{cfg.qat.epochs or cfg.qat.iterations} {'epochs' if cfg.qat.epochs else 'iterations'}. "
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
    footer = (f"{compare}\nTrials: {len(trials)}; summed training time "
              f"{trials['train_wall_s'].sum():.0f} s; this invocation {wall_s:.0f} s (finished "
              f"trials are reused, not re-run).\nMachine: {machine}.\n")
    atomic_write_text(out / "table.md", header + markdown(table) + footer)

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
