"""The "mix it" recipe: teacher -> distilled MobileNet student -> filter pruning -> quantization.

    python -m experiments.compression_pipeline --scale smoke|default|paper [--seeds N]
        [--model mobilenet_tiny] [--criterion l1] [--ratio 0.5]

The teacher (resnet8 with the TeacherSpec recipe) is trained once and shared with the
distillation experiments (runs/teachers/). For each seed, one row per stage:
- student: the MobileNet trained alone on the labels (the reference row);
- kd: the same MobileNet distilled from the teacher, alpha·KD + (1 − alpha)·CE, the teacher's
  logits cached once (LogitTargets) when there is no augmentation, computed online otherwise;
- pruned: filters of the KD student removed physically (criterion, ratio of every prunable
  unit: the stem's and every pointwise conv's output channels), no training;
- pruned+kd: the pruned student fine-tuned with the same distillation loss;
- ptq: k-bit fake quantization of its weights (per channel) and activations (per tensor,
  calibrated on training images), no training;
- qat: k-bit quantization-aware fine-tuning (calibrated, then trained with KD);
- int8: real int8 execution through torch.ao (x86), size on disk and CPU latency.
Every accuracy is of the final weights, which the next stage starts from. Trials live in
runs/compression_pipeline/<hash>/; finished ones are reused. Outputs:
results/compression_pipeline/<scale>/.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.common import (Stopwatch, base_parser, fail, load_data, machine, pick_device,
                                preset, run_eval, run_trial)
from experiments.compression_pipeline.config import (STAGES, PipelineConfig, Trial, for_scale,
                                                     teacher_for)
from experiments.compression_pipeline.report import write_report
from experiments.teachers import teacher
from lib import models
from lib.distill import KD, cached_logits
from lib.metrics import count_macs, count_params, latency_ms
from lib.prune.structured import prune_structured
from lib.prune.surgery import family, load_pruned, save_pruned
from lib.quant import QuantSpec, calibrate_model, model_size_bytes, prepare, to_int8
from lib.runs import Run, atomic_torch_save
from lib.train import Hook

EXPERIMENT = "compression_pipeline"


def parse_args(argv=None) -> tuple[PipelineConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    p.add_argument("--model", default="mobilenet_tiny",
                   help="the student: mobilenet_tiny (default), mobilenet, or any model "
                        "structured surgery supports (vgg_*, resnet*, lenet_300_100)")
    p.add_argument("--dataset", default=None, help="override the scale's dataset")
    p.add_argument("--criterion", default=None, help="filter importance: l1, l2, fpgm, bn_gamma, apoz, random")
    p.add_argument("--ratio", type=float, default=None, help="fraction of each unit's channels pruned")
    p.add_argument("--calibration", default=None, help="PTQ activation ranges: minmax, percentile, mse")
    a = p.parse_args(argv)
    try:
        scale, cfg = preset(a, for_scale)
        if a.dataset:  # the teacher follows the student's data
            cfg = replace(cfg, teacher=teacher_for(cfg.setup, train=cfg.teacher.train))
        family(models.build(cfg.setup.model, (3, 32, 32), 10))  # prunable? one line if not
        if a.criterion is not None:
            cfg = replace(cfg, prune=replace(cfg.prune, criterion=a.criterion))
        if a.ratio is not None:
            cfg = replace(cfg, prune=replace(cfg.prune, ratio=a.ratio))
        if a.calibration is not None:
            cfg = replace(cfg, calibration=a.calibration)
        if a.seeds is not None:
            cfg = replace(cfg, seeds=a.seeds)
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


class HintonKD(Hook):
    """alpha·KD(student, teacher) + (1 − alpha)·CE(labels) through the loop's hooks.

    The loop always adds CE, so the hook adds alpha·(KD − CE). The teacher's logits come from a
    table cached on the training set (looked up by batch index) or, with augmentation, from the
    teacher itself on the batch.
    """

    def __init__(self, T: float, alpha: float, table: Tensor | None = None,
                 teacher: nn.Module | None = None):
        self.kd, self.alpha, self.table, self.teacher = KD(T), alpha, table, teacher
        self.index: Tensor | None = None

    def on_batch(self, index: Tensor) -> None:
        self.index = index

    def extra_loss(self, x: Tensor, y: Tensor, logits: Tensor) -> Tensor:
        if self.table is not None:
            target = self.table[self.index]
        else:
            with torch.no_grad():
                target = self.teacher(x)
        return self.alpha * (self.kd(logits, target) - F.cross_entropy(logits, y))


def est_size_bytes(model: nn.Module, weight_bits: int) -> float:
    """Storage estimate: weight matrices / kernels at `weight_bits`, 1-d parameters (BN, biases)
    at 32 bits; quantization scales and BN running statistics are left out."""
    return sum(p.numel() * (weight_bits if p.dim() >= 2 else 32) for p in model.parameters()) / 8


def describe(model: nn.Module, input_shape, batch: Tensor) -> dict:
    """Parameters, MACs, float32 size estimate, saved state-dict bytes, CPU latency on `batch`."""
    cpu = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    return {"params": count_params(cpu), "macs": count_macs(cpu, input_shape),
            "size_bytes": est_size_bytes(cpu, 32), "saved_bytes": model_size_bytes(cpu),
            "latency_ms": latency_ms(cpu, batch)}


def run_seed(cfg: PipelineConfig, seed: int, data, scale: str, device, teach: nn.Module,
             table: Tensor | None) -> list[dict]:
    setup, d, shape = cfg.setup, cfg.distill, data.input_shape
    calib_x = data.train_x[:cfg.calib_size]
    batch = data.test_x[:cfg.latency_batch].cpu()
    online = None if table is not None else teach
    kd_hooks = lambda m: [HintonKD(d.T, d.alpha, table, online)]  # noqa: E731
    rows: list[dict] = []

    def fresh():
        torch.manual_seed(seed)
        return models.build(setup.model, shape, data.num_classes).to(device)

    def load(run: Run) -> nn.Module:
        m = fresh()
        m.load_state_dict(torch.load(run.path("final.pt"), map_location=device, weights_only=True))
        return m.eval()

    def add(method: str, bits: int, res: dict, trained: bool, **metrics):
        row = {**res, "method": method, "bits": bits, **metrics}
        if trained:  # the final weights go on to the next stage: report them, not early stop
            row.update(early_stop_test_acc=res["test_acc"], test_acc=res["final_test_acc"],
                       val_acc=res["final_val_acc"])
        rows.append(row)
        name = f"s{seed}-{method}" + (str(bits) if method in ("ptq", "qat") else "")
        print(f"{name:>18}: test acc "
              f"{row['test_acc']:.4f}, {row['params']} params, {row['size_bytes']:.0f} bytes", flush=True)

    def save_final(run: Run):
        return lambda m, r: atomic_torch_save(m.state_dict(), run.path("final.pt"))

    # ---- the student alone (reference) and the distilled student
    trial = Trial(setup, seed=seed, method="student")
    run = Run(EXPERIMENT, trial, scale=scale)
    res = run_trial(run, experiment=EXPERIMENT, stage="train", scale=scale, name=f"s{seed}-student",
                    seed=seed, data=data, train_cfg=setup.train, build=fresh, after=save_final(run))
    student = load(run)
    add("student", 32, res, True, **describe(student, shape, batch))

    kd_trial = Trial(setup, cfg.teacher, seed, "kd", distill=d)
    kd_run = Run(EXPERIMENT, kd_trial, scale=scale)
    res = run_trial(kd_run, experiment=EXPERIMENT, stage="distill", scale=scale, name=f"s{seed}-kd",
                    seed=seed, data=data, train_cfg=setup.train, build=fresh, hooks_for=kd_hooks,
                    after=save_final(kd_run))
    kd_model = load(kd_run)
    add("kd", 32, res, True, **describe(kd_model, shape, batch))

    # ---- filter pruning of the distilled student, then fine-tuning with KD
    def pruned():
        m, _ = prune_structured(kd_model, cfg.prune.criterion, cfg.prune.ratio, x=calib_x, seed=seed)
        return m

    p_trial = replace(kd_trial, method="pruned", prune=cfg.prune)
    res = run_eval(Run(EXPERIMENT, p_trial, scale=scale), experiment=EXPERIMENT, scale=scale,
                   name=f"s{seed}-pruned", data=data, build=pruned, stage="prune")
    p_model = pruned().eval()
    add("pruned", 32, res, False, **describe(p_model, shape, batch))

    ft_trial = replace(p_trial, method="pruned+kd", finetune=cfg.finetune)
    ft_run = Run(EXPERIMENT, ft_trial, scale=scale)
    res = run_trial(ft_run, experiment=EXPERIMENT, stage="finetune", scale=scale,
                    name=f"s{seed}-pruned+kd", seed=seed, data=data, train_cfg=cfg.finetune,
                    build=pruned, hooks_for=kd_hooks,
                    after=lambda m, r: save_pruned(m, ft_run.path("final.pt")))
    ft = load_pruned(ft_run.path("final.pt"), map_location=str(device)).eval()
    ft_desc = describe(ft, shape, batch)
    add("pruned+kd", 32, res, True, **ft_desc)
    same = {k: ft_desc[k] for k in ("params", "macs")}

    def fake_quant(bits: int) -> nn.Module:  # per-channel weights, per-tensor activations
        return prepare(copy.deepcopy(ft), QuantSpec(bits=bits, per_channel=True),
                       QuantSpec(bits=bits, symmetric=False))

    # ---- PTQ: fake quantization of the fine-tuned model, no training
    for bits in cfg.ptq_bits:
        trial = replace(ft_trial, method="ptq", bits=bits, calib_size=cfg.calib_size,
                        calibration=cfg.calibration)
        res = run_eval(Run(EXPERIMENT, trial, scale=scale), experiment=EXPERIMENT, scale=scale,
                       name=f"s{seed}-ptq{bits}", data=data, stage="quantize",
                       build=lambda b=bits: calibrate_model(fake_quant(b), calib_x, cfg.calibration).eval())
        add("ptq", bits, res, False, **same, size_bytes=est_size_bytes(ft, bits))

    # ---- QAT: calibrate, then fine-tune with fake quantization in the loop (and KD)
    for bits in cfg.qat_bits:
        trial = replace(ft_trial, method="qat", bits=bits, qat=cfg.qat, calib_size=cfg.calib_size)
        res = run_trial(Run(EXPERIMENT, trial, scale=scale), experiment=EXPERIMENT, stage="quantize",
                        scale=scale, name=f"s{seed}-qat{bits}", seed=seed, data=data,
                        train_cfg=cfg.qat, hooks_for=kd_hooks,
                        build=lambda b=bits: calibrate_model(fake_quant(b), calib_x, "minmax"))
        add("qat", bits, res, True, **same, size_bytes=est_size_bytes(ft, bits))

    # ---- real int8 (CPU): accuracy, size on disk, latency
    measured: dict = {}

    def build_int8():
        q = to_int8(ft, calib_x.cpu())  # a CPU copy; ft stays where it is
        measured.update(saved_bytes=model_size_bytes(q), latency_ms=latency_ms(q, batch))
        return q

    trial = replace(ft_trial, method="int8", bits=8, calib_size=cfg.calib_size)
    try:
        res = run_eval(Run(EXPERIMENT, trial, scale=scale), experiment=EXPERIMENT, scale=scale,
                       name=f"s{seed}-int8", data=data if device.type == "cpu" else data.to("cpu"),
                       build=build_int8, extra=measured, stage="quantize")
        add("int8", 8, res, False, **same, size_bytes=est_size_bytes(ft, 8))
    except (RuntimeError, NotImplementedError, ValueError) as e:  # e.g. residual adds
        print(f"s{seed}-int8: skipped, torch.ao cannot run {setup.model}: {str(e).splitlines()[0]}")
    return [{"seed": seed, "stage": STAGES.index(r["method"]), **r} for r in rows]


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    data = load_data(cfg.setup, device)
    teach, t_res = teacher(cfg.teacher, data, scale, device)
    batch = data.test_x[:cfg.latency_batch].cpu()
    t_row = {**t_res, "seed": cfg.teacher.seed, "stage": 0, "method": "teacher", "bits": 32,
             "test_acc": t_res["final_test_acc"], "val_acc": t_res["final_val_acc"],
             "early_stop_test_acc": t_res["test_acc"],
             **describe(teach, data.input_shape, batch)}
    print(f"{'teacher':>18}: test acc {t_row['test_acc']:.4f}, {t_row['params']} params", flush=True)
    # fixed teacher, no augmentation: its logits on the training set, computed once
    table = None if cfg.setup.train.augment else cached_logits(teach, data.train_x)
    rows = [t_row] + [row for seed in range(cfg.seeds)
                      for row in run_seed(cfg, seed, data, scale, device, teach, table)]
    out = write_report(cfg, rows, scale, wall_s=clock.seconds, machine=machine())
    print(f"wrote {out}/trials.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
