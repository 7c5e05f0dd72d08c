"""Table and figure of the compression pipeline: one row per stage, accuracy vs size."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from experiments.claims import write_claims
from experiments.common import Context
from experiments.compression_pipeline.claims import CLAIMS
from experiments.compression_pipeline.config import STAGES
from experiments.provenance import footer_line
from lib.report import (aggregate, config_columns, footer, markdown, mean_sd_table, recipe_text,
                        save_figure, write_table)
from lib.runs import atomic_write_text

BY = ["stage", "method", "bits", "act_bits"]
METRICS = ["test_acc", "params", "macs", "size_bytes", "saved_bytes", "latency_ms", "compression"]
MAIN_PATH = ("teacher", "kd", "pruned+kd", "ptq", "qat")  # what the plot's line connects
# the stage each one starts from (kd: trained from scratch like the student, its reference)
PARENT = {"kd": "student", "pruned": "kd", "pruned+kd": "pruned", "ptq": "pruned+kd",
          "qat": "pruned+kd", "int8": "pruned+kd"}
FLOAT_STAGES = ("student", "kd", "pruned", "pruned+kd")


def label(method: str, bits: int, act_bits: int = 32) -> str:
    return f"{method} W{bits}A{act_bits}" if method in ("ptq", "qat") else method


def with_deltas(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with, per row, the accuracy change in points against the stage it starts from
    (`delta_parent`, paired by seed) and against the student trained alone (`delta_student`)."""
    acc = (trials[trials.method.isin(FLOAT_STAGES)].set_index(["method", "seed"]).test_acc)

    def diff(method: str, seed: int, value: float) -> float:
        return 100 * (value - acc[method, seed]) if (method, seed) in acc.index else float("nan")

    out = trials.copy()
    out["parent"] = out.method.map(PARENT).fillna("")
    out["delta_parent"] = [diff(p, s, v) if p else float("nan")
                           for p, s, v in zip(out.parent, out.seed, out.test_acc)]
    out["delta_student"] = [diff("student", s, v) if m not in ("teacher", "student")
                            else float("nan") for m, s, v in zip(out.method, out.seed, out.test_acc)]
    return out


def write_report(ctx: Context, rows: list[dict]) -> Path:
    """trials.csv (stage order, the teacher first, its size the compression reference),
    table.md, claims.md / claims.csv (experiments/compression_pipeline/claims.py) and the
    accuracy-vs-size plot."""
    cfg, scale, out = ctx.cfg, ctx.scale, ctx.out
    extra = {"teacher_model": cfg.teacher.model, "prune_criterion": cfg.prune.criterion,
             "prune_ratio": cfg.prune.ratio, "kd_T": cfg.distill.T, "kd_alpha": cfg.distill.alpha}
    trials = pd.DataFrame([{**row, **config_columns(cfg.setup), **extra} for row in rows])
    teacher_size = trials.loc[trials.method == "teacher", "size_bytes"].mean()
    trials["compression"] = teacher_size / trials.size_bytes
    trials = with_deltas(trials).sort_values(["stage", "bits", "act_bits", "seed"],
                                             ascending=[True, False, False, True], kind="stable")
    lead = ["method", "bits", "act_bits", "seed", "test_acc", "delta_parent", "delta_student",
            "params", "macs", "size_bytes", "saved_bytes", "latency_ms", "compression", "stage"]
    trials = trials[lead + [c for c in trials.columns if c not in lead]]
    atomic_write_text(out / "trials.csv", trials.to_csv(index=False))

    metrics = ["test_acc", "delta_parent", "delta_student", *METRICS[1:]]
    agg = aggregate(trials, BY, metrics).sort_values(["stage", "bits", "act_bits"],
                                                     ascending=[True, False, False])
    table = mean_sd_table(agg, BY, metrics, percent=["test_acc"],
                          digits={"delta_parent": 2, "delta_student": 2, "params": 0, "macs": 0,
                                  "size_bytes": 0, "saved_bytes": 0, "latency_ms": 2,
                                  "compression": 1})
    table = table.drop(columns=["stage", "bits", "act_bits"]).replace({"nan": ""})
    table.insert(0, "stage", [label(m, b, a) for m, b, a in zip(agg.method, agg.bits, agg.act_bits)])
    table.insert(1, "starts from", agg.method.map(PARENT).fillna("").tolist())
    table = table.drop(columns="method").rename(columns={
        "test_acc": "test acc %", "delta_parent": "Δ vs start (points)",
        "delta_student": "Δ vs student (points)", "macs": "MACs", "size_bytes": "size (bytes)",
        "saved_bytes": "saved (bytes)", "latency_ms": "latency (ms)", "compression": "compression ×"})
    s, t, p, d = cfg.setup, cfg.teacher, cfg.prune, cfg.distill
    header = (
        f"# Compression pipeline: {t.model} teacher → {s.model} student on {s.dataset} "
        f"({scale} scale)\n\n"
        f"Teacher: {t.model}, {recipe_text(t.train)}, trained once (seed {t.seed}; shared with "
        f"every experiment that asks for the same teacher on the same data), so its row has "
        f"n = 1. Student: {s.model}, {recipe_text(s.train)}, alone (`student`) or distilled (`kd`: {d.alpha}·KD(T={d.T}) + "
        f"{1 - d.alpha:.1f}·CE). `pruned`: {p.ratio:.0%} of the output channels of the stem and "
        f"of every pointwise conv removed by {p.criterion} (the depthwise convs and BNs that follow "
        f"lose the same channels), no training; `pruned+kd`: fine-tuned with the same KD loss, "
        f"{recipe_text(cfg.finetune)}. `ptq WkAa`: that model, its BN folded into the convs, with "
        f"k-bit weights per channel (symmetric) and a-bit activations per tensor (asymmetric, "
        f"{cfg.calibration} ranges on {cfg.calib_size} training images) fake-quantized, no "
        f"training; `qat`: the same quantizers calibrated then fine-tuned with KD, "
        f"{recipe_text(cfg.qat)}; `int8`: real int8 through torch.ao (x86), from the unfolded "
        f"pruned+kd model (torch.ao folds BN itself).\n\n"
        f"Δ vs start: the change in test accuracy, in points, against the stage this one starts "
        f"from (`starts from`; kd is compared with the student it would replace), per seed, then "
        f"mean ± sd over seeds (n); Δ vs student: the same against the student trained alone.\n\n"
        f"Accuracy: final weights (what the next stage starts from). Size: storage estimate, "
        f"conv / linear weights at `bits`, BN and biases at 32 bits; saved: bytes of the saved "
        f"state dict (float32 models, and the int8 model with its packed weights; empty for "
        f"fake-quantized rows). Compression: teacher size / size. Latency: median of 20 CPU runs "
        f"on a batch of {cfg.latency_batch} test images, float models and int8 only (fake "
        f"quantization only simulates integer arithmetic). Mean ± sd over seeds.\n\n")
    write_table(out, header, markdown(table), footer(trials, footer_line(ctx.provenance(trials.run))))
    write_claims(CLAIMS, trials, out, f"the \"mix it\" pipeline, {t.model} → {s.model} on "
                                      f"{s.dataset} ({scale})")
    accuracy_vs_size(trials, out / "accuracy_vs_size.png", f"{t.model} → {s.model}, {s.dataset}")
    return out


def accuracy_vs_size(trials: pd.DataFrame, path: Path, title: str) -> None:
    """Each stage at its mean size and accuracy (±sd bars); a line along the main path."""
    pts = (trials.assign(label=[label(m, b, a) for m, b, a in
                                zip(trials.method, trials.bits, trials.act_bits)])
           .groupby(["stage", "bits", "act_bits", "label", "method"], sort=False)
           .agg(size=("size_bytes", "mean"), acc=("test_acc", "mean"), sd=("test_acc", "std"))
           .reset_index().sort_values(["stage", "bits", "act_bits"],
                                      ascending=[True, False, False]))
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
