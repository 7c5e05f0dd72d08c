"""Logit distillation: student alone vs KD, DML, Born-Again, Label Refinery and TA-KD.

    python -m experiments.logit_kd --scale smoke|default|paper [--seeds N] [--methods kd,ban]

The teacher (experiments.teachers, shared with feature_kd and rkd) is trained once. For each
seed the student is trained alone on labels (also generation 0 of the chains), then:
- kd: Hinton KD from the teacher, `α·T²·KL + (1 − α)·CE`;
- dml: `dml_peers` students trained together, each on CE + mean KL to the others (simultaneous);
- ban: Born-Again generations k = 1..G, each KD from generation k − 1, and the ensemble of 1..G;
- lr: Label Refinery, generation k trained only on softmax(generation k − 1), while the
  validation accuracy improves (at most `refinery_max`);
- ta: TA-KD across a large gap: a smaller student (`ta_student`) trained alone, by KD from the
  teacher, and by KD from an assistant (the main student's KD trial: teacher -> assistant ->
  ta_student, each step plain KD).
Every reported accuracy is the test accuracy at the best validation evaluation (lowest val
loss), and those selected weights are what a chain hands down. Trials live in
runs/logit_kd/<hash>/; finished ones are reused. Outputs: results/logit_kd/<scale>/.
"""
from __future__ import annotations

from dataclasses import replace

from experiments.common import Context, Experiment, parse_list, lazy
from experiments.logit_kd.config import METHODS, LogitKDConfig, Trial, for_scale
from experiments.logit_kd.dml import train_dml
from experiments.logit_kd.trials import Source, ensemble, load, train
from experiments.teachers import teacher


def flags(p) -> None:
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from {', '.join(METHODS)} (default: all; the student "
                        f"alone always runs)")
    p.add_argument("--assistant", default=None,
                   help="TA-KD's assistant model (default: the student, whose kd trial it is)")
    p.add_argument("--ta-student", default=None, help="TA-KD's small student (default mlp_16)")


def configure(cfg: LogitKDConfig, a) -> LogitKDConfig:
    cfg = replace(cfg, teacher=replace(cfg.teacher, **cfg.setup.data_fields()))  # the students' data
    if a.methods is not None:
        cfg = replace(cfg, methods=parse_list(a.methods, METHODS, "methods"))
    if a.ta_student is not None:
        cfg = replace(cfg, ta_student=a.ta_student)
    return cfg if a.assistant is None else replace(cfg, assistant=a.assistant)


def run_seed(ctx: Context, seed: int, teach: Source) -> list[dict]:
    cfg, s = ctx.cfg, ctx.cfg.setup
    soft = dict(T=cfg.T, alpha=cfg.alpha)
    alone = Trial(s, seed)
    rows = [train(ctx, alone, name=f"s{seed}-student")]
    gen0 = load(ctx, alone, f"{s.model} gen 0")

    if "kd" in cfg.methods:
        rows.append(train(ctx, Trial(s, seed, "kd", generation=1, parent=teach.hash, **soft),
                          teach, f"s{seed}-kd"))
    if "dml" in cfg.methods:
        rows += train_dml(ctx, Trial(s, seed, "dml", peers=cfg.dml_peers), f"s{seed}-dml")
    if "ban" in cfg.methods:  # Born-Again: generation k is KD from generation k - 1
        prev, gens = gen0, []
        for g in range(1, cfg.ban_generations + 1):
            trial = Trial(s, seed, "ban", generation=g, parent=prev.hash, **soft)
            rows.append(train(ctx, trial, prev, f"s{seed}-ban{g}"))
            prev = load(ctx, trial, f"{s.model} gen {g}")
            gens.append(prev)
        rows.append(ensemble(ctx, Trial(s, seed, "ban_ensemble", generation=len(gens),
                                        parent=prev.hash), gens, f"s{seed}-ban-ensemble"))
    if "lr" in cfg.methods:  # Label Refinery: soft targets only, while val accuracy improves
        prev, prev_val = gen0, rows[0]["val_acc"]
        for g in range(1, cfg.refinery_max + 1):
            trial = Trial(s, seed, "lr", generation=g, parent=prev.hash, T=1.0, alpha=1.0)
            row = train(ctx, trial, prev, f"s{seed}-lr{g}")
            row["improved"] = row["val_acc"] > prev_val
            rows.append(row)
            if not row["improved"]:
                break
            prev, prev_val = load(ctx, trial, f"{s.model} gen {g}"), row["val_acc"]
    if "ta" in cfg.methods:
        rows += run_ta(ctx, seed, teach)
    return rows


def run_ta(ctx: Context, seed: int, teach: Source) -> list[dict]:
    """TA-KD: `ta_student` alone, by KD from the teacher, and by KD from the assistant, which
    is itself KD from the teacher (the kd arm's trial when the assistant is the main student)."""
    cfg, s = ctx.cfg, ctx.cfg.setup
    soft, small, rows = dict(T=cfg.T, alpha=cfg.alpha), cfg.ta_student, []
    other = cfg.assistant if cfg.assistant not in ("", s.model) else ""
    assistant = Trial(s, seed, "kd", model=other, generation=1, parent=teach.hash, **soft)
    if other or "kd" not in cfg.methods:  # else the kd arm above is this very trial
        rows.append(train(ctx, assistant, teach, f"s{seed}-ta-assistant"))
    ta = load(ctx, assistant, other or s.model)
    rows.append(train(ctx, Trial(s, seed, model=small), name=f"s{seed}-{small}"))
    rows.append(train(ctx, Trial(s, seed, "kd", model=small, generation=1, parent=teach.hash,
                                 **soft), teach, f"s{seed}-{small}-kd"))
    rows.append(train(ctx, Trial(s, seed, "ta_kd", model=small, generation=2, parent=ta.hash,
                                 **soft), ta, f"s{seed}-{small}-ta"))
    return rows


def run(ctx: Context) -> list[dict]:
    """The shared teacher's row, then every seed's rows."""
    spec = ctx.cfg.teacher
    net, res = teacher(spec, ctx.data, ctx.scale, ctx.device)
    teach = Source(res["run"], spec.model, net, spec.model)
    print(f"teacher {spec.model}: test acc {res['final_test_acc']:.4f}", flush=True)
    teacher_row = {"method": "teacher", "teacher": "", "student": spec.model, "seed": spec.seed,
                   "generation": 0, "peer": 0, "test_acc": res["final_test_acc"],
                   "val_acc": res["final_val_acc"], "best_val_test_acc": res["test_acc"],
                   "train_acc": teach.train_acc(ctx.data),
                   "train_wall_s": res["train_wall_s"], "run": teach.hash,
                   "selected_last": res.get("selected_last")}
    return [teacher_row, *(row for seed in range(ctx.cfg.seeds) for row in run_seed(ctx, seed, teach))]


write_report = lazy("experiments.logit_kd.report", "write_report")  # imported when reporting
EXPERIMENT = Experiment(
    name="logit_kd", doc=__doc__, for_scale=for_scale,
    model={"smoke": "lenet_300_100", "default": "lenet_300_100", "paper": "resnet20"},
    model_help="the student", flags=flags, configure=configure,
    report=write_report, run=run)
main = EXPERIMENT.main

if __name__ == "__main__":
    main()
