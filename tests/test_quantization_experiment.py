"""Smoke run of experiments.quantization: columns, accuracies, int8 size, bad input."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import run_experiment

COLUMNS = ["method", "bits", "scope", "granularity", "calibration", "seed", "test_acc",
           "size_bytes", "latency_ms"]
METHODS = {"float", "ptq", "qat", "int8", "fixed_point", "float16", "bfloat16"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("quant")
    run_experiment("quantization", "--scale", "smoke", base=base)
    out = base / "results" / "quantization" / "smoke"
    return out, pd.read_csv(out / "trials.csv")


def test_columns_methods_and_accuracies(smoke):
    out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.method) == METHODS
    assert trials.test_acc.between(0, 1).all()
    assert set(trials.seed) == {0, 1}
    # per seed: float, 5 bits x 6 PTQ variants, 2 QAT, int8, 6 fixed point, 2 float casts
    assert (trials.groupby("seed").size() == 1 + 30 + 2 + 1 + 6 + 2).all()
    table = (out / "table.md").read_text()
    assert "| method | bits | scope | granularity | calibration | test acc %" in table
    assert "Machine:" in table
    for png in ("accuracy_vs_bits.png", "precision.png"):
        assert (out / png).stat().st_size > 10_000


def test_8bit_ptq_close_to_float(smoke):
    _, trials = smoke
    for seed, t in trials.groupby("seed"):
        ref = t[t.method == "float"].test_acc.item()
        ptq8 = t[(t.method == "ptq") & (t.bits == 8)]
        assert len(ptq8) == 6 and (ptq8.test_acc - ref).abs().max() <= 0.02, seed


def test_int8_smaller_and_measured(smoke):
    _, trials = smoke
    int8 = trials[trials.method == "int8"]
    assert len(int8) == 2
    assert (int8.size_bytes < 0.3 * int8.float_size_bytes).all()
    assert (int8.latency_ms > 0).all() and (int8.float_latency_ms > 0).all()
    ptq4 = trials[(trials.method == "ptq") & (trials.bits == 4)]
    assert (ptq4.size_bytes < trials[trials.method == "float"].size_bytes.min() / 7).all()


@pytest.mark.parametrize("args, msg", [(("--model", "nope"), "model: unknown 'nope'"),
                                       (("--scale", "x"), "scale: unknown 'x'")])
def test_bad_names_fail_in_one_line(tmp_path, args, msg):
    proc = run_experiment("quantization", "--scale", "smoke", *args, base=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {proc.stderr.strip()[7:]}"]
    assert msg in proc.stderr
    assert not (tmp_path / "results").exists()


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import execute

    out, _ = smoke
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))  # <root>/quantization/smoke
    nb = execute("quantization", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "float test accuracy" in text and "variants within 2 points of float" in text
