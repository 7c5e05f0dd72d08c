"""Logit distillation: student alone vs KD, DML, Born-Again, Label Refinery and TA-KD.

    python -m experiments.logit_kd --scale smoke|default|paper [--seeds N] [--methods kd,ban]

The teacher (experiments.teachers, shared with feature_kd and rkd) is trained once. For each
seed the student is trained alone on labels (also generation 0 of the chains), then:
- kd: Hinton KD from the teacher, `α·T²·KL + (1 − α)·CE`;
- dml: `dml_peers` students trained together, each on CE + mean KL to the others (simultaneous);
- ban: Born-Again generations k = 1..G, each KD from generation k − 1, and the ensemble of 1..G;
- lr: Label Refinery, generation k trained only on softmax(generation k − 1), while the
  validation accuracy improves (at most `refinery_max`);
- ta: TA-KD, teacher -> assistant (KD) -> student (KD).
Every reported accuracy is the test accuracy at the best validation evaluation (lowest val
loss), and those selected weights are what a chain hands down. Trials live in
runs/logit_kd/<hash>/; finished ones are reused. Outputs: results/logit_kd/<scale>/.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from experiments.common import (Stopwatch, add_train_args, base_parser, fail, load_data, machine,
                                parse_list, pick_device, preset)
from experiments.logit_kd.config import METHODS, LogitKDConfig, Trial, for_scale
from experiments.logit_kd.report import write_report
from experiments.logit_kd.trials import Lab, Source
from experiments.teachers import teacher, teacher_run

EXPERIMENT = "logit_kd"


def parse_args(argv=None) -> tuple[LogitKDConfig, str, torch.device]:
    p = base_parser(f"python -m experiments.{EXPERIMENT}", __doc__)
    p.add_argument("--model", default="vgg_tiny", help="the student (default vgg_tiny)")
    p.add_argument("--dataset", default=None, help="override the scale's dataset")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from {', '.join(METHODS)} (default: all; the student "
                        f"alone always runs)")
    p.add_argument("--assistant", default=None, help="TA-KD's assistant model (default vgg_narrow)")
    add_train_args(p)
    a = p.parse_args(argv)
    try:
        scale, cfg = preset(a, for_scale)
        data = {k: getattr(cfg.setup, k) for k in ("dataset", "val_size", "train_limit", "test_limit")}
        cfg = replace(cfg, teacher=replace(cfg.teacher, **data))  # the students' data
        if a.methods is not None:
            cfg = replace(cfg, methods=parse_list(a.methods, METHODS, "methods"))
        if a.assistant is not None:
            cfg = replace(cfg, assistant=a.assistant)
        if a.seeds is not None:
            cfg = replace(cfg, seeds=a.seeds)
        return cfg.validate(), scale, pick_device(a.device)
    except ValueError as e:
        fail(str(e))


def run_seed(lab: Lab, seed: int, teach: Source) -> list[dict]:
    cfg, s = lab.cfg, lab.setup
    soft = dict(T=cfg.T, alpha=cfg.alpha)
    alone = Trial(s, seed)
    rows = [lab.train(alone, name=f"s{seed}-student")]
    gen0 = lab.load(alone, f"{s.model} gen 0")

    if "kd" in cfg.methods:
        rows.append(lab.train(Trial(s, seed, "kd", generation=1, parent=teach.hash, **soft),
                              teach, f"s{seed}-kd"))
    if "dml" in cfg.methods:
        rows += lab.train_dml(Trial(s, seed, "dml", peers=cfg.dml_peers), f"s{seed}-dml")
    if "ban" in cfg.methods:  # Born-Again: generation k is KD from generation k - 1
        prev, gens = gen0, []
        for g in range(1, cfg.ban_generations + 1):
            trial = Trial(s, seed, "ban", generation=g, parent=prev.hash, **soft)
            rows.append(lab.train(trial, prev, f"s{seed}-ban{g}"))
            prev = lab.load(trial, f"{s.model} gen {g}")
            gens.append(prev)
        rows.append(lab.ensemble(Trial(s, seed, "ban_ensemble", generation=len(gens),
                                       parent=prev.hash), gens, f"s{seed}-ban-ensemble"))
    if "lr" in cfg.methods:  # Label Refinery: soft targets only, while val accuracy improves
        prev, prev_val = gen0, rows[0]["val_acc"]
        for g in range(1, cfg.refinery_max + 1):
            trial = Trial(s, seed, "lr", generation=g, parent=prev.hash, T=1.0, alpha=1.0)
            row = lab.train(trial, prev, f"s{seed}-lr{g}")
            row["improved"] = row["val_acc"] > prev_val
            rows.append(row)
            if not row["improved"]:
                break
            prev, prev_val = lab.load(trial, f"{s.model} gen {g}"), row["val_acc"]
    if "ta" in cfg.methods:  # teacher -> assistant -> student, each step plain KD
        assistant = Trial(s, seed, "ta_kd", model=cfg.assistant, generation=1, parent=teach.hash,
                          **soft)
        rows.append(lab.train(assistant, teach, f"s{seed}-ta-assistant"))
        ta = lab.load(assistant, cfg.assistant)
        rows.append(lab.train(Trial(s, seed, "ta_kd", generation=2, parent=ta.hash, **soft), ta,
                              f"s{seed}-ta-student"))
    return rows


def main(argv=None) -> None:
    cfg, scale, device = parse_args(argv)
    clock = Stopwatch()
    data = load_data(cfg.setup, device)
    net, res = teacher(cfg.teacher, data, scale, device)
    teach = Source(teacher_run(cfg.teacher, scale).hash, cfg.teacher.model, net, cfg.teacher.model)
    print(f"teacher {cfg.teacher.model}: test acc {res['final_test_acc']:.4f}", flush=True)
    teacher_row = {"method": "teacher", "teacher": "", "student": cfg.teacher.model,
                   "seed": cfg.teacher.seed, "generation": 0, "peer": 0,
                   "test_acc": res["final_test_acc"], "val_acc": res["final_val_acc"],
                   "best_val_test_acc": res["test_acc"], "train_wall_s": res["train_wall_s"],
                   "run": teach.hash}
    lab = Lab(cfg, data, scale, device)
    rows = [row for seed in range(cfg.seeds) for row in run_seed(lab, seed, teach)]
    out = write_report(cfg, [teacher_row, *rows], scale, wall_s=clock.seconds, machine=machine())
    print(f"wrote {out}/trials.csv, table.md and plots in {clock.seconds:.1f} s")


if __name__ == "__main__":
    main()
