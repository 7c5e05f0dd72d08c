"""FitNet, Attention Transfer and FSP, each alone and with KD, against the student alone and KD.

    python -m experiments.feature_kd --scale smoke|default|paper [--seeds N] [--methods at,kd]

One teacher (experiments.teachers, shared with logit_kd and rkd) and, per seed, one student per
method: alone (CE), KD, FitNet as in the paper (stage 1: the student's layers up to the guided
layer and the paper's conv regressor W_r trained on the hint loss alone; stage 2: the whole
student with CE or KD), Attention Transfer (CE + β·AT over the stage pairs of comparable depth),
FSP as in the paper (stage 1: the student's layers matched to the teacher's FSP matrices;
stage 2: CE or KD), and opt-in FitNet in one stage (CE + w·hint, RepDistiller). Layer pairs are
the stage outputs of equal spatial size (layers.py). At the default scale each one-stage weight
puts its term on the scale of the CE at initialisation (config.BALANCED; the report's loss
balance section measures it, trials.csv logs w·term / CE at the start and the end of training).
The teacher's logits and AT maps on the training set are computed once; other feature terms run
it online. Trials live in runs/feature_kd/<hash>/; finished ones are reused. Outputs:
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
from experiments.feature_kd.layers import Pairs, Produced, find_pairs, modules_up_to
from experiments.packing import TrialSpec, train_all
from experiments.teachers import teacher
from lib import models
from lib.distill import (FSP, KD, AttentionTransfer, Distill, FeatureTap, FitNet, Term,
                         attention_map, teacher_outputs, weighted_ce)
from lib.distill.teacher import term_ratios, term_values
from lib.runs import atomic_torch_save


def flags(p) -> None:
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {', '.join(METHODS)} (default: all but the "
                        f"one-stage fitnet, fitnet+kd; at the default scale also without "
                        f"fitnet_2stage+kd, fsp+kd, to fit 30 CPU minutes)")


def configure(cfg: FeatureKDConfig, a) -> FeatureKDConfig:
    cfg = replace(cfg, teacher=replace(cfg.teacher, **cfg.setup.data_fields()))  # the students' data
    return cfg if a.methods is None else replace(cfg, methods=parse_list(a.methods, METHODS, "methods"))


@dataclass
class Shared:
    """The layer pairs, the teacher, and what every trial of one invocation computes from it once."""
    pairs: Pairs
    teacher: nn.Module
    tables: dict[str, Tensor]  # on the training set: {"logits"} and AT's teacher maps by layer
    probe: Tensor  # test images on which the attention gap is measured
    probe_teacher: list[Tensor]  # the teacher's AT-layer features on them

    def tables_for(self, trial: Trial) -> dict[str, Tensor] | None:
        """The cached teacher outputs `trial`'s terms may read: its AT maps only for AT (a
        fitnet or fsp term then finds no table for its raw layer and runs the teacher online)."""
        keep = {"logits"} | (set(trial.teacher_layers) if trial.feature == "attention" else set())
        return {k: v for k, v in self.tables.items() if k in keep} or None


def resolve_layers(ctx: Context) -> Pairs:
    """Every method's layer pairs for the (untrained) student and teacher; exits with one line
    when there are none (before any training)."""
    cfg, shape, k = ctx.cfg, ctx.data.input_shape, ctx.data.num_classes
    student, teacher_net = models.build(cfg.setup.model, shape, k), models.build(cfg.teacher.model, shape, k)
    try:
        return find_pairs(student, teacher_net, shape, cfg.at_min_depth)
    except ValueError as e:
        fail(str(e))


def feature_term(trial: Trial, pairs: Pairs, device: torch.device, weight: float) -> Term:
    """`trial`'s feature term (FitNet, AT or FSP over its layers) at `weight`."""
    s, t = trial.student_layers, trial.teacher_layers
    if trial.feature == "fitnet":  # one pair; the regressor W_r trains with the student
        (cs, *size_s), (ct, *size_t) = pairs.shapes[s[0]], pairs.shapes[t[0]]
        loss = FitNet(cs, ct, trial.regressor, tuple(size_s), tuple(size_t))
        return Term("fitnet", loss.to(device), weight, s[0], t[0])
    if trial.feature == "attention":  # every AT pair, summed
        return Term("attention", AttentionTransfer(), weight, s, t)
    # FSP over consecutive layers; 1x1 adapters where the student's widths differ. The mean over
    # the G entries (RepDistiller): the paper's sum is m·n (512, 2048) times larger per flow, a
    # step 500-2000x larger at the students' SGD lr
    loss = FSP([pairs.shapes[n][0] for n in s], [pairs.shapes[n][0] for n in t], reduce="mean")
    return Term("fsp", loss.to(device), weight, s, t)


def terms(trial: Trial, pairs: Pairs, device: torch.device) -> list[Term]:
    """The trial's distillation terms: its feature term, then KD."""
    out = [feature_term(trial, pairs, device, trial.feature_weight)] if trial.feature else []
    if trial.kd_weight:
        out.append(Term("kd", KD(trial.T), trial.kd_weight))
    return out


def train_kw(trial: Trial, shared: Shared, device: torch.device) -> dict:
    """What `ctx.train` needs for `trial`'s loss: the label weight as the loop's criterion, the
    rest in one Distill hook (cached teacher tables where they hold its side, else online)."""
    def hooks_for(student: nn.Module) -> list[Distill]:  # called after build: W_r's init
        found = terms(trial, shared.pairs, device)
        return [Distill(student, shared.teacher, found, tables=shared.tables_for(trial))] if found else []
    criterion = weighted_ce(trial.ce_weight) if trial.ce_weight != 1 else None
    return dict(hooks_for=hooks_for, criterion=criterion)


def weights(trial: Trial) -> dict[str, float]:
    """Each distillation term's weight by its logged name."""
    out = {trial.feature: trial.feature_weight} if trial.feature else {}
    return {**out, **({"kd": trial.kd_weight} if trial.kd_weight else {})}


@torch.no_grad()
def attention_gap(student: nn.Module, shared: Shared) -> float:
    """AT loss (Σ over AT's pairs of the mean squared map difference) between the trained
    student and the teacher on the probe test images: how far the attention maps still are."""
    student.eval()
    with FeatureTap(student, [s for s, _ in shared.pairs.attention]) as tap:
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


def stage_one(ctx: Context, shared: Shared, method: str, seed: int) -> tuple[dict, dict]:
    """Stage 1 of two-stage `method` for `seed` (shared by the family's CE and KD methods): the
    trained weights of the layers its feature loss reads and those below, and the columns it
    adds to their rows."""
    hint = make_trial(ctx.cfg, shared.pairs, method, seed, stage="hint")
    run = ctx.run(hint)
    lower = modules_up_to(build_student(ctx, seed)(), hint.student_layers[-1], ctx.data.input_shape)

    def build_lower() -> nn.Module:  # only the read layers and below train in stage 1
        m = build_student(ctx, seed)()
        for name, p in m.named_parameters():
            p.requires_grad_(name.rpartition(".")[0] in lower)
        return m

    def save(m: nn.Module, res) -> dict:
        atomic_torch_save(m.state_dict(), run.path("final.pt"))
        return {"hint_loss": res.final[f"loss_{hint.feature}"]}

    r = ctx.train(run, stage="hint", name=f"s{seed}-{hint.method}-stage1", seed=seed,
                  train_cfg=ctx.cfg.hint_train, build=build_lower, after=save,
                  **train_kw(hint, shared, ctx.device))
    state = torch.load(run.path("final.pt"), map_location=ctx.device, weights_only=True)
    start = {k: v for k, v in state.items() if k.rpartition(".")[0] in lower}
    return start, {"hint_loss": r["hint_loss"], "hint_wall_s": r["train_wall_s"]}


def student_spec(ctx: Context, shared: Shared, method: str, seed: int) -> tuple[TrialSpec, dict]:
    """`method`'s student at `seed` as a trial to train (after its stage 1, if it has one), and
    the columns its stage 1 adds. Trials with no distillation term in the loop (the student
    alone, the two-stage methods' stage 2 with CE) need no hook: they can train packed."""
    trial = make_trial(ctx.cfg, shared.pairs, method, seed)
    start, extra = stage_one(ctx, shared, method, seed) if RECIPES[method].two_stage else (None, {})

    def after(m: nn.Module, r) -> dict:
        return {"at_gap": attention_gap(m, shared), **term_ratios(r.history, weights(trial), trial.ce_weight)}

    kw = train_kw(trial, shared, ctx.device)
    hooks_for = kw["hooks_for"] if trial.feature or trial.kd_weight else None
    spec = TrialSpec(ctx.run(trial), f"s{seed}-{method}", seed, build_student(ctx, seed, start),
                     stage="distill", hooks_for=hooks_for, after=after)
    return spec, {**extra, "criterion": kw["criterion"]}


def run_method(ctx: Context, shared: Shared, method: str, seed: int) -> dict:
    cfg = ctx.cfg
    trial = make_trial(cfg, shared.pairs, method, seed)
    spec, extra = student_spec(ctx, shared, method, seed)
    criterion = extra.pop("criterion")
    res = ctx.train(spec.run, stage=spec.stage, name=spec.name, seed=seed,
                    train_cfg=cfg.setup.train, build=spec.build, after=spec.after,
                    hooks_for=spec.hooks_for or (lambda m: ()), criterion=criterion)
    print(f"{f's{seed}-{method}':>22}: test acc {res['test_acc']:.4f} (at the best validation "
          f"accuracy, step {res['early_stop_iter']} of {res['final_step']}), attention gap "
          f"{res['at_gap']:.4f}", flush=True)
    return {**res, **extra, "method": method, "seed": seed, "model": cfg.setup.model,
            "feature": trial.feature, "ce_weight": trial.ce_weight, "kd_weight": trial.kd_weight,
            "T": trial.T, "feature_weight": trial.feature_weight, "regressor": trial.regressor,
            "student_layers": ",".join(trial.student_layers),
            "teacher_layers": ",".join(trial.teacher_layers)}


def loss_balance(ctx: Context, shared: Shared, batch: int = 1024) -> list[dict]:
    """Per seed, the CE and each feature term (and KD) on the untrained student (train mode, as
    at the first step) for the first `batch` training images, the teacher online: the
    measurement behind the default scale's weights."""
    cfg, x, y = ctx.cfg, ctx.data.train_x[:batch], ctx.data.train_y[:batch]
    features = {f: make_trial(cfg, shared.pairs, m, 0) for f, m in
                (("fitnet", "fitnet"), ("attention", "at"), ("fsp", "fsp"))}
    used = {"fitnet": cfg.hint_weight, "attention": cfg.at_weight}  # FSP: stage 1 alone, no weight
    rows = []
    for seed in range(cfg.seeds):
        student = ctx.build(cfg.setup.model, seed).train()
        found = [feature_term(replace(t, feature=f), shared.pairs, ctx.device, 1.0)
                 for f, t in features.items()] + [Term("kd", KD(cfg.T), 1.0)]
        rows.append({"seed": seed, **term_values(student, shared.teacher, found, x, y)})
    return [{**r, **{f"weight_{f}": w for f, w in used.items()}, "weight_kd": cfg.kd_alpha}
            for r in rows]


def share(ctx: Context) -> tuple[Shared, dict]:
    """The layer pairs, the trained teacher and what is computed from it once; its result."""
    cfg, data = ctx.cfg, ctx.data
    pairs = resolve_layers(ctx)
    net, res = teacher(cfg.teacher, data, ctx.scale, ctx.device)
    if cfg.setup.train.channels_last:
        net.to(memory_format=torch.channels_last)
    tables: dict[str, Tensor] = {}
    if not cfg.setup.train.augment:  # a fixed teacher on fixed images: compute once
        at_layers = [t for _, t in pairs.attention] if any(RECIPES[m].feature == "attention"
                                                           for m in cfg.methods) else []
        chunks = [teacher_outputs(net, data.train_x[i:i + 4096], at_layers)
                  for i in range(0, len(data.train_x), 4096)]
        tables["logits"] = torch.cat([c["logits"] for c in chunks])
        for layer in at_layers:  # (N, H·W): the maps, not the (much larger) feature maps
            tables[layer] = torch.cat([attention_map(c[layer]) for c in chunks])
    probe = data.test_x[:cfg.probe_size]
    layers = [t for _, t in pairs.attention]
    probe_teacher = teacher_outputs(net, probe, layers)
    return Shared(pairs, net, tables, probe, [probe_teacher[n] for n in layers]), res


def run(ctx: Context) -> Produced:
    """The teacher's row and every student's; the layer pairs and the loss balance (for the report)."""
    cfg = ctx.cfg
    shared, t_res = share(ctx)
    print(f"teacher {cfg.teacher.model}: test acc {t_res['final_test_acc']:.4f}; stage pairs "
          f"{list(shared.pairs.stages)}, AT {list(shared.pairs.attention)}, FitNet hint "
          f"{shared.pairs.hint}", flush=True)
    teacher_row = {**t_res, "method": "teacher", "seed": cfg.teacher.seed,
                   "model": cfg.teacher.model, "test_acc": t_res["final_test_acc"],
                   "val_acc": t_res["final_val_acc"]}
    balance = loss_balance(ctx, shared)
    # the trials without a loop hook first, packed (each seed's init and batch order as alone);
    # the rest alone, and the packed ones read back
    specs = [student_spec(ctx, shared, m, seed)[0] for seed in range(cfg.seeds) for m in cfg.methods]
    train_all(ctx, [s for s in specs if s.hooks_for is None], cfg.setup.train, pack=ctx.pack)
    rows = [teacher_row] + [run_method(ctx, shared, m, seed) for seed in range(cfg.seeds)
                            for m in cfg.methods]
    return Produced(rows, shared.pairs, balance)


write_report = lazy("experiments.feature_kd.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="feature_kd", doc=__doc__, for_scale=for_scale, model=DEFAULT_STUDENT,
    model_help="the student", flags=flags, packs=True,
    configure=configure, report=write_report, run=run)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
