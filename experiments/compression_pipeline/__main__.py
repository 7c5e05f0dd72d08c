"""The "mix it" recipe: teacher -> distilled MobileNet student -> filter pruning -> quantization.

    python -m experiments.compression_pipeline --scale smoke|default|paper [--seeds N]
        [--model mobilenet_tiny] [--criterion l1] [--ratio 0.5]

The teacher (the TeacherSpec recipe: resnet8, at paper scale torchvision's resnet101) is trained
once and shared with the distillation experiments (runs/teachers/). For each seed, one row per stage:
- student: the MobileNet trained alone on the labels (the reference row);
- kd: the same MobileNet distilled from the teacher, alpha·KD + (1 − alpha)·CE, the teacher's
  logits cached once when there is no augmentation, computed online otherwise;
- pruned: filters of the KD student removed physically (criterion, ratio of every prunable
  unit: the stem's and every pointwise conv's output channels), no training; by our surgery
  where it covers the student, through DepGraph otherwise (torchvision's mobilenet_v2, the
  paper-scale student);
- pruned+kd: the pruned student fine-tuned with the same distillation loss;
- ptq: its BN folded into the convs (as the deployed model has it), then WkAa fake
  quantization of its weights (k bits, per channel) and activations (a bits, per tensor,
  calibrated on training images), no training: W8A8 and W4A8;
- qat: W4A8 quantization-aware fine-tuning of the folded model (calibrated, trained with KD);
- int8: real int8 execution through torch.ao (x86): accuracy, bytes on disk and of the weights,
  CPU latency, each beside the float model it starts from.
Every accuracy is of the final weights, which the next stage starts from. Trials live in
runs/compression_pipeline/<hash>/; finished ones are reused. Outputs:
results/compression_pipeline/<scale>/.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from functools import partial

import torch
from torch import Tensor, nn

from experiments.common import Context, Experiment, lazy
from experiments.compression_pipeline.config import STAGES, PipelineConfig, for_scale, stage_trials
from experiments.quantization.__main__ import check_quantizable
from experiments.teachers import teacher
from lib import models
from lib.distill import KD, Distill, Term, teacher_outputs, weighted_ce
from lib.metrics import count_macs, count_params, latency_ms
from lib.prune import depgraph
from lib.prune.structured import prune_structured
from lib.prune.surgery import family, load_pruned, save_pruned
from lib.quant import (QuantSpec, calibrate_model, est_size_bytes, fold_bn, int8_weight_bytes,
                       model_size_bytes, prepare, to_int8)
from lib.runs import Run, atomic_torch_save


def flags(p) -> None:
    p.add_argument("--criterion", default=None, help="filter importance: l1, l2, fpgm, bn_gamma, apoz, random")
    p.add_argument("--ratio", type=float, default=None, help="fraction of each unit's channels pruned")
    p.add_argument("--calibration", default=None, help="PTQ activation ranges: minmax, percentile, mse")


def by_surgery(model: nn.Module) -> bool:
    """Our channel surgery covers `model` (our MLP, VGG, ResNet, MobileNet); the rest, e.g.
    torchvision's MobileNetV2, is pruned through DepGraph (lib/prune/depgraph.py)."""
    try:
        family(model)
        return True
    except ValueError:
        return False


def configure(cfg: PipelineConfig, a) -> PipelineConfig:
    """--criterion, --ratio, --calibration; the teacher follows the student's data (--dataset);
    the student must be a model that surgery or DepGraph can prune, with a criterion it scores,
    and whose BN folds into its convs and that int8 can run (no residual adds of our ResNets)."""
    cfg = replace(cfg, teacher=replace(cfg.teacher, **cfg.setup.data_fields()))
    if a.criterion is not None:
        cfg = replace(cfg, prune=replace(cfg.prune, criterion=a.criterion))
    if a.ratio is not None:
        cfg = replace(cfg, prune=replace(cfg.prune, ratio=a.ratio))
    student = models.build(cfg.setup.model, (3, 32, 32), 10)
    if not by_surgery(student):  # one line if DepGraph cannot score the criterion or cut the model
        depgraph.check_criterion(cfg.prune.criterion, "prune.criterion")
        if not depgraph.prunable_layers(student, (3, 32, 32)):
            raise ValueError(f"model: '{cfg.setup.model}' has no layer that can be pruned alone")
    check_quantizable(cfg.setup)
    return cfg if a.calibration is None else replace(cfg, calibration=a.calibration)


def describe(model: nn.Module, input_shape, batch: Tensor) -> dict:
    """Parameters, MACs, float32 size estimate, saved state-dict bytes, CPU latency on `batch`."""
    cpu = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    return {"params": count_params(cpu), "macs": count_macs(cpu, input_shape),
            "size_bytes": est_size_bytes(cpu, 32), "saved_bytes": model_size_bytes(cpu),
            "latency_ms": latency_ms(cpu, batch)}


def run_seed(ctx: Context, seed: int, teach: nn.Module, tables: dict[str, Tensor] | None
             ) -> list[dict]:
    """Every stage of one seed, each starting from the previous stage's final weights."""
    cfg, data, device = ctx.cfg, ctx.data, ctx.device
    setup, d, shape = cfg.setup, cfg.distill, data.input_shape
    calib_x = data.train_x[:cfg.calib_size]
    batch = data.test_x[:cfg.latency_batch].cpu()
    # Hinton's mix: alpha·KD through the teacher hook, (1 − alpha)·CE as the loop's criterion
    kd = dict(hooks_for=lambda m: [Distill(m, teach, [Term("kd", KD(d.T), d.alpha)], tables)],
              criterion=weighted_ce(1 - d.alpha))
    trials, rows = stage_trials(cfg, seed), []

    def fresh():
        return ctx.build(setup.model, seed)

    def load(run: Run) -> nn.Module:
        m = fresh()
        m.load_state_dict(run.load("final.pt", device))
        return m.eval()

    def add(method: str, bits: int, res: dict, trained: bool, act_bits: int = 32, **metrics):
        row = {**res, "method": method, "bits": bits, "act_bits": act_bits, **metrics}
        if trained:  # the final weights go on to the next stage: report them, not early stop
            row.update(early_stop_test_acc=res["test_acc"], test_acc=res["final_test_acc"],
                       val_acc=res["final_val_acc"])
        rows.append(row)
        name = f"s{seed}-{method}" + (f"-w{bits}a{act_bits}" if method in ("ptq", "qat") else "")
        print(f"{name:>18}: test acc "
              f"{row['test_acc']:.4f}, {row['params']} params, {row['size_bytes']:.0f} bytes", flush=True)

    def save_final(run: Run):
        return lambda m, r: atomic_torch_save(m.state_dict(), run.path("final.pt"))

    # ---- the student alone (reference) and the distilled student
    run = ctx.run(trials["student", 32, 32])
    res = ctx.train(run, stage="train", name=f"s{seed}-student", seed=seed,
                    train_cfg=setup.train, build=fresh, after=save_final(run))
    student = load(run)
    add("student", 32, res, True, **describe(student, shape, batch))

    kd_run = ctx.run(trials["kd", 32, 32])
    res = ctx.train(kd_run, stage="distill", name=f"s{seed}-kd", seed=seed,
                    train_cfg=setup.train, build=fresh, after=save_final(kd_run), **kd)
    kd_model = load(kd_run)
    add("kd", 32, res, True, **describe(kd_model, shape, batch))

    # ---- filter pruning of the distilled student, then fine-tuning with KD: by our surgery
    # where it covers the student, else through DepGraph (torchvision's MobileNetV2)
    surgery = by_surgery(kd_model)
    if surgery:
        save, load_ft = save_pruned, load_pruned
    else:
        save = partial(depgraph.save_pruned, name=setup.model, input_shape=shape,
                       num_classes=data.num_classes)
        load_ft = depgraph.load_pruned

    def pruned():
        crit, ratio = cfg.prune.criterion, cfg.prune.ratio
        m, _ = (prune_structured(kd_model, crit, ratio, x=calib_x, seed=seed) if surgery else
                depgraph.prune_structured(kd_model, crit, ratio, shape, seed=seed))
        return m

    res = ctx.evaluate(ctx.run(trials["pruned", 32, 32]), name=f"s{seed}-pruned", build=pruned,
                       stage="prune")
    p_model = pruned().eval()
    add("pruned", 32, res, False, **describe(p_model, shape, batch))

    ft_run = ctx.run(trials["pruned+kd", 32, 32])
    res = ctx.train(ft_run, stage="finetune", name=f"s{seed}-pruned+kd", seed=seed,
                    train_cfg=cfg.finetune, build=pruned,
                    after=lambda m, r: save(m, ft_run.path("final.pt")), **kd)
    ft = ft_run.load("final.pt", str(device), load_ft).eval()
    ft_desc = describe(ft, shape, batch)
    add("pruned+kd", 32, res, True, **ft_desc)
    same = {k: ft_desc[k] for k in ("params", "macs")}

    folded = fold_bn(ft)  # BN folded into the convs, as the deployed model has it

    def fake_quant(bits: int, act_bits: int) -> nn.Module:  # per-channel weights, per-tensor acts
        return prepare(copy.deepcopy(folded), QuantSpec(bits=bits, per_channel=True),
                       QuantSpec(bits=act_bits, symmetric=False))

    # ---- PTQ: fake quantization of the fine-tuned model, no training
    for bits, act_bits in cfg.ptq_bits:
        res = ctx.evaluate(ctx.run(trials["ptq", bits, act_bits]), stage="quantize",
                           name=f"s{seed}-ptq-w{bits}a{act_bits}",
                           build=lambda b=bits, a=act_bits: calibrate_model(
                               fake_quant(b, a), calib_x, cfg.calibration).eval())
        add("ptq", bits, res, False, act_bits, **same, size_bytes=est_size_bytes(folded, bits))

    # ---- QAT: calibrate, then fine-tune with fake quantization in the loop (and KD)
    for bits, act_bits in cfg.qat_bits:
        res = ctx.train(ctx.run(trials["qat", bits, act_bits]), stage="quantize",
                        name=f"s{seed}-qat-w{bits}a{act_bits}", seed=seed, train_cfg=cfg.qat,
                        **kd, build=lambda b=bits, a=act_bits: calibrate_model(
                            fake_quant(b, a), calib_x, "minmax").train())
        add("qat", bits, res, True, act_bits, **same, size_bytes=est_size_bytes(folded, bits))

    # ---- real int8 (CPU): accuracy; bytes on disk and of the weights, and latency, each
    # measured beside the float model it is converted from (torch.ao folds BN itself)
    cpu_ft = copy.deepcopy(ft).cpu().eval().to(memory_format=torch.contiguous_format)
    measured: dict = {}

    def build_int8():
        q = to_int8(cpu_ft, calib_x.cpu())
        measured.update(saved_bytes=model_size_bytes(q), latency_ms=latency_ms(q, batch),
                        float_saved_bytes=model_size_bytes(cpu_ft),
                        float_latency_ms=latency_ms(cpu_ft, batch),
                        weight_bytes=int8_weight_bytes(q),
                        float_weight_bytes=4 * sum(p.numel() for p in cpu_ft.parameters()
                                                   if p.dim() >= 2))
        return q

    on_cpu = ctx if device.type == "cpu" else replace(ctx, data=data.to("cpu"))
    res = on_cpu.evaluate(ctx.run(trials["int8", 8, 8]), name=f"s{seed}-int8", build=build_int8,
                          extra=measured, stage="quantize")
    add("int8", 8, res, False, 8, **same, size_bytes=est_size_bytes(folded, 8))
    return [{"seed": seed, "stage": STAGES.index(r["method"]), **r} for r in rows]


def run(ctx: Context) -> list[dict]:
    """The shared teacher's row, then every stage of every seed."""
    cfg, data = ctx.cfg, ctx.data
    teach, t_res = teacher(cfg.teacher, data, ctx.scale, ctx.device)
    batch = data.test_x[:cfg.latency_batch].cpu()
    t_row = {**t_res, "seed": cfg.teacher.seed, "stage": 0, "method": "teacher", "bits": 32,
             "act_bits": 32,
             "test_acc": t_res["final_test_acc"], "val_acc": t_res["final_val_acc"],
             "early_stop_test_acc": t_res["test_acc"],
             **describe(teach, data.input_shape, batch)}
    print(f"{'teacher':>18}: test acc {t_row['test_acc']:.4f}, {t_row['params']} params", flush=True)
    # fixed teacher, no augmentation: its logits on the training set, computed once
    tables = None if cfg.setup.train.augment else teacher_outputs(teach, data.train_x)
    return [t_row] + [row for seed in range(cfg.seeds)
                      for row in run_seed(ctx, seed, teach, tables)]


write_report = lazy("experiments.compression_pipeline.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="compression_pipeline", doc=__doc__, for_scale=for_scale, model="mobilenet_tiny",
    model_help="the student: mobilenet_tiny, mobilenet, mobilenet_v2, or any model that our "
               "surgery (vgg_*, lenet_300_100) or DepGraph can prune and whose BN folds into its "
               "convs for int8",
    flags=flags, configure=configure, report=write_report, run=run)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
