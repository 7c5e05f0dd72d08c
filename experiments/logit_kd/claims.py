"""The claims of the five logit-distillation papers, checked on our trials.

Rows of `trials.csv` used here: `method` (student, kd, dml, ban, ban_ensemble, lr, ta_kd),
`student` (the model trained), `generation`, `seed`, `test_acc`, and for lr `improved` (its
validation accuracy beat its parent's). The main student is the model of the Born-Again / DML /
student-alone rows; the TA-KD student is the model of the `ta_kd` rows (a smaller one, so that
the teacher–student gap is large), with its own `student` (alone) and `kd` (direct) rows. Every
comparison is paired by seed: the arms of one seed share the student-alone init and data order.
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import Claim, Comparison, better, judge, no_worse, per_seed, untested


def ta_student(trials: pd.DataFrame) -> str:
    """The model TA-KD distils into ("" when TA-KD was not run)."""
    ta = trials[trials.method == "ta_kd"]
    return ta.student.iloc[0] if len(ta) else ""


def main_student(trials: pd.DataFrame) -> str:
    """The model every method but TA-KD trains ("" when no student alone was run)."""
    alone = trials[(trials.method == "student") & (trials.student != ta_student(trials))]
    return alone.student.iloc[0] if len(alone) else ""


def arm(trials: pd.DataFrame, method: str, student: str, **where) -> pd.Series:
    """Test accuracy per seed of `method` rows training `student` (peers averaged per seed)."""
    return per_seed(trials, method=method, student=student, **where)


def generation(trials: pd.DataFrame, method: str, g: int) -> pd.Series:
    """Generation `g` of a chain of the main student; generation 0 is the student alone."""
    s = main_student(trials)
    return arm(trials, "student", s) if g == 0 else arm(trials, method, s, generation=g)


def on_seeds_of(a: pd.Series, b: pd.Series) -> pd.Series:
    """`b` on the seeds `a` ran (a chain stopped early on some seeds runs fewer of them)."""
    return b.loc[b.index.intersection(a.index)]


def kd_beats_alone(trials: pd.DataFrame) -> list[Comparison]:
    s = main_student(trials)
    return [better(f"KD {s} vs {s} alone", arm(trials, "kd", s), arm(trials, "student", s))]


def dml_beats_alone(trials: pd.DataFrame) -> list[Comparison]:
    s = main_student(trials)
    return [better(f"DML peer (mean of peers per seed) vs {s} alone", arm(trials, "dml", s),
                   arm(trials, "student", s))]


def ban_generations(trials: pd.DataFrame) -> list[Comparison]:
    gens = sorted(trials[trials.method == "ban"].generation.unique())
    return [better(f"BAN gen {int(g)} vs gen {int(g) - 1}", generation(trials, "ban", int(g)),
                   generation(trials, "ban", int(g) - 1)) for g in gens]


def ban_ensemble(trials: pd.DataFrame) -> list[Comparison]:
    ens = trials[trials.method == "ban_ensemble"]
    if not len(ens):
        return []
    e = arm(trials, "ban_ensemble", main_student(trials))
    return [better(f"ensemble of gens 1..{int(ens.generation.max())} vs gen {int(g)}", e,
                   generation(trials, "ban", int(g)))
            for g in sorted(trials[trials.method == "ban"].generation.unique())]


def lr_refines(trials: pd.DataFrame) -> list[Comparison]:
    """Each refinement against its parent, on the seeds that ran it (the stop rule ends a
    chain at its first refinement without a validation gain)."""
    parts = []
    for g in sorted(trials[trials.method == "lr"].generation.unique()):
        a = generation(trials, "lr", int(g))
        parts.append(better(f"refinement {int(g)} vs {int(g) - 1}", a,
                            on_seeds_of(a, generation(trials, "lr", int(g) - 1))))
    return parts


def refinery_kept(trials: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the row of the generation Label Refinery's stop rule keeps: the last refinement
    that improved validation accuracy over its parent, or generation 0 (the student alone) if
    none did."""
    rows = []
    for seed, chain in trials[trials.method == "lr"].groupby("seed"):
        gen0 = trials[(trials.method == "student") & (trials.seed == seed)
                      & (trials.student == chain.student.iloc[0])]
        if not len(gen0):
            continue
        kept = gen0.iloc[0]
        for _, r in chain.sort_values("generation").iterrows():
            if not bool(r.improved):
                break
            kept = r
        rows.append(kept)
    return pd.DataFrame(rows).reset_index(drop=True)


def lr_stop_rule(trials: pd.DataFrame) -> list[Comparison]:
    kept = refinery_kept(trials)
    kept = kept.set_index("seed").test_acc.astype(float) if len(kept) else kept
    return [no_worse("generation kept by the stop rule vs generation 0", kept,
                     on_seeds_of(kept, generation(trials, "lr", 0)))] if len(kept) else []


def ta_beats_direct(trials: pd.DataFrame):
    s = ta_student(trials)
    if not s:
        return untested("TA-KD was not run")
    alone, teacher = arm(trials, "student", s), trials[trials.method == "teacher"].test_acc
    note = (f"teacher–student gap {100 * (teacher.mean() - alone.mean()):.2f} points "
            f"(teacher vs {s} alone)" if len(teacher) and len(alone) else "")
    return judge([better(f"{s} through the assistant vs {s} by direct KD",
                         arm(trials, "ta_kd", s), arm(trials, "kd", s))], note)


CLAIMS = [
    Claim("kd_beats_alone",
          "A small net trained on a big net's soft targets beats the same net trained on labels "
          "(MNIST: 146 test errors alone, 74 distilled at T = 20; the big net 67).",
          lambda t: judge(kd_beats_alone(t)), "Hinton et al. 2015"),
    Claim("dml_peers_beat_alone",
          "Each network trained by mutual learning beats the same network trained alone; no "
          "powerful teacher is needed.", lambda t: judge(dml_beats_alone(t)),
          "Zhang et al. 2018, abstract"),
    Claim("ban_beats_previous_generation",
          "Born-Again students, parameterised identically to their teachers, outperform them "
          "significantly (DenseNet BANs: 15.5% validation error on CIFAR-100); each generation "
          "is taught by the one before.", lambda t: judge(ban_generations(t)),
          "Furlanello et al. 2018, abstract"),
    Claim("ban_ensemble_beats_members",
          "The ensemble of the Born-Again generations improves on its members.",
          lambda t: judge(ban_ensemble(t)), "Furlanello et al. 2018"),
    Claim("label_refinery_refines",
          "Training a model on the soft outputs of the previous generation raises accuracy "
          "(AlexNet self-refined on ImageNet: 57.93, 59.97, 60.87, 61.22, 61.37 top-1).",
          lambda t: judge(lr_refines(t)), "Bagherinezhad et al. 2018"),
    Claim("label_refinery_stop_rule",
          "Refinement is repeated while accuracy improves, so the model it ends with is no worse "
          "than the unrefined one.", lambda t: judge(lr_stop_rule(t)),
          "Bagherinezhad et al. 2018"),
    Claim("ta_beats_direct_kd",
          "Across a large teacher–student gap, distilling through a mid-size teacher assistant "
          "beats direct KD (CIFAR-100, resnet110 → resnet8: 61.41 direct, 61.82 through a "
          "resnet20 assistant; 61.37 alone).", ta_beats_direct,
          "Mirzadeh et al. 2020"),
]
