"""Relational KD (distance, angle) and Similarity-Preserving KD, with and without KD, and the
embedding structure each student keeps.

    python -m experiments.rkd --scale smoke|default|paper [--seeds N] [--model vgg_tiny]
                              [--methods student,kd,rkd_d,...]

The teacher is the shared one of `experiments.teachers` (resnet8 on Fashion-MNIST, trained once
for all distillation experiments). For each seed and method one student is trained (stage
"distill"): cross-entropy on the labels plus the method's terms (see config.METHODS). RKD reads
the penultimate embeddings (the classifier's input) of both models, SP the last conv features.
A trial reports test accuracy at its best validation point (lowest validation loss), and at
those same weights measures on a fixed test sample how well its embedding space keeps the
teacher's: distance / angle correlations, RKD loss values, kNN overlap, recall@1
(experiments/rkd/structure.py). Trials live in runs/rkd/<hash>/; finished ones are reused.
Outputs: results/rkd/<scale>/.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from experiments.common import (Stopwatch, add_train_args, base_parser, check_scale, fail,
                                load_data, machine, parse_list, pick_device, preset, run_trial)
from experiments.rkd.config import METHODS, RKDConfig, Setup, Trial, for_scale
from experiments.rkd.distill import (BestWeights, Distill, Term, embedding_layer,
                                     last_conv_layer, teacher_outputs)
from experiments.rkd.report import write_report
from experiments.rkd.structure import embed, structure_metrics, upper
from experiments.teachers import teacher
from lib import models
from lib.distill import KD, RKDAngle, RKDDistance, SimilarityPreserving
from lib.distill.rkd import normalized_distances
from lib.runs import Run, atomic_torch_save

EXPERIMENT = "rkd"

# loss name -> (constructor from the setup, which features it compares on both sides)
LOSS_SPECS = {
    "kd": (lambda s: KD(s.kd_T), "logits"),
    "rkd_distance": (lambda s: RKDDistance(), "embed"),
    "rkd_angle": (lambda s: RKDAngle(), "embed"),
    "sp": (lambda s: SimilarityPreserving(), "conv"),
}


@dataclass(frozen=True)
class Layers:
    """Where features are read: embeddings = the classifier's input, conv = last conv block."""
    student: dict
    teacher: dict


def parse_args(argv=None) -> tuple[RKDConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    p.add_argument("--model", default=None,
                   help="student: a vgg* or resnet* model (default vgg_tiny; resnet20 at paper scale)")
    p.add_argument("--dataset", default=None, help="override the scale's dataset (teacher too)")
    p.add_argument("--methods", default=None,
                   help=f"comma list of {', '.join(METHODS)} (default: all but sp+kd)")
    add_train_args(p)
    a = p.parse_args(argv)
    try:
        check_scale(a.scale)
        a.model = a.model or ("resnet20" if a.scale == "paper" else "vgg_tiny")
        scale, cfg = preset(a, for_scale)
        setup = replace(cfg.setup, teacher=replace(cfg.setup.teacher, dataset=cfg.setup.dataset))
        methods = cfg.methods if a.methods is None else parse_list(a.methods, tuple(METHODS), "methods")
        cfg = replace(cfg, setup=setup, methods=methods,
                      seeds=cfg.seeds if a.seeds is None else a.seeds)
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


def find_layers(setup: Setup, input_shape, num_classes) -> Layers:
    """Feature layers of the student and the teacher; a model without them is a one-line error."""
    sides = {}
    for side, name in (("student", setup.model), ("teacher", setup.teacher.model)):
        model = models.build(name, input_shape, num_classes)
        try:
            sides[side] = {"logits": "logits", "embed": embedding_layer(model),
                           "conv": last_conv_layer(model)}
        except ValueError as e:
            fail(f"{'model' if side == 'student' else 'teacher.model'}: {name} {e}")
    return Layers(**sides)


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    setup = cfg.setup
    data = load_data(setup, device)
    layers = find_layers(setup, data.input_shape, data.num_classes)

    t_model, t_res = teacher(setup.teacher, data, scale, device)
    if setup.train.channels_last:
        t_model = t_model.to(memory_format=torch.channels_last)
    print(f"teacher {setup.teacher.model}: test acc {t_res['final_test_acc']:.4f}", flush=True)

    # fixed test sample on which every model's embedding structure is measured
    xs, ys = data.test_x[:cfg.struct_size], data.test_y[:cfg.struct_size]
    e_t = embed(t_model, layers.teacher["embed"], xs)

    def structure(e_s):
        return structure_metrics(e_s, e_t, ys, angle_size=cfg.angle_size, k=cfg.knn_k,
                                 batch=cfg.loss_batch)

    tables: dict = {}  # teacher logits and embeddings on the training set, computed on first use

    def teacher_tables():
        if not tables and not setup.train.augment:  # augmented batches need the teacher online
            tables.update(teacher_outputs(t_model, data.train_x, [layers.teacher["embed"]]))
            tables[layers.teacher["embed"]] = tables[layers.teacher["embed"]].flatten(1)
        return tables or None

    weights = setup.weights()
    rows = [{"method": "teacher", "teacher": setup.teacher.model, "student": setup.teacher.model,
             "seed": setup.teacher.seed, "test_acc": t_res["final_test_acc"],
             "val_acc": t_res["final_val_acc"], "train_wall_s": t_res["train_wall_s"],
             **structure(e_t)}]
    embeddings = {}
    for seed in range(cfg.seeds):
        for method in cfg.methods:
            trial = Trial(setup, seed, method)
            run = Run(EXPERIMENT, trial, scale=scale)
            hooks: list = []

            def build(seed=seed):
                torch.manual_seed(seed)
                return models.build(setup.model, data.input_shape, data.num_classes).to(device)

            def hooks_for(model, method=method):
                terms = []
                for name in METHODS[method]:
                    make, role = LOSS_SPECS[name]
                    terms.append(Term(name, make(setup), weights[name], layers.student[role],
                                      layers.teacher[role]))
                label_weight = 1 - setup.kd_alpha if "kd" in METHODS[method] else 1.0
                hooks[:] = [Distill(model, t_model, terms, teacher_tables(), label_weight),
                            BestWeights(setup.train.early_stop_on)]
                return hooks

            def after(model, res, run=run):
                distill, best = hooks
                distill.remove()
                if best.best_step != res.early_stop["step"]:
                    raise RuntimeError(f"selected step {best.best_step} != early stop "
                                       f"{res.early_stop['step']}")
                model.load_state_dict(best.best)  # the weights whose test accuracy is reported
                atomic_torch_save(model.state_dict(), run.path("selected.pt"))
                e_s = embed(model, layers.student["embed"], xs)
                atomic_torch_save(e_s.cpu(), run.path("embeddings.pt"))
                return {**structure(e_s), "teacher_online": distill.online}

            name = f"s{seed}-{method}"
            res = run_trial(run, experiment=EXPERIMENT, stage="distill", scale=scale, name=name,
                            seed=seed, data=data, train_cfg=setup.train, build=build,
                            hooks_for=hooks_for, after=after)
            print(f"{name:>16}: test acc {res['test_acc']:.4f}, distance spearman "
                  f"{res['dist_spearman']:.3f}, recall@1 {res['recall_at_1']:.4f} "
                  f"({res['train_wall_s']:.0f} s)", flush=True)
            rows.append({**res, "method": method, "teacher": setup.teacher.model,
                         "student": setup.model, "seed": seed})
            if seed == 0:
                embeddings[method] = torch.load(run.path("embeddings.pt"), weights_only=True)

    # reference points for the structure metrics: the raw pixels, and the teacher's distances
    pixels = structure(xs.flatten(1))
    pairs = torch.randperm(len(xs) * (len(xs) - 1) // 2, generator=torch.Generator().manual_seed(0))[:4000]
    scatter = {"teacher": upper(normalized_distances(e_t.cpu().double()))[pairs]}
    scatter.update({m: upper(normalized_distances(e.double()))[pairs] for m, e in embeddings.items()})
    out = write_report(cfg, rows, scale, wall_s=clock.seconds, machine=machine(), layers=layers,
                       pixels=pixels, scatter=scatter)
    print(f"wrote {out}/trials.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
