"""FitNet (two-stage and one-stage) and Attention Transfer, alone and with KD.

    python -m experiments.feature_kd --scale smoke|default|paper [--seeds N] [--methods at,kd]

One teacher (experiments.teachers, shared with logit_kd and rkd) and, per seed, one student per
method: alone (CE), KD, FitNet as in the paper (stage 1: the student's layers up to the guided
layer and a regressor W_r trained on the hint loss alone; stage 2: the whole student with CE or
KD), FitNet in one stage (CE + 100·hint, RepDistiller), Attention Transfer (CE + 1000·AT over
every stage pair), and each feature method with KD. Layer pairs are the stage outputs of equal
spatial size (layers.py). The teacher runs online for feature terms; the KD-only rows read its
logits cached once. Trials live in runs/feature_kd/<hash>/; finished ones are reused. Outputs:
results/feature_kd/<scale>/.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor, nn

from experiments.common import Context, Experiment, fail, parse_list, lazy
from experiments.feature_kd.config import (DEFAULT_STUDENT, METHODS, RECIPES, FeatureKDConfig,
                                           Trial, for_scale, make_trial)
from experiments.feature_kd.layers import hint_pair, modules_up_to, stage_outputs, stage_pairs
from experiments.teachers import teacher
from lib import models
from lib.distill import (KD, AttentionTransfer, Distill, FeatureTap, FitNet, Term,
                         teacher_outputs, weighted_ce)
from lib.runs import atomic_torch_save


def flags(p) -> None:
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {', '.join(METHODS)}")


def configure(cfg: FeatureKDConfig, a) -> FeatureKDConfig:
    cfg = replace(cfg, teacher=replace(cfg.teacher, **cfg.setup.data_fields()))  # the students' data
    return cfg if a.methods is None else replace(cfg, methods=parse_list(a.methods, METHODS, "methods"))


@dataclass
class Shared:
    """The teacher and what every trial of one invocation computes from it once."""
    pairs: list[tuple[str, str]]  # (student layer, teacher layer) per matched stage
    channels: dict[str, int]  # output channels of every paired layer, student's and teacher's
    teacher: nn.Module
    tables: dict[str, Tensor] | None  # {"logits": on the training set}, for the KD-only rows
    probe: Tensor  # test images on which the attention gap is measured
    probe_teacher: list[Tensor]  # the teacher's paired features on them


def resolve_layers(ctx: Context) -> tuple[list, dict]:
    """Stage pairs of the (untrained) student and teacher, and each paired layer's channels;
    exits with one line when they share no feature-map size (before any training)."""
    cfg, shape, k = ctx.cfg, ctx.data.input_shape, ctx.data.num_classes
    student, teacher_net = models.build(cfg.setup.model, shape, k), models.build(cfg.teacher.model, shape, k)
    try:
        pairs = stage_pairs(student, teacher_net, shape)
    except ValueError as e:
        fail(str(e))
    channels = {name: out[0] for net in (student, teacher_net)
                for name, out in stage_outputs(net, shape).values()}
    return pairs, channels


def terms(trial: Trial, shared: Shared, device: torch.device) -> list[Term]:
    """The trial's distillation terms: its feature term (over its layer pairs), then KD."""
    out = []
    if trial.feature == "fitnet":  # one pair; the regressor W_r trains with the student
        s, t = trial.student_layers[0], trial.teacher_layers[0]
        fitnet = FitNet(shared.channels[s], shared.channels[t]).to(device)
        out.append(Term("fitnet", fitnet, trial.feature_weight, s, t))
    elif trial.feature == "attention":  # every pair, summed
        out.append(Term("attention", AttentionTransfer(), trial.feature_weight,
                        trial.student_layers, trial.teacher_layers))
    if trial.kd_weight:
        out.append(Term("kd", KD(trial.T), trial.kd_weight))
    return out


def train_kw(trial: Trial, shared: Shared, device: torch.device) -> dict:
    """What `ctx.train` needs for `trial`'s loss: the label weight as the loop's criterion, the
    rest in one Distill hook (the teacher online for feature terms, cached logits for KD)."""
    def hooks_for(student: nn.Module) -> list[Distill]:  # called after build: W_r's init
        found = terms(trial, shared, device)
        return [Distill(student, shared.teacher, found, tables=shared.tables)] if found else []
    criterion = weighted_ce(trial.ce_weight) if trial.ce_weight != 1 else None
    return dict(hooks_for=hooks_for, criterion=criterion)


@torch.no_grad()
def attention_gap(student: nn.Module, shared: Shared) -> float:
    """AT loss (Σ over stage pairs of the mean squared map difference) between the trained
    student and the teacher on the probe test images: how far the attention maps still are."""
    student.eval()
    with FeatureTap(student, [s for s, _ in shared.pairs]) as tap:
        student(shared.probe)
        return AttentionTransfer()(tap(), shared.probe_teacher).item()


def build_student(ctx: Context, seed: int, start: dict | None = None) -> Callable[[], nn.Module]:
    """A fresh student at `seed`'s init; with `start`, those entries loaded over it."""
    def build() -> nn.Module:
        m = ctx.build(ctx.cfg.setup.model, seed)
        if start is not None:
            m.load_state_dict(start, strict=False)
        return m
    return build


def stage_one(ctx: Context, shared: Shared, seed: int) -> tuple[dict, dict]:
    """FitNet's stage 1 for `seed` (shared by both two-stage methods): the lower layers' trained
    weights, and the columns it adds to their rows."""
    hint = make_trial(ctx.cfg, shared.pairs, "fitnet_2stage", seed, stage="hint")
    run = ctx.run(hint)
    lower = modules_up_to(build_student(ctx, seed)(), hint.student_layers[0], ctx.data.input_shape)

    def build_lower() -> nn.Module:  # only the guided layer and below train in stage 1
        m = build_student(ctx, seed)()
        for name, p in m.named_parameters():
            p.requires_grad_(name.rpartition(".")[0] in lower)
        return m

    def save(m: nn.Module, res) -> dict:
        atomic_torch_save(m.state_dict(), run.path("final.pt"))
        return {"hint_loss": res.final["loss_fitnet"]}

    r = ctx.train(run, stage="hint", name=f"s{seed}-fitnet-stage1", seed=seed,
                  train_cfg=ctx.cfg.hint_train, build=build_lower, after=save,
                  **train_kw(hint, shared, ctx.device))
    state = run.load("final.pt", ctx.device)
    start = {k: v for k, v in state.items() if k.rpartition(".")[0] in lower}
    return start, {"hint_loss": r["hint_loss"], "hint_wall_s": r["train_wall_s"]}


def run_method(ctx: Context, shared: Shared, method: str, seed: int) -> dict:
    cfg = ctx.cfg
    trial = make_trial(cfg, shared.pairs, method, seed)
    start, extra = stage_one(ctx, shared, seed) if RECIPES[method].two_stage else (None, {})
    res = ctx.train(ctx.run(trial), stage="distill", name=f"s{seed}-{method}", seed=seed,
                    train_cfg=cfg.setup.train, build=build_student(ctx, seed, start),
                    after=lambda m, r: {"at_gap": attention_gap(m, shared)},
                    **train_kw(trial, shared, ctx.device))
    print(f"{f's{seed}-{method}':>22}: test acc {res['test_acc']:.4f} (at the best validation "
          f"accuracy), attention gap {res['at_gap']:.4f}", flush=True)
    return {**res, **extra, "method": method, "seed": seed, "model": cfg.setup.model,
            "feature": trial.feature, "ce_weight": trial.ce_weight, "kd_weight": trial.kd_weight,
            "T": trial.T, "feature_weight": trial.feature_weight,
            "student_layers": ",".join(trial.student_layers),
            "teacher_layers": ",".join(trial.teacher_layers)}


def share(ctx: Context) -> tuple[Shared, dict]:
    """The layer pairs, the trained teacher and what is computed from it once; its result."""
    cfg, data = ctx.cfg, ctx.data
    pairs, channels = resolve_layers(ctx)
    net, res = teacher(cfg.teacher, data, ctx.scale, ctx.device)
    if cfg.setup.train.channels_last:
        net.to(memory_format=torch.channels_last)
    kd_cached = any(RECIPES[m].kd for m in cfg.methods) and not cfg.setup.train.augment
    probe = data.test_x[:cfg.probe_size]
    layers = [t for _, t in pairs]
    probe_teacher = teacher_outputs(net, probe, layers)
    shared = Shared(pairs, channels, net, teacher_outputs(net, data.train_x) if kd_cached else None,
                    probe, [probe_teacher[n] for n in layers])
    return shared, res


def run(ctx: Context) -> tuple[list[dict], list[tuple[str, str]]]:
    """The teacher's row and every student's; the layer pairs (for the report)."""
    cfg = ctx.cfg
    shared, t_res = share(ctx)
    print(f"teacher {cfg.teacher.model}: test acc {t_res['final_test_acc']:.4f}; layer pairs "
          f"{shared.pairs}, FitNet hint {hint_pair(shared.pairs)}", flush=True)
    teacher_row = {**t_res, "method": "teacher", "seed": cfg.teacher.seed,
                   "model": cfg.teacher.model, "test_acc": t_res["final_test_acc"],
                   "val_acc": t_res["final_val_acc"]}
    rows = [teacher_row] + [run_method(ctx, shared, m, seed) for seed in range(cfg.seeds)
                            for m in cfg.methods]
    return rows, shared.pairs


write_report = lazy("experiments.feature_kd.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="feature_kd", doc=__doc__, for_scale=for_scale, model=DEFAULT_STUDENT,
    model_help="the student", flags=flags,
    configure=configure, report=write_report, run=run)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
