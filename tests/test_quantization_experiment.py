"""Smoke run of experiments.quantization: columns, both models, BN folding, QAT's control, int8
size and speed, reuse, the notebook; its claims on hand-made tables; the committed default
hashes (bad input: test_bad_input.py)."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import ROOT, assert_report, assert_reused, smoke_fixture

COLUMNS = ["model", "method", "bits", "act_bits", "granularity", "calibration", "seed",
           "test_acc", "size_bytes", "latency_ms", "fold_bn"]
METHODS = {"float", "float_ft", "ptq", "qat", "int8", "fixed_point", "float16", "bfloat16"}
MODELS = {"lenet_300_100", "mobilenet_tiny"}
# per model and seed at smoke scale: float, its control, 2 bits x 6 PTQ variants + W4A8,
# 3 QAT, int8, 2 fixed point, 2 float casts
PER_SEED = 1 + 1 + 2 * 6 + 1 + 3 + 1 + 2 + 2


smoke = smoke_fixture("quantization")


@pytest.mark.smoke
def test_columns_methods_and_accuracies(smoke):
    base, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.method) == METHODS and set(trials.model) == MODELS
    assert (trials.groupby(["model", "seed"]).size() == PER_SEED).all()
    floats = trials[trials.method == "float"]
    assert (floats[floats.model == "lenet_300_100"].test_acc > 0.5).all()  # far above chance
    for r in floats.itertuples():  # the float row reports its final weights, the curve's last row
        curve = pd.read_csv(base / "runs" / "smoke" / "quantization" / r.run / "metrics.csv")
        assert curve.test_acc.iloc[-1] == r.test_acc
    table = assert_report(out, "quantization", 4 * PER_SEED, "accuracy_vs_bits.png",
                          "precision.png")
    assert "| model | method | bits | act bits | granularity | calibration | test acc %" in table
    claims = (out / "claims.md").read_text()
    assert claims.count("| **") == 6 and "Krishnamoorthi 2018" in claims


@pytest.mark.smoke
def test_bn_is_folded_before_fake_quantization(smoke):
    """The conv model's quantized copies start from its folded weights (same function: the
    float16 copy of the folded weights keeps the float accuracy); the MLP has nothing to fold."""
    _, _, trials = smoke
    conv = trials[trials.model == "mobilenet_tiny"]
    assert conv[conv.method.isin(["ptq", "qat", "float_ft", "float16"])].fold_bn.all()
    assert not trials[trials.model == "lenet_300_100"].fold_bn.any()
    for seed, t in conv.groupby("seed"):
        ref = t[t.method == "float"].test_acc.item()
        assert abs(t[t.method == "float16"].test_acc.item() - ref) <= 0.01, seed


@pytest.mark.smoke
def test_8bit_ptq_close_to_float(smoke):
    _, _, trials = smoke
    mlp = trials[trials.model == "lenet_300_100"]
    for seed, t in mlp.groupby("seed"):
        ref = t[t.method == "float"].test_acc.item()
        ptq8 = t[(t.method == "ptq") & (t.bits == 8)]
        assert len(ptq8) == 6 and (ptq8.test_acc - ref).abs().max() <= 0.02, seed


@pytest.mark.smoke
def test_qat_has_a_float_control_trained_alike(smoke):
    """QAT and float_ft start from the same folded weights and train the same steps."""
    _, _, trials = smoke
    for (model, seed), t in trials.groupby(["model", "seed"]):
        qat, ctrl = t[t.method == "qat"], t[t.method == "float_ft"]
        assert len(qat) == 3 and len(ctrl) == 1
        assert set(qat.final_step) == {ctrl.final_step.item()} and ctrl.final_step.item() > 0
        assert set(zip(qat.bits, qat.act_bits)) == {(8, 8), (4, 8), (4, 4)}
        ptq = t[(t.method == "ptq") & (t.bits == 4)]
        assert {(8, "mse"), (4, "mse"), (0, "")} <= set(zip(ptq.act_bits,
                                                              ptq.calibration.fillna("")))


@pytest.mark.smoke
def test_int8_smaller_accurate_and_measured_once(smoke):
    _, _, trials = smoke
    for model, t in trials.groupby("model"):
        int8, floats = (t[t.method == m].set_index("seed") for m in ("int8", "float"))
        assert len(int8) == 2
        assert (int8.size_bytes < int8.float_size_bytes).all()
        assert (int8.float_weight_bytes == 4 * int8.weight_bytes).all()
        # the float row's latency is the one measured beside the int8 model, not a second run
        assert (floats.latency_ms == int8.float_latency_ms).all()
    mlp = trials[trials.model == "lenet_300_100"]
    int8, floats = (mlp[mlp.method == m].set_index("seed") for m in ("int8", "float"))
    assert (int8.size_bytes < 0.3 * int8.float_size_bytes).all()
    assert ((int8.test_acc - floats.test_acc).abs() <= 0.02).all()


@pytest.mark.smoke
def test_rerun_reuses_finished_trials(smoke):
    base, out, _ = smoke
    table = (out / "table.md").read_text()
    assert_reused("quantization", base)
    # still names the invocation that trained (latencies of int8 are read back, not re-measured)
    assert (out / "table.md").read_text() == table


@pytest.mark.smoke
def test_qat_bits_chooses_the_qat_arms_and_none_skips_them(smoke, tmp_path):
    """--qat-bits w4a8 keeps that QAT arm and its control; none keeps PTQ alone and leaves the
    QAT claims untested. Both reuse the finished trials (nothing trained)."""
    from experiments.claims import evaluate
    from experiments.quantization.claims import CLAIMS

    base, _, trials = smoke
    for arg, qat in (("w4a8", {(4, 8)}), ("none", set())):
        out = tmp_path / arg
        assert_reused("quantization", base, "--qat-bits", arg, "--out", str(out))
        t = pd.read_csv(out / "trials.csv")
        assert set(zip(t[t.method == "qat"].bits, t[t.method == "qat"].act_bits)) == qat
        assert (t.method == "float_ft").sum() == (2 * 2 if qat else 0)  # 2 models x 2 seeds
        assert len(t[t.method == "ptq"]) == len(trials[trials.method == "ptq"])
    v = dict(zip(*evaluate(CLAIMS, t)[["id", "verdict"]].T.values))
    assert v["qat8_within_1pct"] == v["four_bit_weights_need_qat"] == "not tested at this scale"
    assert v["per_channel_beats_per_tensor"] != "not tested at this scale"


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("quantization", smoke.out, monkeypatch)
    assert "float test accuracy" in text and "within 2 points of float" in text


# ---- claims on hand-made tables ---------------------------------------------------------------

def arms(acc: dict, noise: float = 0.002, int8: dict | None = None,
         models=("mlp", "cnn")) -> pd.DataFrame:
    """Three seeds per arm and model; `acc` maps an arm key to its mean test accuracy, the
    seeds at mean − noise, mean, mean + noise. Keys: 'float', 'float_ft', ('ptq', bits,
    act_bits, granularity, calibration), ('qat', bits, act_bits). `int8`: its row's extra
    columns (sizes, latencies), each a list of three values."""
    rows = []
    for model in models:
        for seed, e in enumerate((-noise, 0.0, noise)):
            for key, a in acc.items():
                key = (key,) if isinstance(key, str) else key
                method, rest = key[0], dict(zip(("bits", "act_bits", "granularity",
                                                 "calibration"), key[1:]))
                rows.append(dict(model=model, seed=seed, method=method, test_acc=a + e,
                                 **{"bits": 0, "act_bits": 0, "granularity": "",
                                    "calibration": "", **rest}))
            if int8 is not None:
                rows.append(dict(model=model, seed=seed, method="int8", bits=8, act_bits=8,
                                 granularity="per_channel", calibration="histogram",
                                 test_acc=0.88 + e, **{k: v[seed] for k, v in int8.items()}))
    return pd.DataFrame(rows)


SIZES = dict(float_weight_bytes=[4000] * 3, weight_bytes=[1000] * 3,
             float_size_bytes=[4200] * 3, size_bytes=[1050] * 3,
             float_latency_ms=[5.0, 5.2, 4.8], latency_ms=[2.0, 2.0, 2.0])
PAPER = {"float": 0.88, "float_ft": 0.885, ("ptq", 8, 8, "per_channel", "minmax"): 0.878,
         ("ptq", 4, 0, "per_channel"): 0.85, ("ptq", 4, 0, "per_tensor"): 0.80,
         ("ptq", 2, 0, "per_channel"): 0.50, ("ptq", 2, 0, "per_tensor"): 0.10,
         ("ptq", 4, 8, "per_channel", "mse"): 0.80, ("qat", 4, 8): 0.86, ("qat", 8, 8): 0.882}


def verdicts(t: pd.DataFrame) -> dict[str, str]:
    from experiments.claims import evaluate
    from experiments.quantization.claims import CLAIMS

    return dict(zip(*evaluate(CLAIMS, t)[["id", "verdict"]].T.values))


def test_claims_as_the_paper_states_them():
    t = arms(PAPER, int8=SIZES)
    t.loc[t.method == "int8", "test_acc"] = 0.875
    assert set(verdicts(t).values()) == {"reproduced"}


def test_claims_partly_hold_when_one_part_fails():
    acc = {**PAPER, ("ptq", 2, 0, "per_channel"): 0.10,  # per-channel no better at 2 bits
           ("ptq", 4, 8, "per_channel", "mse"): 0.86}  # PTQ as good as QAT at W4A8
    v = verdicts(arms(acc, int8={**SIZES, "size_bytes": [1105] * 3}))  # 3.8x on disk
    assert v["per_channel_beats_per_tensor"] == "partly"
    assert v["four_bit_weights_need_qat"] == "partly"  # within 10 points, but not above PTQ
    assert v["int8_4x_smaller"] == "partly"  # the weights are 4x smaller, the file is not
    mixed = pd.concat([arms(PAPER, models=("mlp",)),
                       arms({**PAPER, ("ptq", 8, 8, "per_channel", "minmax"): 0.80,
                             ("qat", 8, 8): 0.86}, models=("cnn",))])
    v = verdicts(mixed)  # the cnn loses 8 points at W8A8 PTQ and 2.5 with 8-bit QAT
    assert v["ptq8_within_2pct"] == "partly" and v["qat8_within_1pct"] == "partly"


def test_claims_not_reproduced_when_no_part_holds():
    acc = {**PAPER, ("ptq", 8, 8, "per_channel", "minmax"): 0.80,
           ("ptq", 4, 0, "per_channel"): 0.80, ("ptq", 2, 0, "per_channel"): 0.10,
           ("ptq", 4, 8, "per_channel", "mse"): 0.80, ("qat", 4, 8): 0.70, ("qat", 8, 8): 0.86}
    slow = {**SIZES, "size_bytes": [2000] * 3, "weight_bytes": [2000] * 3,
            "latency_ms": [4.0, 4.1, 3.9]}
    t = arms(acc, int8=slow)
    t.loc[t.method == "int8", "test_acc"] = 0.80
    assert set(verdicts(t).values()) == {"not reproduced"}


def test_claims_untested_without_their_trials():
    v = verdicts(arms({"float": 0.88}))
    assert set(v.values()) == {"not tested at this scale"}


def test_committed_default_hashes():
    """Every committed default trial keeps its run folder: its Trial, rebuilt from the default
    preset and the row's fields, hashes to the row's `run` (every method, both models)."""
    from experiments.quantization.__main__ import EXPERIMENT
    from experiments.quantization.config import Trial, for_scale
    from lib.runs import config_hash

    cfg = for_scale("default")
    assert EXPERIMENT.parse(["--scale", "default"])[0] == cfg
    setups = {s.model: (s, ft) for s, ft in cfg.models()}
    rows = pd.read_csv(ROOT / "results" / "quantization" / "default" / "trials.csv")
    rows[["granularity", "calibration"]] = rows[["granularity", "calibration"]].fillna("")
    rows["act_bits"] = rows.act_bits.fillna(0)  # the float rows have none
    assert set(rows.method) == METHODS and set(rows.model) == MODELS
    for r in rows.itertuples():
        setup, ft = setups[r.model]
        seed, bits, act_bits = int(r.seed), int(r.bits), int(r.act_bits)
        if r.method == "float":
            trial = Trial(setup, seed)
        else:
            trial = Trial(setup, seed, r.method, 0 if r.method == "float_ft" else bits,
                          act_bits, r.granularity, r.calibration,
                          cfg.calib_size if act_bits else 0,
                          ft if r.method in ("qat", "float_ft") else None,
                          bool(r.fold_bn) and r.method != "int8")
        assert config_hash(trial) == r.run, r
