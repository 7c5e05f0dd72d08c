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

import torch
from torch import nn

from experiments.common import (Stopwatch, add_model_args, base_parser, fail, load_data, machine,
                                pick_device, preset, run_eval, run_trial)
from experiments.quantization.config import QuantConfig, Trial, for_scale
from experiments.quantization.report import write_report
from lib import models
from lib.metrics import latency_ms
from lib.quant import (QuantSpec, apply_to_weights, calibrate_model, cast_roundtrip,
                       fixed_point, model_size_bytes, prepare, quantize_weights_, to_int8)
from lib.runs import Run, atomic_torch_save

EXPERIMENT = "quantization"


def parse_args(argv=None) -> tuple[QuantConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    add_model_args(p)  # conv2 at the default scale is ~4x over its 10-minute budget on 2 cores
    a = p.parse_args(argv)
    try:
        scale, cfg = preset(a, for_scale)
        if a.seeds is not None:
            cfg = replace(cfg, seeds=a.seeds)
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


def est_size_bytes(model: nn.Module, weight_bits: int, other_bits: int = 32) -> float:
    """Storage estimate: weight matrices / kernels at `weight_bits`, the rest (biases) at
    `other_bits`; quantization scales are left out."""
    bits = sum(p.numel() * (weight_bits if p.dim() >= 2 else other_bits) for p in model.parameters())
    return bits / 8


def run_seed(cfg: QuantConfig, seed: int, data, scale: str, device) -> list[dict]:
    setup = cfg.setup
    calib_x = data.train_x[:cfg.calib_size]

    def fresh():
        torch.manual_seed(seed)
        return models.build(setup.model, data.input_shape, data.num_classes).to(device)

    # ---- the float model, trained once
    float_run = Run(EXPERIMENT, Trial(setup, seed), scale=scale)
    res = run_trial(float_run, experiment=EXPERIMENT, stage="train", scale=scale,
                    name=f"s{seed}-float", seed=seed, data=data, train_cfg=setup.train,
                    build=fresh, after=lambda m, r: atomic_torch_save(
                        m.state_dict(), float_run.path("final.pt")))
    base = fresh()
    base.load_state_dict(torch.load(float_run.path("final.pt"), map_location=device,
                                    weights_only=True))
    base.eval()
    float_row = {**res, "method": "float", "bits": 32, "early_stop_test_acc": res["test_acc"],
                 "test_acc": res["final_test_acc"], "val_acc": res["final_val_acc"],
                 "size_bytes": est_size_bytes(base, 32)}
    rows = []

    def evaluate_trial(trial: Trial, build, extra=None) -> dict:
        bits = trial.bits if trial.method in ("ptq", "fixed_point") else ""
        name = (f"s{seed}-{trial.method}{bits}-{trial.scope}-{trial.granularity}-"
                f"{trial.calibration}".rstrip("-"))
        r = run_eval(Run(EXPERIMENT, trial, scale=scale), experiment=EXPERIMENT, scale=scale,
                     name=name, data=data, build=build, extra=extra, stage="quantize")
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

        r = run_trial(Run(EXPERIMENT, trial, scale=scale), experiment=EXPERIMENT, stage="quantize",
                      scale=scale, name=f"s{seed}-qat{bits}", seed=seed, data=data,
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

    int8_data = data if device.type == "cpu" else data.to("cpu")
    trial = Trial(setup, seed, "int8", 8, "weights+acts", "per_channel", "histogram",
                  calib_size=cfg.calib_size)
    name = f"s{seed}-int8"
    r = run_eval(Run(EXPERIMENT, trial, scale=scale), experiment=EXPERIMENT, scale=scale,
                 name=name, data=int8_data, build=build_int8, extra=measured, stage="quantize")
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


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    data = load_data(cfg.setup, device)
    rows = [row for seed in range(cfg.seeds) for row in run_seed(cfg, seed, data, scale, device)]
    out = write_report(cfg, rows, scale, wall_s=clock.seconds, machine=machine())
    print(f"wrote {out}/trials.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
