"""Smoke run of experiments.compression_pipeline: one row per stage, sizes shrink, reuse
(bad input: test_bad_input.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import ROOT, assert_report, assert_reused, smoke_fixture
from lib.models.mobilenet import mobilenet_params

COLUMNS = ["method", "bits", "seed", "test_acc", "size_bytes", "params", "macs", "latency_ms",
           "compression", "saved_bytes"]
STAGES = ["teacher", "student", "kd", "pruned", "pruned+kd", "ptq", "ptq", "qat", "int8"]


smoke = smoke_fixture("compression_pipeline")


def one(t: pd.DataFrame, method: str, bits: int | None = None) -> pd.Series:
    rows = t[(t.method == method) & ((t.bits == bits) if bits is not None else True)]
    assert len(rows) == 1, (method, bits, len(rows))
    return rows.iloc[0]


@pytest.mark.smoke
def test_one_row_per_stage_and_seed(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert trials[trials.method == "teacher"].shape[0] == 1  # shared, trained once
    assert one(trials, "teacher").test_acc > 0.5  # the shared smoke teacher, far above chance
    for seed in (0, 1):
        t = trials[trials.seed == seed]
        methods = t.sort_values(["stage", "bits"], ascending=[True, False]).method.tolist()
        assert methods == (STAGES if seed == 0 else STAGES[1:])
        assert sorted(t[t.method == "ptq"].bits) == [4, 8]
    # 2 seeds x 8 + teacher
    table = assert_report(out, "compression_pipeline", 17, "accuracy_vs_size.png")
    assert "| method | bits | test acc % | params | MACs | size (bytes)" in table
    assert "compression ×" in table


@pytest.mark.smoke
def test_trained_stages_report_their_final_weights(smoke):
    """A trained stage hands its final weights on, so its row's accuracy is the last evaluation
    of its curve; the early-stop one is kept beside it."""
    base, _, trials = smoke
    runs = base / "runs" / "smoke" / "compression_pipeline"
    trained = trials[trials.method.isin(["student", "kd", "pruned+kd", "qat"])]
    assert len(trained) == 8
    for r in trained.itertuples():
        curve = pd.read_csv(runs / r.run / "metrics.csv")
        assert r.test_acc == curve.test_acc.iloc[-1], r
        assert r.early_stop_test_acc == curve.test_acc[curve.val_loss.idxmin()], r


@pytest.mark.smoke
def test_sizes_shrink_along_the_pipeline(smoke):
    _, _, trials = smoke
    teacher = one(trials, "teacher")
    assert teacher.compression == 1.0
    for seed, t in trials[trials.seed.isin([0, 1]) & (trials.method != "teacher")].groupby("seed"):
        student, kd, pruned, ft = (one(t, m) for m in ("student", "kd", "pruned", "pruned+kd"))
        assert student.params == kd.params < teacher.params
        assert kd.macs < teacher.macs / 5
        # 50% of every unit's channels: about a quarter of the pointwise weights are left
        assert pruned.params == ft.params < 0.4 * kd.params and ft.macs < 0.5 * kd.macs
        assert ft.params == mobilenet_params(1, 10, 8, ((16, 2), (32, 2), (32, 1), (64, 2)))
        ptq8, ptq4, qat4, int8 = one(t, "ptq", 8), one(t, "ptq", 4), one(t, "qat", 4), one(t, "int8")
        assert ft.size_bytes == 4 * ft.params  # float32
        assert ft.size_bytes > ptq8.size_bytes > ptq4.size_bytes == qat4.size_bytes
        assert ptq8.size_bytes < ft.size_bytes / 3  # weights at 8 bits, BN at 32
        assert int8.saved_bytes < ft.saved_bytes
        assert qat4.compression > ptq8.compression > ft.compression > kd.compression > 1
        # latency is measured on the float models and the real int8 one, never on fake quantization
        measured = t.method.isin(["student", "kd", "pruned", "pruned+kd", "int8"])
        assert t[measured].latency_ms.notna().all() and t[~measured].latency_ms.isna().all()


@pytest.mark.smoke
def test_every_trial_is_reused_on_rerun(smoke):
    """A second invocation on the same runs trains nothing and reports the same trials (only
    the latencies are measured again)."""
    base, out, trials = smoke
    table = (out / "table.md").read_text()
    assert_reused("compression_pipeline", base)
    again = pd.read_csv(out / "trials.csv")
    assert again.drop(columns="latency_ms").equals(trials.drop(columns="latency_ms"))
    # latency is measured again, but the footer still names the invocation that trained
    assert (out / "table.md").read_text().split("\nTrials:")[1] == table.split("\nTrials:")[1]


def test_committed_default_hashes():
    """Every committed default trial keeps its run folder: each stage's Trial, rebuilt from the
    default preset as the command line makes it, hashes to the row's `run` (the teacher too)."""
    from experiments.compression_pipeline.__main__ import EXPERIMENT
    from experiments.compression_pipeline.config import for_scale, stage_trials
    from lib.runs import config_hash

    cfg = for_scale("default")
    assert EXPERIMENT.parse(["--scale", "default"])[0] == cfg
    rows = pd.read_csv(ROOT / "results" / "compression_pipeline" / "default" / "trials.csv")
    assert len(rows) == 17 and set(rows.method) == set(STAGES)
    for r in rows.itertuples():
        trial = (cfg.teacher if r.method == "teacher" else
                 stage_trials(cfg, int(r.seed))[r.method, int(r.bits)])
        assert config_hash(trial) == r.run, r
    assert rows[rows.method == "teacher"].run.item() == "f11e746d548e"


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("compression_pipeline", smoke.out, monkeypatch)
    assert "teacher test accuracy" in text and "compression" in text
