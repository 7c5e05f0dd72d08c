"""Relational KD (distance, angle) and Similarity-Preserving KD, with and without KD, and the
embedding structure each student keeps.

    python -m experiments.rkd --scale smoke|default|paper [--seeds N] [--model vgg_tiny]
                              [--methods student,kd,rkd_d,...]

The teacher is the shared one of `experiments.teachers` (resnet8 on Fashion-MNIST, trained once
for all distillation experiments). For each seed and method one student is trained (stage
"distill"): cross-entropy on the labels plus the method's terms (see config.METHODS). RKD reads
the penultimate embeddings (the classifier's input) of both models, SP the last conv features.
A trial reports test accuracy at its best validation point (highest validation accuracy), and at
those same weights measures on a fixed test sample how well its embedding space keeps the
teacher's: distance / angle correlations, RKD loss values, kNN overlap, recall@1
(experiments/rkd/structure.py). Trials live in runs/rkd/<hash>/; finished ones are reused.
Outputs: results/rkd/<scale>/.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from experiments.common import Context, Experiment, lazy, parse_list
from experiments.packing import TrialSpec, train_all
from experiments.rkd.config import DEFAULT_METHODS, METHODS, RKDConfig, Setup, Trial, for_scale
from experiments.rkd.layers import Layers, find_layers
from experiments.rkd.structure import embed, structure_metrics, upper
from experiments.teachers import teacher
from lib.distill import (KD, Distill, RKDAngle, RKDDistance, SimilarityPreserving, Term,
                         teacher_outputs, weighted_ce)
from lib.distill.rkd import normalized_distances
from lib.distill.teacher import term_ratios, term_values
from lib.runs import atomic_torch_save

if TYPE_CHECKING:
    from experiments.rkd.report import Produced

# loss name -> (constructor from the setup, which features it compares on both sides)
LOSS_SPECS = {
    "kd": (lambda s: KD(s.kd_T), "logits"),
    "rkd_distance": (lambda s: RKDDistance(), "embed"),
    "rkd_angle": (lambda s: RKDAngle(), "embed"),
    "sp": (lambda s: SimilarityPreserving(), "conv"),
}


def flags(p) -> None:
    p.add_argument("--methods", default=None,
                   help=f"comma list of {', '.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})")


def configure(cfg: RKDConfig, a) -> RKDConfig:
    """--methods; the teacher follows the students' data (--dataset); both models must have
    the feature layers the terms read."""
    setup = replace(cfg.setup, teacher=replace(cfg.setup.teacher, **cfg.setup.data_fields()))
    find_layers(setup.model, setup.teacher.model)
    cfg = replace(cfg, setup=setup)
    if a.methods is not None:
        cfg = replace(cfg, methods=parse_list(a.methods, tuple(METHODS), "methods"))
    return cfg


def terms(setup: Setup, method: str, layers: Layers) -> list[Term]:
    """The distillation terms of `method` (config.METHODS), weighted as the setup says."""
    weights, out = setup.weights(), []
    for name in METHODS[method]:
        make, role = LOSS_SPECS[name]
        out.append(Term(name, make(setup), weights[name], layers.student[role],
                        layers.teacher[role]))
    return out


def run(ctx: Context) -> Produced:
    cfg, setup, data = ctx.cfg, ctx.cfg.setup, ctx.data
    layers = find_layers(setup.model, setup.teacher.model, data.input_shape, data.num_classes)
    t_model, t_res = teacher(setup.teacher, data, ctx.scale, ctx.device)
    if setup.train.channels_last:
        t_model = t_model.to(memory_format=torch.channels_last)
    print(f"teacher {setup.teacher.model}: test acc {t_res['final_test_acc']:.4f}", flush=True)

    # fixed test sample on which every model's embedding structure is measured
    xs, ys = data.test_x[:cfg.struct_size], data.test_y[:cfg.struct_size]
    e_t = embed(t_model, layers.teacher["embed"], xs)

    def structure(e_s: Tensor) -> dict:
        return structure_metrics(e_s, e_t, ys, angle_size=cfg.angle_size, k=cfg.knn_k,
                                 batch=cfg.loss_batch)

    # the teacher's logits, embeddings and (for SP) last conv maps on the training set, computed
    # on first use: a fixed teacher on un-augmented images gives the same numbers every epoch
    tables: dict = {}
    cached = [layers.teacher["embed"]] + ([layers.teacher["conv"]] if any(
        "sp" in METHODS[m] for m in cfg.methods) else [])

    def teacher_tables() -> dict | None:
        if not tables and not setup.train.augment:  # augmented batches need the teacher online
            tables.update(teacher_outputs(t_model, data.train_x, cached))
            tables[layers.teacher["embed"]] = tables[layers.teacher["embed"]].flatten(1)
        return tables or None

    rows = [{"method": "teacher", "teacher": setup.teacher.model, "student": setup.teacher.model,
             "seed": setup.teacher.seed, "test_acc": t_res["final_test_acc"],
             "val_acc": t_res["final_val_acc"], "train_wall_s": t_res["train_wall_s"],
             **structure(e_t)}]
    embeddings = {}

    def spec(seed: int, method: str) -> TrialSpec:
        """`method`'s student at `seed`; the student alone needs no hook and trains packed."""
        run = ctx.run(Trial(setup, seed, method))
        hooks: list[Distill] = []
        ce_weight = 1 - setup.kd_alpha if "kd" in METHODS[method] else 1.0

        def hooks_for(model):
            hooks[:] = [Distill(model, t_model, terms(setup, method, layers), teacher_tables())]
            return hooks

        def after(model, res):
            for hook in hooks:
                hook.remove()
            model.load_state_dict(res.best_state)  # the weights whose test accuracy is reported
            atomic_torch_save(model.state_dict(), run.path("selected.pt"))
            e_s = embed(model, layers.student["embed"], xs)
            atomic_torch_save(e_s.cpu(), run.path("embeddings.pt"))
            weights = {n: setup.weights()[n] for n in METHODS[method]}
            return {**structure(e_s), "teacher_online": any(h.online for h in hooks),
                    **term_ratios(res.history, weights, ce_weight)}

        return TrialSpec(run, f"s{seed}-{method}", seed, lambda: ctx.build(setup.model, seed),
                         stage="distill", hooks_for=hooks_for if METHODS[method] else None,
                         after=after)

    specs = {(seed, m): spec(seed, m) for seed in range(cfg.seeds) for m in cfg.methods}
    train_all(ctx, [s for s in specs.values() if s.hooks_for is None], setup.train,
              pack=ctx.pack, keep_best=True)
    for (seed, method), s in specs.items():
        # the labels' cross-entropy, weighted 1 − α when KD is one of the terms
        label = weighted_ce(1 - setup.kd_alpha) if "kd" in METHODS[method] else None
        res = ctx.train(s.run, stage=s.stage, name=s.name, seed=seed, train_cfg=setup.train,
                        build=s.build, hooks_for=s.hooks_for or (lambda m: ()), criterion=label,
                        keep_best=True, after=s.after)
        print(f"{s.name:>16}: test acc {res['test_acc']:.4f}, distance spearman "
              f"{res['dist_spearman']:.3f}, recall@1 {res['recall_at_1']:.4f} "
              f"({res['train_wall_s']:.0f} s)", flush=True)
        rows.append({**res, "method": method, "teacher": setup.teacher.model,
                     "student": setup.model, "seed": seed})
        if seed == 0:
            embeddings[method] = s.run.load("embeddings.pt")

    # reference points for the structure metrics: the raw pixels, and the teacher's distances
    pairs = torch.randperm(len(xs) * (len(xs) - 1) // 2,
                           generator=torch.Generator().manual_seed(0))[:4000]
    scatter = {m: upper(normalized_distances(e.double()))[pairs]
               for m, e in {"teacher": e_t.cpu(), **embeddings}.items()}
    from experiments.rkd.report import Produced  # pandas & co.: once trained

    return Produced(rows, layers, structure(xs.flatten(1)), scatter,
                    loss_balance(ctx, t_model, layers))


def loss_balance(ctx: Context, t_model, layers: Layers, batch: int = 128, batches: int = 8) -> list[dict]:
    """Per seed, the CE and each relational term (and KD) on the untrained student (train mode,
    as at the first step), the teacher online, averaged over the first `batches` training
    batches of `batch` images (RKD and SP compare the images of one batch): the measurement
    behind the default scale's weights (fewer batches where the training set is smaller)."""
    setup, data = ctx.cfg.setup, ctx.data
    seen = min(len(data.train_x), batch * batches)
    rows = []
    for seed in range(ctx.cfg.seeds):
        student = ctx.build(setup.model, seed).train()
        found = [replace(t, weight=1.0) for t in terms(setup, "rkd_da+kd", layers)]
        found += [replace(t, weight=1.0) for t in terms(setup, "sp", layers)]
        values = [term_values(student, t_model, found, data.train_x[i:i + batch],
                              data.train_y[i:i + batch]) for i in range(0, seen, batch)]
        rows.append({"seed": seed, **{k: sum(v[k] for v in values) / len(values) for k in values[0]}})
    return [{**r, **{f"weight_{k}": w for k, w in setup.weights().items()}} for r in rows]


write_report = lazy("experiments.rkd.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="rkd", doc=__doc__, for_scale=for_scale,
    model={"smoke": "vgg_tiny", "default": "vgg_tiny", "paper": "resnet20"},
    model_help="the student: a vgg* or resnet* model",
    flags=flags, configure=configure, report=write_report, run=run, packs=True)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
