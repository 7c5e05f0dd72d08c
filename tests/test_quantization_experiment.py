"""Smoke run of experiments.quantization: columns, accuracies, int8 size, reuse
(bad input: test_bad_input.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import ROOT, assert_report, assert_reused, smoke_fixture

COLUMNS = ["method", "bits", "scope", "granularity", "calibration", "seed", "test_acc",
           "size_bytes", "latency_ms"]
METHODS = {"float", "ptq", "qat", "int8", "fixed_point", "float16", "bfloat16"}


smoke = smoke_fixture("quantization")


@pytest.mark.smoke
def test_columns_methods_and_accuracies(smoke):
    base, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.method) == METHODS
    assert set(trials.seed) == {0, 1}
    # per seed: float, 5 bits x 6 PTQ variants, 2 QAT, int8, 6 fixed point, 2 float casts
    assert (trials.groupby("seed").size() == 1 + 30 + 2 + 1 + 6 + 2).all()
    floats = trials[trials.method == "float"]
    assert (floats.test_acc > 0.5).all()  # trained, far above chance (0.1)
    for r in floats.itertuples():  # the float row reports its final weights, the curve's last row
        curve = pd.read_csv(base / "runs" / "smoke" / "quantization" / r.run / "metrics.csv")
        assert curve.test_acc.iloc[-1] == r.test_acc
    table = assert_report(out, "quantization", 84, "accuracy_vs_bits.png", "precision.png")
    assert "| method | bits | scope | granularity | calibration | test acc %" in table


@pytest.mark.smoke
def test_8bit_ptq_close_to_float(smoke):
    _, _, trials = smoke
    for seed, t in trials.groupby("seed"):
        ref = t[t.method == "float"].test_acc.item()
        ptq8 = t[(t.method == "ptq") & (t.bits == 8)]
        assert len(ptq8) == 6 and (ptq8.test_acc - ref).abs().max() <= 0.02, seed


@pytest.mark.smoke
def test_2bit_per_channel_and_qat_recover_accuracy(smoke):
    """At 2 bits, per-channel weight ranges beat one range per tensor, and QAT's fine-tuning
    beats the same quantizer applied post-training."""
    _, _, trials = smoke
    for seed, t in trials.groupby("seed"):
        ptq2 = t[(t.method == "ptq") & (t.bits == 2)].set_index(["scope", "granularity", "calibration"])
        w = ptq2.loc["weights"].test_acc
        assert w[("per_channel", "minmax")] > w[("per_tensor", "minmax")], seed
        qat2 = t[(t.method == "qat") & (t.bits == 2)].test_acc.item()
        assert qat2 > ptq2.test_acc[("weights+acts", "per_channel", "minmax")], seed


@pytest.mark.smoke
def test_int8_smaller_accurate_and_measured_once(smoke):
    _, _, trials = smoke
    int8 = trials[trials.method == "int8"].set_index("seed")
    floats = trials[trials.method == "float"].set_index("seed")
    assert len(int8) == 2
    assert (int8.size_bytes < 0.3 * int8.float_size_bytes).all()
    assert ((int8.test_acc - floats.test_acc).abs() <= 0.02).all()
    # the float row's latency is the one measured beside the int8 model, not a second run
    assert (floats.latency_ms == int8.float_latency_ms).all()
    ptq4 = trials[(trials.method == "ptq") & (trials.bits == 4)]
    assert (ptq4.size_bytes < trials[trials.method == "float"].size_bytes.min() / 7).all()


@pytest.mark.smoke
def test_rerun_reuses_finished_trials(smoke):
    base, out, _ = smoke
    table = (out / "table.md").read_text()
    assert_reused("quantization", base)
    assert (out / "table.md").read_text() == table  # still names the invocation that trained


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("quantization", smoke.out, monkeypatch)
    assert "float test accuracy" in text and "variants within 2 points of float" in text


def test_committed_default_hashes():
    """Every committed default trial keeps its run folder: its Trial, rebuilt from the default
    preset and the row's fields, hashes to the row's `run` (float, PTQ, QAT, int8, fixed point
    and float casts alike)."""
    from experiments.quantization.config import Trial, for_scale
    from lib.runs import config_hash

    cfg = for_scale("default")
    rows = pd.read_csv(ROOT / "results" / "quantization" / "default" / "trials.csv")
    rows[["scope", "granularity", "calibration"]] = rows[["scope", "granularity", "calibration"]].fillna("")
    assert set(rows.method) == METHODS
    for r in rows.itertuples():
        seed, bits = int(r.seed), int(r.bits)
        if r.method == "float":
            trial = Trial(cfg.setup, seed)
        elif r.method in ("fixed_point", "float16", "bfloat16"):
            trial = Trial(cfg.setup, seed, r.method, bits, r.scope)
        else:  # ptq, qat, int8: the activations are calibrated on calib_size images
            trial = Trial(cfg.setup, seed, r.method, bits, r.scope, r.granularity, r.calibration,
                          calib_size=cfg.calib_size if r.scope == "weights+acts" else 0,
                          qat=cfg.qat if r.method == "qat" else None)
        assert config_hash(trial) == r.run, r
