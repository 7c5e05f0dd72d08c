"""The one verdict rule of experiments.claims, on hand-computed cases."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from experiments import claims as C


def seeds(*values):
    return pd.Series(values, index=pd.Index(range(len(values)), name="seed"), dtype=float)


def test_paired_difference_and_standard_error_by_hand():
    # per-seed differences 1, 2, 3 points: mean 2, sd 1, se 1/sqrt(3)
    c = C.better("a vs b", seeds(0.51, 0.62, 0.73), seeds(0.50, 0.60, 0.70))
    assert c.paired and c.diff == pytest.approx(2.0) and c.se == pytest.approx(1 / math.sqrt(3))
    assert (c.mean_a, c.n_a, c.n_b) == (pytest.approx(62.0), 3, 3)
    assert c.counts  # 2 > 2 / sqrt(3) = 1.15


def test_unpaired_uses_welch_standard_error():
    a, b = [0.80, 0.84], [0.79, 0.81, 0.83]  # var_a = 8 pt², var_b = 4 pt²
    c = C.better("x", a, b)
    assert not c.paired
    assert c.se == pytest.approx(math.sqrt(8 / 2 + 4 / 3))
    assert c.diff == pytest.approx(1.0) and not c.counts  # 1 < 2 * 2.38


def test_wrong_sign_never_counts_and_one_seed_gives_no_standard_error():
    assert not C.better("x", seeds(0.5, 0.5), seeds(0.6, 0.6)).counts
    one = C.better("x", seeds(0.9), seeds(0.1))
    assert math.isnan(one.se) and not one.counts


def test_no_worse_uses_the_papers_tolerance_else_two_standard_errors():
    a, b = seeds(0.90, 0.91), seeds(0.915, 0.925)  # 1.5 points lower, paired sd 0
    assert C.no_worse("ptq", a, b, tolerance=2.0).counts
    assert not C.no_worse("ptq", a, b, tolerance=1.0).counts
    assert not C.no_worse("ptq", a, b).counts  # se 0: any loss is significant
    noisy = C.no_worse("x", seeds(0.90, 0.93), seeds(0.92, 0.92))  # Δ -0.5, se 1.5
    assert noisy.counts


def test_judge_all_some_none_and_untested():
    yes = C.better("y", seeds(0.6, 0.7), seeds(0.5, 0.6))
    no = C.better("n", seeds(0.5, 0.6), seeds(0.6, 0.7))
    assert C.judge([yes, yes]).verdict == C.REPRODUCED
    assert C.judge([yes, no]).verdict == C.PARTLY
    assert C.judge([no]).verdict == C.NOT
    assert C.judge([]).verdict == C.UNTESTED
    empty = C.better("e", seeds(), seeds(0.5))
    assert C.judge([empty]).verdict == C.UNTESTED


def test_per_seed_selects_and_averages():
    t = pd.DataFrame({"seed": [0, 0, 1, 1], "arm": ["a", "a", "a", "b"], "test_acc": [0.5, 0.7, 0.9, 0.1]})
    s = C.per_seed(t, arm="a")
    assert s.index.name == "seed" and s.tolist() == pytest.approx([0.6, 0.9])
    assert C.per_seed(t, missing_column=1).empty


def test_write_claims_tables(tmp_path):
    t = pd.DataFrame({"seed": [0, 1, 0, 1], "arm": ["a", "a", "b", "b"], "test_acc": [0.6, 0.7, 0.5, 0.6]})
    claims = [C.Claim("a_beats_b", "A beats B by 1 point", lambda df: C.judge(
        [C.better("a vs b", C.per_seed(df, arm="a"), C.per_seed(df, arm="b"))]), source="Tab. 1"),
        C.Claim("paper_only", "at paper scale", lambda df: C.untested("paper scale only"))]
    table = C.write_claims(claims, t, tmp_path, "toy")
    assert table.verdict.tolist() == [C.REPRODUCED, C.UNTESTED]
    md = (tmp_path / "claims.md").read_text()
    assert "| a_beats_b | A beats B by 1 point (Tab. 1) | **reproduced** |" in md
    assert "Total: 1 reproduced, 0 partly, 0 not reproduced, 1 not tested at this scale." in md
    assert pd.read_csv(tmp_path / "claims.csv").n_counting.tolist() == [1, 0]
