"""Smoke run of experiments.compression_pipeline: one row per stage, sizes shrink, bad input."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import assert_rejected, run_experiment
from lib.models.mobilenet import mobilenet_params

COLUMNS = ["method", "bits", "seed", "test_acc", "size_bytes", "params", "macs", "latency_ms",
           "compression", "saved_bytes"]
STAGES = ["teacher", "student", "kd", "pruned", "pruned+kd", "ptq", "ptq", "qat", "int8"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    run_experiment("compression_pipeline", "--scale", "smoke", base=base)
    out = base / "results" / "compression_pipeline" / "smoke"
    return out, pd.read_csv(out / "trials.csv")


def one(t: pd.DataFrame, method: str, bits: int | None = None) -> pd.Series:
    rows = t[(t.method == method) & ((t.bits == bits) if bits is not None else True)]
    assert len(rows) == 1, (method, bits, len(rows))
    return rows.iloc[0]


def test_one_row_per_stage_and_seed(smoke):
    out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert trials.test_acc.between(0, 1).all()
    assert trials[trials.method == "teacher"].shape[0] == 1  # shared, trained once
    for seed in (0, 1):
        t = trials[trials.seed == seed]
        methods = t.sort_values(["stage", "bits"], ascending=[True, False]).method.tolist()
        assert methods == (STAGES if seed == 0 else STAGES[1:])
        assert sorted(t[t.method == "ptq"].bits) == [4, 8]
    table = (out / "table.md").read_text()
    assert "| method | bits | test acc % | params | MACs | size (bytes)" in table
    assert "Machine:" in table and "compression ×" in table
    assert (out / "accuracy_vs_size.png").stat().st_size > 10_000


def test_sizes_shrink_along_the_pipeline(smoke):
    _, trials = smoke
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
        assert int8.saved_bytes < ft.saved_bytes and int8.latency_ms > 0
        assert qat4.compression > ptq8.compression > ft.compression > kd.compression > 1
        assert (t[t.method.isin(["ptq", "qat"])].latency_ms.isna()).all()


def test_every_trial_is_reused_on_rerun(smoke, tmp_path):
    """A second invocation on the same runs trains nothing: same accuracies, instantly."""
    out, trials = smoke
    base = out.parents[2]
    proc = run_experiment("compression_pipeline", "--scale", "smoke", base=base)
    again = pd.read_csv(out / "trials.csv")
    assert again.test_acc.tolist() == trials.test_acc.tolist()
    assert "s1-qat4" in proc.stdout


@pytest.mark.parametrize("args, msg", [
    (("--model", "nope"), "model: unknown 'nope'"),
    (("--scale", "x"), "scale: unknown 'x'"),
    (("--criterion", "biggest"), "prune.criterion: unknown 'biggest'"),
    (("--ratio", "1.0"), "prune.ratio: must be in (0, 1), got 1.0"),
    (("--calibration", "best"), "calibration: unknown 'best'"),
    (("--model", "conv2"), "surgery: unsupported model type"),
])
def test_bad_input_fails_in_one_line(tmp_path, args, msg):
    assert_rejected("compression_pipeline", args, msg, tmp_path)


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import execute

    out, _ = smoke
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))  # <root>/compression_pipeline/smoke
    nb = execute("compression_pipeline", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "teacher test accuracy" in text and "compression" in text
