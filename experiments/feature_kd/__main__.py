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
import torch
from torch import Tensor, nn

from experiments.common import (Stopwatch, base_parser, check_scale, fail, load_data, machine,
                                parse_list, pick_device, preset, run_trial)
from experiments.feature_kd.config import (DEFAULT_STUDENT, METHODS, RECIPES, FeatureKDConfig,
                                           Trial, for_scale)
from experiments.feature_kd.hooks import LabelWeight, OnlineTeacher
from experiments.feature_kd.layers import hint_pair, modules_up_to, stage_outputs, stage_pairs
from experiments.feature_kd.report import write_report
from experiments.teachers import teacher
from lib import models
from lib.data import Splits
from lib.distill import KD, AttentionTransfer, FeatureTap, FitNet, LogitTargets, cached_logits
from lib.runs import Run, atomic_torch_save
from lib.train import Hook

EXPERIMENT = "feature_kd"


def parse_args(argv=None) -> tuple[FeatureKDConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    p.add_argument("--model", default=None, help="the student (default: vgg_tiny; paper: resnet20)")
    p.add_argument("--dataset", default=None, help="override the scale's dataset")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {', '.join(METHODS)}")
    a = p.parse_args(argv)
    try:
        a.model = a.model or DEFAULT_STUDENT[check_scale(a.scale)]
        scale, cfg = preset(a, for_scale)
        if a.methods is not None:
            cfg = replace(cfg, methods=parse_list(a.methods, METHODS, "methods"))
        if a.seeds is not None:
            cfg = replace(cfg, seeds=a.seeds)
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


@dataclass
class Context:
    """What every trial of one invocation shares."""
    cfg: FeatureKDConfig
    scale: str
    device: torch.device
    data: Splits
    pairs: list[tuple[str, str]]  # (student layer, teacher layer) per matched stage
    channels: dict[str, int]  # output channels of every paired layer, student's and teacher's
    teacher: nn.Module | None = None
    logits: Tensor | None = None  # teacher logits on the training set, for the KD-only rows
    probe: Tensor | None = None  # test images on which the attention gap is measured
    probe_teacher: list[Tensor] | None = None


def resolve_layers(cfg: FeatureKDConfig, data: Splits) -> tuple[list, dict]:
    """Stage pairs of the (untrained) student and teacher, and each paired layer's channels."""
    shape, k = data.input_shape, data.num_classes
    student = models.build(cfg.setup.model, shape, k)
    teacher_net = models.build(cfg.teacher.model, shape, k)
    pairs = stage_pairs(student, teacher_net, shape)
    channels = {name: out[0] for net in (student, teacher_net)
                for name, out in stage_outputs(net, shape).values()}
    return pairs, channels


def make_trial(ctx: Context, method: str, seed: int, stage: str = "train") -> Trial:
    """The trial of `method` at `seed`: its loss weights and layers, read from its recipe."""
    cfg, recipe = ctx.cfg, RECIPES[method]
    hint = hint_pair(ctx.pairs)
    if stage == "hint":  # FitNet stage 1 (hint loss alone, W_r, lower layers), shared by
        # both two-stage methods: its key names no stage-2 method
        return Trial(cfg.setup, seed, "fitnet_2stage", "hint", cfg.teacher_spec(), ce_weight=0.0,
                     feature="fitnet", feature_weight=1.0, student_layers=(hint[0],),
                     teacher_layers=(hint[1],), hint_train=cfg.hint_train)
    kd = {}
    if recipe.kd:  # (1 − α)·CE + α·KD, rounded so that 1 − 0.9 reads 0.1 in tables
        kd = dict(kd_weight=cfg.kd_alpha, T=cfg.T, ce_weight=round(1 - cfg.kd_alpha, 12))
    teacher_spec = cfg.teacher_spec() if recipe.kd or recipe.feature else None
    if recipe.two_stage:  # stage 2: no feature term, starts from its stage 1
        return Trial(cfg.setup, seed, method, stage, teacher_spec, student_layers=(hint[0],),
                     teacher_layers=(hint[1],), hint_train=cfg.hint_train, **kd)
    if recipe.feature == "fitnet":
        return Trial(cfg.setup, seed, method, stage, teacher_spec, feature="fitnet",
                     feature_weight=cfg.hint_weight, student_layers=(hint[0],),
                     teacher_layers=(hint[1],), **kd)
    if recipe.feature == "attention":
        return Trial(cfg.setup, seed, method, stage, teacher_spec, feature="attention",
                     feature_weight=cfg.at_weight, student_layers=tuple(s for s, _ in ctx.pairs),
                     teacher_layers=tuple(t for _, t in ctx.pairs), **kd)
    return Trial(cfg.setup, seed, method, stage, teacher_spec, **kd)


def feature_loss(trial: Trial, ctx: Context) -> nn.Module | None:
    if trial.feature == "fitnet":
        s, t = trial.student_layers[0], trial.teacher_layers[0]
        return FitNet(ctx.channels[s], ctx.channels[t]).to(ctx.device)
    if trial.feature == "attention":
        return AttentionTransfer()
    return None


def hooks_for(trial: Trial, ctx: Context, made: list):
    """The loop's hooks for `trial`: label weight, then the online teacher or cached logits.
    Online teachers are appended to `made`, to remove their taps on the shared teacher after."""
    def make(student: nn.Module) -> list[Hook]:
        hooks: list[Hook] = [LabelWeight(trial.ce_weight)] if trial.ce_weight != 1 else []
        loss = feature_loss(trial, ctx)
        kd = KD(trial.T) if trial.kd_weight else None
        cached = ctx.logits is not None and not ctx.cfg.setup.train.augment
        if loss is not None or (kd is not None and not cached):
            layers = dict(student_layers=trial.student_layers,
                          teacher_layers=trial.teacher_layers) if loss is not None else {}
            made.append(OnlineTeacher(student, ctx.teacher, loss=loss, weight=trial.feature_weight,
                                      kd=kd, kd_weight=trial.kd_weight, **layers))
            hooks.append(made[-1])
        elif kd is not None:
            hooks.append(LogitTargets(ctx.logits, kd, trial.kd_weight))
        return hooks
    return make


@torch.no_grad()
def attention_gap(student: nn.Module, ctx: Context) -> float:
    """AT loss (Σ over stage pairs of the mean squared map difference) between the trained
    student and the teacher on the probe test images: how far the attention maps still are."""
    student.eval()
    with FeatureTap(student, [s for s, _ in ctx.pairs]) as tap:
        student(ctx.probe)
        return AttentionTransfer()(tap(), ctx.probe_teacher).item()


def run_method(ctx: Context, method: str, seed: int) -> dict:
    cfg, data, device = ctx.cfg, ctx.data, ctx.device
    trial = make_trial(ctx, method, seed)
    extra: dict = {}
    made: list[OnlineTeacher] = []
    start: dict | None = None  # stage-1 weights of the lower layers (two-stage FitNet)

    if RECIPES[method].two_stage:
        hint = make_trial(ctx, method, seed, stage="hint")
        hint_run = Run(EXPERIMENT, hint, scale=ctx.scale)
        lower = modules_up_to(build_student(ctx, seed)(), hint.student_layers[0], data.input_shape)

        def build_lower():  # only the guided layer and below train in stage 1
            m = build_student(ctx, seed)()
            for name, p in m.named_parameters():
                p.requires_grad_(name.rpartition(".")[0] in lower)
            return m

        def save_stage1(m, res):
            atomic_torch_save(m.state_dict(), hint_run.path("final.pt"))
            return {"hint_loss": res.final["feature_loss"]}

        r = run_trial(hint_run, experiment=EXPERIMENT, stage="hint", scale=ctx.scale,
                      name=f"s{seed}-fitnet-stage1", seed=seed, data=data,
                      train_cfg=cfg.hint_train, build=build_lower,
                      hooks_for=hooks_for(hint, ctx, made), after=save_stage1)
        state = torch.load(hint_run.path("final.pt"), map_location=device, weights_only=True)
        start = {k: v for k, v in state.items() if k.rpartition(".")[0] in lower}
        extra = {"hint_loss": r["hint_loss"], "hint_wall_s": r["train_wall_s"]}

    run = Run(EXPERIMENT, trial, scale=ctx.scale)
    res = run_trial(run, experiment=EXPERIMENT, stage="distill", scale=ctx.scale,
                    name=f"s{seed}-{method}", seed=seed, data=data, train_cfg=cfg.setup.train,
                    build=build_student(ctx, seed, start), hooks_for=hooks_for(trial, ctx, made),
                    after=lambda m, r: {"at_gap": attention_gap(m, ctx)})
    for hook in made:
        hook.remove()
    print(f"{f's{seed}-{method}':>22}: test acc {res['test_acc']:.4f} (at the best validation "
          f"accuracy), attention gap {res['at_gap']:.4f}", flush=True)
    return {**res, **extra, "method": method, "seed": seed, "model": cfg.setup.model,
            "feature": trial.feature, "ce_weight": trial.ce_weight, "kd_weight": trial.kd_weight,
            "T": trial.T, "feature_weight": trial.feature_weight,
            "student_layers": ",".join(trial.student_layers),
            "teacher_layers": ",".join(trial.teacher_layers)}


def build_student(ctx: Context, seed: int, start: dict | None = None):
    """A fresh student at `seed`'s init; with `start`, those entries loaded over it."""
    def build() -> nn.Module:
        torch.manual_seed(seed)
        m = models.build(ctx.cfg.setup.model, ctx.data.input_shape, ctx.data.num_classes)
        if start is not None:
            m.load_state_dict(start, strict=False)
        return m.to(ctx.device)
    return build


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    data = load_data(cfg.setup, device)
    try:
        pairs, channels = resolve_layers(cfg, data)
    except ValueError as e:
        fail(str(e))
    ctx = Context(cfg, scale, device, data, pairs, channels)
    ctx.teacher, t_res = teacher(cfg.teacher_spec(), data, scale, device)
    if cfg.setup.train.channels_last:
        ctx.teacher.to(memory_format=torch.channels_last)
    if any(RECIPES[m].kd for m in cfg.methods) and not cfg.setup.train.augment:
        ctx.logits = cached_logits(ctx.teacher, data.train_x)
    ctx.probe = data.test_x[:cfg.probe_size]
    with FeatureTap(ctx.teacher, [t for _, t in pairs]) as tap, torch.no_grad():
        ctx.teacher(ctx.probe)
        ctx.probe_teacher = tap()
    print(f"teacher {cfg.teacher.model}: test acc {t_res['final_test_acc']:.4f}; layer pairs "
          f"{pairs}, FitNet hint {hint_pair(pairs)}", flush=True)
    teacher_row = {**t_res, "method": "teacher", "seed": cfg.teacher.seed,
                   "model": cfg.teacher.model, "test_acc": t_res["final_test_acc"],
                   "val_acc": t_res["final_val_acc"]}
    rows = [teacher_row] + [run_method(ctx, m, seed) for seed in range(cfg.seeds)
                            for m in cfg.methods]
    out = write_report(cfg, rows, pairs, scale, wall_s=clock.seconds, machine=machine())
    print(f"wrote {out}/trials.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
