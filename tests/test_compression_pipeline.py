"""Smoke run of experiments.compression_pipeline: one row per stage, sizes shrink, each stage's
change against the one it starts from, reuse; its claims on hand-made tables; the committed
default hashes (bad input: test_bad_input.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import ROOT, assert_report, assert_reused, smoke_fixture
from experiments.claims import evaluate
from experiments.compression_pipeline.claims import CLAIMS
from lib.models.mobilenet import mobilenet_params

COLUMNS = ["method", "bits", "act_bits", "seed", "test_acc", "size_bytes", "params", "macs",
           "latency_ms", "compression", "saved_bytes", "delta_parent", "delta_student"]
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
        quantized = t[t.method.isin(["ptq", "qat"])]
        assert sorted(zip(quantized.method, quantized.bits, quantized.act_bits)) == [
            ("ptq", 4, 8), ("ptq", 8, 8), ("qat", 4, 8)]  # W4A8: 8-bit activations
    # 2 seeds x 8 + teacher
    table = assert_report(out, "compression_pipeline", 17, "accuracy_vs_size.png")
    assert ("| stage | starts from | test acc % | Δ vs start (points) | Δ vs student (points) "
            "| params | MACs | size (bytes)") in table
    assert "| ptq W4A8 | pruned+kd |" in table and "compression ×" in table
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims.id) == [c.id for c in CLAIMS] and claims.verdict.notna().all()


@pytest.mark.smoke
def test_each_stage_is_compared_with_the_one_it_starts_from(smoke):
    """Δ vs start is the per-seed difference with the parent stage (paired), in points."""
    _, _, trials = smoke
    acc = trials.set_index(["method", "bits", "seed"]).test_acc
    parents = {"student": None, "kd": "student", "pruned": "kd", "pruned+kd": "pruned",
               "ptq": "pruned+kd", "qat": "pruned+kd", "int8": "pruned+kd"}
    for r in trials[trials.method != "teacher"].itertuples():
        parent = parents[r.method]
        if parent is None:
            assert pd.isna(r.delta_parent) and pd.isna(r.delta_student)
            continue
        assert r.delta_parent == pytest.approx(100 * (r.test_acc - acc[parent, 32, r.seed]))
        assert r.delta_student == pytest.approx(100 * (r.test_acc - acc["student", 32, r.seed]))


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
        assert ptq8.size_bytes < ft.size_bytes / 3  # folded weights at 8 bits, biases at 32
        # int8 beside the float model it comes from: the weight tensors are 4x smaller exactly
        assert int8.float_weight_bytes == 4 * int8.weight_bytes
        assert int8.float_saved_bytes == ft.saved_bytes > int8.saved_bytes
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
    assert len(rows) == 1 + 8 * cfg.seeds and set(rows.method) == set(STAGES)
    for r in rows.itertuples():
        trial = (cfg.teacher if r.method == "teacher" else
                 stage_trials(cfg, int(r.seed))[r.method, int(r.bits), int(r.act_bits)])
        assert config_hash(trial) == r.run, r


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("compression_pipeline", smoke.out, monkeypatch)
    assert "teacher test accuracy" in text and "compression" in text


# ---- claims on hand-made tables ---------------------------------------------------------------

def stage_table(acc: dict, noise: float = 0.002, saved=(4000, 1000), latency=(6.0, 2.5),
                weights=(2000, 500)) -> pd.DataFrame:
    """Three seeds per stage; `acc` maps (method, bits, act_bits) to the mean test accuracy (the
    seeds at mean − noise, mean, mean + noise); float stages are (method, 32, 32). The int8 rows
    carry both sides of the size and speed claims: (float, int8) saved bytes, latency, weight
    bytes. MACs and the size estimate: kd 1000 / 400 bytes, pruned+kd 600 / 240, quantized 60."""
    rows = [dict(method="teacher", bits=32, act_bits=32, seed=0, test_acc=0.93)]
    for seed, e in enumerate((-noise, 0.0, noise)):
        for (method, bits, act_bits), a in acc.items():
            row = dict(method=method, bits=bits, act_bits=act_bits, seed=seed, test_acc=a + e,
                       model="net", macs=1000 if method in ("student", "kd") else 600,
                       size_bytes=400 if method in ("student", "kd") else 240 if bits == 32 else 60)
            if method == "int8":
                row.update(float_saved_bytes=saved[0], saved_bytes=saved[1],
                           float_latency_ms=latency[0] * (1 + e), latency_ms=latency[1],
                           float_weight_bytes=weights[0], weight_bytes=weights[1])
            rows.append(row)
    return pd.DataFrame(rows)


GOOD = {("student", 32, 32): 0.900, ("kd", 32, 32): 0.905, ("pruned", 32, 32): 0.50,
        ("pruned+kd", 32, 32): 0.906, ("ptq", 8, 8): 0.902, ("ptq", 4, 8): 0.85,
        ("qat", 4, 8): 0.901, ("int8", 8, 8): 0.901}


def verdicts(t: pd.DataFrame) -> dict[str, str]:
    table = evaluate(CLAIMS, t)
    return dict(zip(table.id, table.verdict))


def test_claims_hold_on_a_good_pipeline():
    t = stage_table(GOOD)
    assert set(verdicts(t).values()) == {"reproduced"}
    evidence = evaluate(CLAIMS, t).set_index("id").evidence
    assert "pruning removed 40% of the MACs" in evidence["pruning_without_loss"]
    assert "int8 end: 6.7× smaller than the student" in evidence["small_and_good"]


def test_claims_partly_hold_or_fail_where_the_table_says_so():
    bad = {**GOOD, ("kd", 32, 32): 0.895, ("pruned+kd", 32, 32): 0.85, ("ptq", 8, 8): 0.84,
           ("int8", 8, 8): 0.80, ("qat", 4, 8): 0.84, ("ptq", 4, 8): 0.70}
    v = verdicts(stage_table(bad, saved=(4000, 1300), latency=(6.0, 1.5)))
    assert v["kd_beats_student"] == "not reproduced"
    assert v["pruning_without_loss"] == "not reproduced"  # 5.5 points under kd
    assert v["ptq8_within_2pct"] == "partly"  # W8A8 within 2 points of pruned+kd, int8 not
    assert v["four_bit_weights_need_qat"] == "reproduced"  # above PTQ, within 10 of pruned+kd
    assert v["int8_4x_smaller"] == "partly"  # weights 4x, but the file only 3.1x smaller
    assert v["int8_2x_faster"] == "reproduced"  # 4x
    assert v["small_and_good"] == "not reproduced"  # 10 and 6 points under the student
    v = verdicts(stage_table({**GOOD, ("int8", 8, 8): 0.89}))  # int8 end 1 point under
    assert v["small_and_good"] == "partly"


def test_claims_tolerances_are_the_papers():
    """A 1.9-point PTQ loss passes the whitepaper's 2%, 2.1 does not; QAT 9.9 points under its
    start passes its 10%, 10.1 does not."""
    base = {**GOOD, ("pruned+kd", 32, 32): 0.900}
    v = verdicts(stage_table({**base, ("ptq", 8, 8): 0.881, ("int8", 8, 8): 0.879}))
    assert v["ptq8_within_2pct"] == "partly"
    v = verdicts(stage_table({**base, ("qat", 4, 8): 0.801, ("ptq", 4, 8): 0.70}))
    assert v["four_bit_weights_need_qat"] == "reproduced"
    v = verdicts(stage_table({**base, ("qat", 4, 8): 0.799, ("ptq", 4, 8): 0.70}))
    assert v["four_bit_weights_need_qat"] == "partly"


def test_claims_untested_without_their_stages():
    v = verdicts(stage_table({("student", 32, 32): 0.9, ("kd", 32, 32): 0.91}))
    assert v["kd_beats_student"] == "reproduced"
    assert {k for k, x in v.items() if x == "not tested at this scale"} == set(v) - {
        "kd_beats_student"}
