"""Post-training quantization, quantization-aware training, int8 execution and precision.

    python -m experiments.quantization --scale smoke|default|paper [--seeds N] [--model conv2]

For each seed: train the float model once (stage "train", final weights saved as final.pt),
then from those final weights, with no training (stage "quantize"):
- PTQ: k-bit fake quantization of the weights (per tensor / per channel), alone or with the
  activations (per tensor, range calibrated by minmax / percentile / mse on training images);
- QAT: per-channel weights + activations at 4 and 2 bits, calibrated then fine-tuned;
- int8: real int8 execution through torch.ao (x86): accuracy, on-disk size, CPU latency;
- precision: weights rounded to fixed point with f fraction bits, float16 / bfloat16 casts.
Trials live in runs/quantization/<hash>/; finished ones are reused. Outputs:
results/quantization/<scale>/.
"""
from __future__ import annotations

import copy
from dataclasses import replace

from torch import nn

from experiments.common import Context, Experiment, each_seed, lazy
from experiments.quantization.config import Trial, for_scale
from lib.metrics import latency_ms
from lib.quant import (QuantSpec, apply_to_weights, calibrate_model, cast_roundtrip,
                       fixed_point, model_size_bytes, prepare, quantize_weights_, to_int8)


def est_size_bytes(model: nn.Module, weight_bits: int, other_bits: int = 32) -> float:
    """Storage estimate: weight matrices / kernels at `weight_bits`, the rest (biases) at
    `other_bits`; quantization scales are left out."""
    bits = sum(p.numel() * (weight_bits if p.dim() >= 2 else other_bits) for p in model.parameters())
    return bits / 8


def run_seed(ctx: Context, seed: int) -> list[dict]:
    """The float model of `seed`, then every quantized and low-precision copy of it."""
    cfg, setup, data = ctx.cfg, ctx.cfg.setup, ctx.data
    calib_x = data.train_x[:cfg.calib_size]

    # ---- the float model, trained once
    float_run = ctx.run(Trial(setup, seed))
    base, res = ctx.train_final(float_run, model=setup.model, seed=seed, name=f"s{seed}-float",
                                train_cfg=setup.train)
    float_row = {**res, "method": "float", "bits": 32, "early_stop_test_acc": res["test_acc"],
                 "test_acc": res["final_test_acc"], "val_acc": res["final_val_acc"],
                 "size_bytes": est_size_bytes(base, 32)}
    rows = []

    def evaluate_trial(trial: Trial, build, extra=None) -> dict:
        bits = trial.bits if trial.method in ("ptq", "fixed_point") else ""
        name = (f"s{seed}-{trial.method}{bits}-{trial.scope}-{trial.granularity}-"
                f"{trial.calibration}".rstrip("-"))
        r = ctx.evaluate(ctx.run(trial), name=name, build=build, extra=extra, stage="quantize")
        row = {**r, "method": trial.method, "bits": trial.bits, "scope": trial.scope,
               "granularity": trial.granularity, "calibration": trial.calibration}
        print(f"{name:>44}: test acc {row['test_acc']:.4f}", flush=True)
        rows.append(row)
        return row

    # ---- PTQ: no training
    for bits, scope, gran, calib in cfg.ptq_grid():
        wspec = QuantSpec(bits=bits, symmetric=True, per_channel=gran == "per_channel")

        def build(wspec=wspec, scope=scope, calib=calib):
            m = copy.deepcopy(base)
            if scope == "weights":
                return quantize_weights_(m, wspec).eval()
            prepare(m, wspec, QuantSpec(bits=wspec.bits, symmetric=False))
            return calibrate_model(m, calib_x, calib).eval()

        evaluate_trial(Trial(setup, seed, "ptq", bits, scope, gran, calib,
                             calib_size=cfg.calib_size if scope != "weights" else 0), build,
                       extra={"size_bytes": est_size_bytes(base, bits)})

    # ---- QAT: calibrate, then fine-tune with fake quantization in the loop
    for bits in cfg.qat_bits:
        trial = Trial(setup, seed, "qat", bits, "weights+acts", "per_channel", "minmax",
                      calib_size=cfg.calib_size, qat=cfg.qat)

        def build_qat(bits=bits):
            m = prepare(copy.deepcopy(base), QuantSpec(bits=bits, per_channel=True),
                        QuantSpec(bits=bits, symmetric=False))
            return calibrate_model(m, calib_x, "minmax")

        r = ctx.train(ctx.run(trial), stage="quantize", name=f"s{seed}-qat{bits}", seed=seed,
                      train_cfg=cfg.qat, build=build_qat)
        print(f"{f's{seed}-qat{bits}':>44}: test acc {r['final_test_acc']:.4f}", flush=True)
        rows.append({**r, "method": "qat", "bits": bits, "scope": "weights+acts",
                     "granularity": "per_channel", "calibration": "minmax",
                     "early_stop_test_acc": r["test_acc"], "test_acc": r["final_test_acc"],
                     "val_acc": r["final_val_acc"], "size_bytes": est_size_bytes(base, bits)})

    # ---- real int8 (CPU): accuracy, size on disk, latency vs the float model
    cpu_base = copy.deepcopy(base).cpu()
    batch = data.test_x[:cfg.latency_batch].cpu()
    measured: dict = {}  # filled by build(), read by run_eval after it (one measurement)

    def build_int8():
        q = to_int8(cpu_base, calib_x.cpu())
        measured.update(size_bytes=model_size_bytes(q), latency_ms=latency_ms(q, batch),
                        float_size_bytes=model_size_bytes(cpu_base),
                        float_latency_ms=latency_ms(cpu_base, batch))
        return q

    cpu_ctx = ctx if ctx.device.type == "cpu" else replace(ctx, data=data.to("cpu"))
    trial = Trial(setup, seed, "int8", 8, "weights+acts", "per_channel", "histogram",
                  calib_size=cfg.calib_size)
    name = f"s{seed}-int8"
    r = cpu_ctx.evaluate(ctx.run(trial), name=name, build=build_int8, extra=measured,
                         stage="quantize")
    print(f"{name:>44}: test acc {r['test_acc']:.4f}, {r['size_bytes']} vs "
          f"{r['float_size_bytes']} bytes, {r['latency_ms']:.2f} vs {r['float_latency_ms']:.2f} ms",
          flush=True)
    rows.append({**r, "method": "int8", "bits": 8, "scope": "weights+acts",
                 "granularity": "per_channel", "calibration": "histogram"})
    float_row["latency_ms"] = r["float_latency_ms"]

    # ---- precision: fixed point weights, low-precision float casts
    for f in cfg.frac_bits:
        evaluate_trial(Trial(setup, seed, "fixed_point", f, "weights"),
                       lambda f=f: apply_to_weights(base, lambda w: fixed_point(w, f)))
    for fmt in cfg.floats:
        evaluate_trial(Trial(setup, seed, fmt, 16, "weights"),
                       lambda fmt=fmt: apply_to_weights(base, lambda w: cast_roundtrip(w, fmt)),
                       extra={"size_bytes": est_size_bytes(base, 16)})
    return [{"seed": seed, **row} for row in [float_row, *rows]]


write_report = lazy("experiments.quantization.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="quantization", doc=__doc__, for_scale=for_scale, model="lenet_300_100",
    # conv2 at the default scale is ~4x over its 10-minute budget on 2 cores
    model_help="lenet_300_100, conv2, conv4, conv6", report=write_report,
    run=each_seed(run_seed))
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
