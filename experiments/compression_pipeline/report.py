"""Table and figure of the compression pipeline: one row per stage, accuracy vs size."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.common import Context
from experiments.compression_pipeline.config import STAGES
from experiments.provenance import footer_line
from lib.report import (aggregate, config_columns, footer, markdown, mean_sd_table, recipe_text,
                        save_figure, write_table)
from lib.runs import atomic_write_text

BY = ["stage", "method", "bits"]
METRICS = ["test_acc", "params", "macs", "size_bytes", "saved_bytes", "latency_ms", "compression"]
MAIN_PATH = ("teacher", "kd", "pruned+kd", "ptq", "qat")  # what the plot's line connects


def label(method: str, bits: int) -> str:
    return f"{method} {bits}-bit" if method in ("ptq", "qat") else method


def write_report(ctx: Context, rows: list[dict]) -> Path:
    """trials.csv (stage order, the teacher first, its size the compression reference),
    table.md and the accuracy-vs-size plot."""
    cfg, scale, out = ctx.cfg, ctx.scale, ctx.out
    extra = {"teacher_model": cfg.teacher.model, "prune_criterion": cfg.prune.criterion,
             "prune_ratio": cfg.prune.ratio, "kd_T": cfg.distill.T, "kd_alpha": cfg.distill.alpha}
    trials = pd.DataFrame([{**row, **config_columns(cfg.setup), **extra} for row in rows])
    teacher_size = trials.loc[trials.method == "teacher", "size_bytes"].mean()
    trials["compression"] = teacher_size / trials.size_bytes
    trials = trials.sort_values(["stage", "bits", "seed"], ascending=[True, False, True], kind="stable")
    lead = ["method", "bits", "seed", "test_acc", "params", "macs", "size_bytes", "saved_bytes",
            "latency_ms", "compression", "stage"]
    trials = trials[lead + [c for c in trials.columns if c not in lead]]
    atomic_write_text(out / "trials.csv", trials.to_csv(index=False))

    agg = aggregate(trials, BY, METRICS).sort_values(["stage", "bits"], ascending=[True, False])
    table = mean_sd_table(agg, BY, METRICS, percent=["test_acc"],
                          digits={"params": 0, "macs": 0, "size_bytes": 0, "saved_bytes": 0,
                                  "latency_ms": 2, "compression": 1})
    table = table.drop(columns="stage").replace({"nan": ""}).rename(columns={
        "test_acc": "test acc %", "macs": "MACs", "size_bytes": "size (bytes)",
        "saved_bytes": "saved (bytes)", "latency_ms": "latency (ms)", "compression": "compression ×"})
    table["bits"] = [str(b) if b < 32 else "32 (float)" for b in agg.bits]
    s, t, p, d = cfg.setup, cfg.teacher, cfg.prune, cfg.distill
    header = (
        f"# Compression pipeline: {t.model} teacher → {s.model} student on {s.dataset} "
        f"({scale} scale)\n\n"
        f"Teacher: {t.model}, {recipe_text(t.train)}, trained once (seed {t.seed}) and shared with "
        f"the distillation experiments, so its row has n = 1. Student: {s.model}, "
        f"{recipe_text(s.train)}, alone (`student`) or distilled (`kd`: {d.alpha}·KD(T={d.T}) + "
        f"{1 - d.alpha:.1f}·CE). `pruned`: {p.ratio:.0%} of the output channels of the stem and "
        f"of every pointwise conv removed by {p.criterion} (the depthwise convs and BNs that follow "
        f"lose the same channels), no training; `pruned+kd`: fine-tuned with the same KD loss, "
        f"{recipe_text(cfg.finetune)}. `ptq`: that model's weights per channel (symmetric) and "
        f"activations per tensor (asymmetric, {cfg.calibration} ranges on {cfg.calib_size} "
        f"training images) fake-quantized, no training; `qat`: calibrated then fine-tuned with KD "
        f"and fake quantization, {recipe_text(cfg.qat)}; `int8`: real int8 through torch.ao (x86).\n\n"
        f"Accuracy: final weights (what the next stage starts from). Size: storage estimate, "
        f"conv / linear weights at `bits`, BN and biases at 32 bits; saved: bytes of the saved "
        f"state dict (float32 models, and the int8 model with its packed weights; empty for "
        f"fake-quantized rows). Compression: teacher size / size. Latency: median of 20 CPU runs "
        f"on a batch of {cfg.latency_batch} test images, float models and int8 only (fake "
        f"quantization only simulates integer arithmetic). Mean ± sd over seeds.\n\n")
    write_table(out, header, markdown(table), footer(trials, footer_line(ctx.provenance(trials.run))))
    accuracy_vs_size(trials, out / "accuracy_vs_size.png", f"{t.model} → {s.model}, {s.dataset}")
    return out


def accuracy_vs_size(trials: pd.DataFrame, path: Path, title: str) -> None:
    """Each stage at its mean size and accuracy (±sd bars); a line along the main path."""
    pts = (trials.assign(label=[label(m, b) for m, b in zip(trials.method, trials.bits)])
           .groupby(["stage", "bits", "label", "method"], sort=False)
           .agg(size=("size_bytes", "mean"), acc=("test_acc", "mean"), sd=("test_acc", "std"))
           .reset_index().sort_values(["stage", "bits"], ascending=[True, False]))
    palette = dict(zip(STAGES, sns.color_palette("tab10", len(STAGES))))
    fig, ax = plt.subplots(figsize=(8.4, 4.6))
    path_pts = pts[pts.method.isin(MAIN_PATH)].sort_values("size", ascending=False)
    ax.plot(path_pts["size"], path_pts.acc, ls="--", color="0.6", lw=1, zorder=1)
    for _, r in pts.iterrows():
        ax.errorbar(r["size"], r.acc, yerr=0 if pd.isna(r.sd) else r.sd, fmt="o", ms=6,
                    color=palette[r.method], capsize=3, zorder=2)
        ax.annotate(r.label, (r["size"], r.acc), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    ax.set_xscale("log")
    ax.invert_xaxis()  # compression goes left to right
    ax.set(title=f"Accuracy vs size along the pipeline ({title})", xlabel="size (bytes, log)",
           ylabel="test accuracy")
    ax.grid(alpha=0.3, which="minor")
    save_figure(fig, ax, path, legend=False)
