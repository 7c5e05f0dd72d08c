"""Post-training quantization, quantization-aware training, int8 execution and precision.

    python -m experiments.quantization --scale smoke|default|paper [--seeds N]
        [--model lenet_300_100] [--conv-model mobilenet_tiny|none] [--qat-bits w8a8,w4a8|none]

For each model (--model: the MLP, MobileNet-v2 at paper scale; then the conv net with BatchNorm
of --conv-model) and seed:
train the float model once (stage "train", final weights saved as final.pt); fold its BN into
its convs, as deployed int8 models do (the function is unchanged); then, from those weights:
- PTQ (no training): k-bit fake quantization of the weights (per tensor / per channel), alone
  or with the activations (per tensor, range calibrated by minmax / percentile / mse on
  training images): WkAk, and WkA8 for 4 bits and below;
- QAT: per-channel weights + activations at W8A8, W4A8 and W4A4 (--qat-bits), calibrated then
  fine-tuned;
- float_ft: the control of QAT, the same fine-tuning without fake quantization (QAT's extra
  epochs alone, so "QAT beats float" cannot come from them);
- int8: real int8 execution through torch.ao (x86): accuracy, on-disk size, CPU latency;
- precision: weights rounded to fixed point with f fraction bits, float16 / bfloat16 casts.
Trials live in runs/quantization/<hash>/; finished ones are reused. Outputs:
results/quantization/<scale>/ (with claims.md: experiments/quantization/claims.py).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from experiments.common import Context, Experiment, lazy, require
from experiments.quantization.config import Trial, for_scale
from experiments.trial import POLICY
from lib import models
from lib.metrics import latency_ms
from lib.quant import (QuantSpec, apply_to_weights, calibrate_model, cast_roundtrip,
                       check_int8_supported, est_size_bytes, fixed_point, fold_bn, has_batchnorm,
                       int8_weight_bytes, model_size_bytes, prepare, quantize_weights_, to_int8)
from lib.runs import flat_config
from lib.train import TrainConfig


def flags(p) -> None:
    p.add_argument("--conv-model", default=None,
                   help="the conv net with BatchNorm quantized beside --model (default "
                        "mobilenet_tiny, mobilenet at paper scale; BN is folded first), or none")
    p.add_argument("--qat-bits", default=None, metavar="WkAk,...",
                   help="the QAT arms, as weight and activation bits: e.g. w8a8,w4a8 (the "
                        "scale's default: w8a8,w4a8,w4a4), or none: post-training quantization "
                        "only (QAT's float control, float_ft, is then skipped too)")


def configure(cfg, a):
    """--conv-model (a registered model, or none); the conv model follows the MLP's data
    (--dataset); each model must be one whose BN can be folded and that int8 can run."""
    if a.conv_model == "none":
        cfg = replace(cfg, conv=None)
    elif a.conv_model is not None:
        require(a.conv_model in models.MODELS, "conv_model",
                f"a registered model or none ({', '.join(sorted(models.MODELS))})", a.conv_model)
        cfg = replace(cfg, conv=replace(cfg.conv, model=a.conv_model))
    if cfg.conv is not None:
        cfg = replace(cfg, conv=replace(cfg.conv, **cfg.setup.data_fields()))
    if a.qat_bits is not None:
        cfg = replace(cfg, qat_bits=parse_qat_bits(a.qat_bits))
    for setup, _ in cfg.models():
        check_quantizable(setup)
    return cfg


def parse_qat_bits(text: str) -> tuple[tuple[int, int], ...]:
    """'w8a8,w4a8' -> ((8, 8), (4, 8)); 'none' -> (). One-line error naming qat_bits otherwise
    (the widths themselves are checked by QuantConfig.validate)."""
    if text.strip().lower() == "none":
        return ()
    pairs = []
    for item in (s.strip().lower() for s in text.split(",")):
        w, sep, act = item.removeprefix("w").partition("a")
        if not (item.startswith("w") and sep and w.isdigit() and act.isdigit()):
            raise ValueError(f"qat_bits: expected WkAk pairs like w8a8,w4a8 or none, got "
                             f"'{item or text}'")
        pairs.append((int(w), int(act)))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"qat_bits: a pair is repeated in '{text}'")
    return tuple(pairs)


def check_quantizable(setup) -> None:
    """One-line ValueError unless `setup.model` folds its BN and converts to int8 (checked on
    an untrained copy for CIFAR-shaped inputs, before any data is read: the layers and the
    forward's operations do not depend on the input size)."""
    model = models.build(setup.model, (3, 32, 32), 10).eval()
    try:
        check_int8_supported(fold_bn(model))
    except ValueError as e:
        raise ValueError(f"model {setup.model}: {e}") from None


def run_model(ctx: Context, setup, finetune: TrainConfig, seed: int) -> list[dict]:
    """The float model of (`setup`, `seed`), then every quantized and low-precision copy of it."""
    cfg, data = ctx.cfg, ctx.data
    calib_x = data.train_x[:cfg.calib_size]
    tag = f"{setup.model}-s{seed}"

    # ---- the float model, trained once; its BN folded into the convs (same function)
    base, res = ctx.train_final(ctx.run(Trial(setup, seed)), model=setup.model, seed=seed,
                                name=f"{tag}-float", train_cfg=setup.train)
    fold = has_batchnorm(base)
    deployed = fold_bn(base) if fold else base
    float_row = {**res, "method": "float", "bits": 32, "early_stop_test_acc": res["test_acc"],
                 "test_acc": res["final_test_acc"], "val_acc": res["final_val_acc"],
                 "size_bytes": est_size_bytes(deployed, 32)}
    rows = []

    def trial(method: str, bits: int = 0, act_bits: int = 0, granularity: str = "",
              calibration: str = "", **kw) -> Trial:
        calib_size = cfg.calib_size if act_bits else 0
        return Trial(setup, seed, method, bits, act_bits, granularity, calibration, calib_size,
                     fold_bn=fold and method not in ("float", "int8"), **kw)

    def add(t: Trial, r: dict, trained: bool = False, **extra) -> None:
        row = {**r, "method": t.method, "bits": t.bits, "act_bits": t.act_bits,
               "granularity": t.granularity, "calibration": t.calibration, **extra}
        if trained:  # report the final weights, as for the float model
            row.update(early_stop_test_acc=r["test_acc"], test_acc=r["final_test_acc"],
                       val_acc=r["final_val_acc"])
        rows.append(row)
        label = f"W{t.bits}A{t.act_bits or 32}" if t.method in ("ptq", "qat") else t.bits or ""
        name = f"{tag}-{t.method}{label}-{t.granularity}-{t.calibration}".rstrip("-")
        print(f"{name:>58}: test acc {row['test_acc']:.4f}", flush=True)

    def evaluate(t: Trial, build, **extra) -> None:
        name = f"{tag}-{t.method}{t.bits}-{t.act_bits}-{t.granularity}-{t.calibration}"
        add(t, ctx.evaluate(ctx.run(t), name=name, build=build, extra=extra or None,
                            stage="quantize"))

    def fake_quant(bits: int, act_bits: int, per_channel: bool) -> nn.Module:
        return prepare(copy.deepcopy(deployed), QuantSpec(bits=bits, per_channel=per_channel),
                       QuantSpec(bits=act_bits, symmetric=False))

    # ---- PTQ: no training
    for bits, act_bits, gran, calib in cfg.ptq_grid():
        per_channel = gran == "per_channel"

        def build(bits=bits, act_bits=act_bits, per_channel=per_channel, calib=calib):
            if not act_bits:
                return quantize_weights_(copy.deepcopy(deployed),
                                         QuantSpec(bits=bits, per_channel=per_channel)).eval()
            return calibrate_model(fake_quant(bits, act_bits, per_channel), calib_x, calib).eval()

        evaluate(trial("ptq", bits, act_bits, gran, calib), build,
                 size_bytes=est_size_bytes(deployed, bits))

    # ---- QAT and its control: the same fine-tuning with and without fake quantization (no
    # control without a QAT arm: --qat-bits none)
    if cfg.qat_bits:
        control = trial("float_ft", finetune=finetune)
        add(control, ctx.train(ctx.run(control), stage="train", name=f"{tag}-float_ft",
                               seed=seed, train_cfg=finetune,
                               build=lambda: copy.deepcopy(deployed).train()),
            trained=True, bits=32, size_bytes=est_size_bytes(deployed, 32))
    for bits, act_bits in cfg.qat_bits:
        t = trial("qat", bits, act_bits, "per_channel", "minmax", finetune=finetune)
        r = ctx.train(ctx.run(t), stage="quantize", name=f"{tag}-qat-w{bits}a{act_bits}",
                      seed=seed, train_cfg=finetune, build=lambda b=bits, a=act_bits:
                      calibrate_model(fake_quant(b, a, True), calib_x, "minmax").train())
        add(t, r, trained=True, size_bytes=est_size_bytes(deployed, bits))

    # ---- real int8 (CPU): accuracy, size on disk, latency vs the float model (torch.ao folds
    # BN itself)
    cpu_base = copy.deepcopy(base).cpu().to(memory_format=torch.contiguous_format)
    batch = data.test_x[:cfg.latency_batch].cpu()
    measured: dict = {}  # filled by build(), read by run_eval after it (one measurement)

    def build_int8():
        q = to_int8(cpu_base, calib_x.cpu())
        measured.update(size_bytes=model_size_bytes(q), latency_ms=latency_ms(q, batch),
                        float_size_bytes=model_size_bytes(cpu_base),
                        float_latency_ms=latency_ms(cpu_base, batch),
                        weight_bytes=int8_weight_bytes(q),
                        float_weight_bytes=est_size_bytes(cpu_base, 32, 0))
        return q

    cpu_ctx = ctx if ctx.device.type == "cpu" else replace(ctx, data=data.to("cpu"))
    t = trial("int8", 8, 8, "per_channel", "histogram")
    r = cpu_ctx.evaluate(ctx.run(t), name=f"{tag}-int8", build=build_int8, extra=measured,
                         stage="quantize")
    add(t, r)
    print(f"{'':>58}  {r['size_bytes']} vs {r['float_size_bytes']} bytes, "
          f"{r['latency_ms']:.2f} vs {r['float_latency_ms']:.2f} ms", flush=True)
    float_row["latency_ms"] = r["float_latency_ms"]

    # ---- precision: fixed point weights, low-precision float casts
    for f in cfg.frac_bits:
        evaluate(trial("fixed_point", f),
                 lambda f=f: apply_to_weights(deployed, lambda w: fixed_point(w, f)))
    for fmt in cfg.floats:
        evaluate(trial(fmt, 16),
                 lambda fmt=fmt: apply_to_weights(deployed, lambda w: cast_roundtrip(w, fmt)),
                 size_bytes=est_size_bytes(deployed, 16))
    return [{**flat_config(setup), "model": setup.model, "seed": seed, "fold_bn": fold, **row}
            for row in [float_row, *rows]]


def run(ctx: Context) -> list[dict]:
    """Every model, every seed (a worker of N starts at its own share; rows in this order)."""
    jobs = [(setup, finetune, seed) for setup, finetune in ctx.cfg.models()
            for seed in range(ctx.cfg.seeds)]
    rows = {i: run_model(ctx, *jobs[i]) for i in POLICY.order(range(len(jobs)))}
    return [row for i in range(len(jobs)) for row in rows[i]]


write_report = lazy("experiments.quantization.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="quantization", doc=__doc__, for_scale=for_scale,
    model={"smoke": "lenet_300_100", "default": "lenet_300_100", "paper": "mobilenet_v2"},
    model_help="the first model (the MLP; at paper scale the whitepaper's MobileNet-v2)",
    flags=flags,
    configure=configure, report=write_report, run=run)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
