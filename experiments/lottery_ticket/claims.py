"""The claims of Frankle & Carbin (ICLR 2019) about LeNet-300-100, checked on our trials.

Levels are IMP rounds (20% of hidden and 10% of output weights per round): level 3 leaves 51.3%
of the weights, 7 leaves 21.1%, 15 leaves 3.6%, 20 leaves 1.2% (the paper's Figure 3 and 4).
Every comparison is paired by seed: the ticket, its reinit and the dense net of one seed share
the data order, and the ticket shares the dense net's init.
"""
from __future__ import annotations

import pandas as pd

from experiments.claims import (Claim, Comparison, better, judge, left, levels, no_worse,
                               per_seed, untested)

PAPER_LEFT = {3: 51.3, 7: 21.1, 15: 3.6}  # % of weights left after n rounds (Section 2)


def _arm(trials: pd.DataFrame, level: int, variant: str, metric: str = "test_acc") -> pd.Series:
    return per_seed(trials, metric, level=level, variant=variant)


def _left(trials: pd.DataFrame, level: int) -> str:
    return f"{left(trials, level)} left"


def tickets_beat_dense(trials: pd.DataFrame) -> list[Comparison]:
    dense = _arm(trials, 0, "ticket")
    return [better(f"ticket {_left(trials, lv)} vs dense", _arm(trials, lv, "ticket"), dense)
            for lv in levels(trials, 3, 7)]


def tickets_learn_faster(trials: pd.DataFrame) -> list[Comparison]:
    dense = _arm(trials, 0, "ticket", "early_stop_iter")  # earlier is better: dense − ticket > 0
    return [better(f"early stop, dense vs ticket {_left(trials, lv)} (iterations)", dense,
                   _arm(trials, lv, "ticket", "early_stop_iter"), scale=1.0)
            for lv in levels(trials, 3, 7)]


def ticket_back_to_dense(trials: pd.DataFrame):
    if 15 not in set(trials.level):
        return untested("needs level 15 (3.6% of the weights)")
    t, d = _arm(trials, 15, "ticket"), _arm(trials, 0, "ticket")
    return judge([no_worse("ticket 3.6% not below dense", t, d),
                  no_worse("ticket 3.6% not above dense", d, t)])


def _reinit_gap(trials: pd.DataFrame, level: int) -> pd.Series:
    """Ticket minus reinit at `level`, per seed (paired: both share the seed's mask and data order)."""
    return _arm(trials, level, "ticket") - _arm(trials, level, "reinit")


def reinit_falls_behind(trials: pd.DataFrame) -> list[Comparison]:
    """Ticket above reinit at every level from 21.1% down, and ("increasingly so") the gap at the
    sparsest level larger than at 21.1%, paired by seed."""
    lvs = levels(trials, 7)
    parts = [better(f"ticket vs reinit {_left(trials, lv)}", _arm(trials, lv, "ticket"),
                    _arm(trials, lv, "reinit"))
             for lv in lvs]
    if len(lvs) > 1:
        parts.append(better(f"ticket − reinit gap, {_left(trials, lvs[-1])} vs {_left(trials, lvs[0])}",
                            _reinit_gap(trials, lvs[-1]), _reinit_gap(trials, lvs[0])))
    return parts


def reinit_learns_slower(trials: pd.DataFrame) -> list[Comparison]:
    return [better(f"early stop, reinit vs ticket {_left(trials, lv)} (iterations)",
                   _arm(trials, lv, "reinit", "early_stop_iter"),
                   _arm(trials, lv, "ticket", "early_stop_iter"), scale=1.0)
            for lv in levels(trials, 3)]


def sparsity_schedule(trials: pd.DataFrame):
    parts = []
    for level, paper in PAPER_LEFT.items():
        ours = trials[(trials.level == level) & (trials.variant == "ticket")].weights_left
        if len(ours):  # the paper rounds to 0.1 point: agreement within 0.05 point
            parts.append(no_worse(f"level {level}: ours vs paper's {paper}%", ours, [paper / 100],
                                  tolerance=0.05))
            parts.append(no_worse(f"level {level}: paper's {paper}% vs ours", [paper / 100], ours,
                                  tolerance=0.05))
    return judge(parts)


CLAIMS = [
    Claim("tickets_beat_dense",
          "Winning tickets with 51.3% down to 21.1% of the weights reach higher test accuracy "
          "than the original network (LeNet-300-100 on MNIST: about 98.2% vs 97.9% at 21%).",
          lambda t: judge(tickets_beat_dense(t)), "Fig. 3, 4"),
    Claim("tickets_learn_faster",
          "Winning tickets learn faster: the early-stopping iteration falls as the network is "
          "pruned, down to 21.1% of the weights.", lambda t: judge(tickets_learn_faster(t)),
          "Fig. 3, 4"),
    Claim("ticket_at_3.6_back_to_dense",
          "At 3.6% of the weights, a winning ticket is back to about the original network's "
          "accuracy.", ticket_back_to_dense, "Fig. 3"),
    Claim("reinit_falls_behind",
          "Randomly reinitialised, the same masks reach lower test accuracy than the winning "
          "tickets, increasingly so as sparsity grows (below 21.1% of the weights).",
          lambda t: judge(reinit_falls_behind(t)), "Fig. 4"),
    Claim("reinit_learns_slower",
          "Randomly reinitialised, the same masks learn slower than the winning tickets.",
          lambda t: judge(reinit_learns_slower(t)), "Fig. 4"),
    Claim("sparsity_schedule",
          "Pruning 20% of hidden and 10% of output weights per round leaves 51.3% after 3 "
          "rounds, 21.1% after 7 and 3.6% after 15.", sparsity_schedule, "Sec. 2"),
]
