"""The claims behind the lecture's "mix it" recipe, checked on the pipeline's trials: each stage
against the stage it starts from, and the end of the chain against the student trained alone.

Every stage of a seed starts from that seed's previous stage, so every comparison is paired by
seed. The teacher is one shared row (seed 0) and no claim compares with it. The claims of the
papers behind a stage are stated in the words the lab's experiments use for them (the KD,
filter-pruning and quantization experiments' claims.py); the whitepaper's int8 size and speed
checks are the quantization experiment's own functions, here on the pruned model's int8 copy.
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import Claim, Comparison, better, judge, no_worse, per_seed
from experiments.filter_importance.claims import CLAIMS as FILTER_CLAIMS
from experiments.logit_kd.claims import CLAIMS as KD_CLAIMS
from experiments.quantization import claims as whitepaper

FLOAT_END = ("pruned+kd", 32, 32)  # (method, bits, act_bits): what every quantizer starts from
INT8 = ("int8", 8, 8)
QAT4 = ("qat", 4, 8)  # W4A8: the whitepaper's 4-bit setting


def _paper(claims: list[Claim], claim_id: str) -> str:
    return next(c.paper for c in claims if c.id == claim_id)


def arm(trials: pd.DataFrame, method: str, bits: int = 32, act_bits: int = 32,
        metric: str = "test_acc") -> pd.Series:
    """`metric` per seed of one stage (float stages are bits = act_bits = 32)."""
    return per_seed(trials[trials.method != "teacher"], metric, method=method, bits=bits,
                    act_bits=act_bits)


def kd_beats_student(trials: pd.DataFrame) -> list[Comparison]:
    return [better("kd vs student alone", arm(trials, "kd"), arm(trials, "student"))]


def pruning_without_loss(trials: pd.DataFrame) -> list[Comparison]:
    return [no_worse("pruned+kd vs kd (unpruned)", arm(trials, *FLOAT_END), arm(trials, "kd"))]


def macs_removed(trials: pd.DataFrame) -> str:
    """'pruning removed 38% of the MACs' (of the kd student's), or '' without both stages."""
    kd, ft = arm(trials, "kd", metric="macs"), arm(trials, *FLOAT_END, metric="macs")
    if not (len(kd) and len(ft)):
        return ""
    return f"pruning removed {1 - ft.mean() / kd.mean():.0%} of the MACs"


def ptq8_within_2(trials: pd.DataFrame) -> list[Comparison]:
    end = arm(trials, *FLOAT_END)
    return [no_worse("PTQ W8A8 vs pruned+kd", arm(trials, "ptq", 8, 8), end, tolerance=2.0),
            no_worse("int8 (torch.ao) vs pruned+kd", arm(trials, *INT8), end, tolerance=2.0)]


def four_bit_needs_qat(trials: pd.DataFrame) -> list[Comparison]:
    qat = arm(trials, *QAT4)
    return [better("QAT W4A8 vs PTQ W4A8", qat, arm(trials, "ptq", 4, 8)),
            no_worse("QAT W4A8 vs pruned+kd", qat, arm(trials, *FLOAT_END), tolerance=10.0)]


def small_and_good(trials: pd.DataFrame) -> list[Comparison]:
    student = arm(trials, "student")
    return [no_worse("int8 end vs student alone", arm(trials, *INT8), student),
            no_worse("QAT W4A8 end vs student alone", arm(trials, *QAT4), student)]


def how_small(trials: pd.DataFrame) -> str:
    """The end models' size against the student's: 'int8 end: 12.3× smaller weights, ...'."""
    parts = []
    for name, (method, bits, act_bits) in (("int8 end", INT8), ("QAT W4A8 end", QAT4)):
        end = arm(trials, method, bits, act_bits, "size_bytes")
        student = arm(trials, "student", metric="size_bytes")
        if len(end) and len(student):
            parts.append(f"{name}: {student.mean() / end.mean():.1f}× smaller than the student "
                         f"(size estimate)")
    macs = macs_removed(trials)
    return "; ".join(parts + ([f"{macs} in both"] if macs else []))


CLAIMS = [
    Claim("kd_beats_student", _paper(KD_CLAIMS, "kd_beats_alone"),
          lambda t: judge(kd_beats_student(t)), "Hinton et al. 2015"),
    Claim("pruning_without_loss",
          _paper(FILTER_CLAIMS, "l1_prunes_34pct_without_loss") + " Here: L1 filter pruning of "
          "the distilled student at the ratio it can afford, fine-tuned with KD.",
          lambda t: judge(pruning_without_loss(t), macs_removed(t)), "Li et al. 2017, Table 1"),
    Claim("ptq8_within_2pct", _paper(whitepaper.CLAIMS, "ptq8_within_2pct"),
          lambda t: judge(ptq8_within_2(t)), "Krishnamoorthi 2018, abstract"),
    Claim("four_bit_weights_need_qat", _paper(whitepaper.CLAIMS, "four_bit_weights_need_qat"),
          lambda t: judge(four_bit_needs_qat(t)), "Krishnamoorthi 2018, abstract"),
    Claim("int8_4x_smaller", _paper(whitepaper.CLAIMS, "int8_4x_smaller"),
          lambda t: judge(whitepaper.int8_four_times_smaller(
              t, ("float_saved_bytes", "saved_bytes"))), "Krishnamoorthi 2018, abstract"),
    Claim("int8_2x_faster", _paper(whitepaper.CLAIMS, "int8_2x_faster"),
          lambda t: judge(whitepaper.int8_faster(t)), "Krishnamoorthi 2018, abstract"),
    Claim("small_and_good",
          "\"Mixed it!\": ResNet101 → (knowledge distillation) → MobileNet → (network pruning) "
          "→ MobileNet-pruned → (quantization, fine-tune or finalize). The slide has no words "
          "beyond the chain; read here (issue #12) as: the end model is small and as good as the "
          "MobileNet trained alone. No number is stated, so: no loss larger than twice its "
          "standard error.",
          lambda t: judge(small_and_good(t), how_small(t)),
          "lecture, \"Mixed it!\" slide"),
]
