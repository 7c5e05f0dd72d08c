"""Smoke run of experiments.lottery_ablation: every study, its outputs, errors, the notebook."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cli import run_experiment
from notebooks import execute
from wandb_records import offline_runs


def run_cli(*args, base: Path, check=True):
    return run_experiment("lottery_ablation", *args, base=base, check=check)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("la")
    run_cli("--scale", "smoke", base=base)
    return base


def test_smoke_covers_every_study(smoke):
    out = smoke / "results" / "lottery_ablation" / "smoke"
    t = pd.read_csv(out / "trials.csv")
    assert {"study", "criterion", "ablation", "seed", "weights_left", "trained", "test_acc"} <= set(t.columns)
    assert set(t.study) == {"dense", "criteria", "mask1", "mask0", "supermask"}
    assert t.test_acc.between(0, 1).all()
    crit = t[t.study == "criteria"]
    assert len(crit) == 2 * 11 and crit.weights_left.round(4).eq(0.2107).all()
    assert len(t[t.study == "mask1"]) == 2 * 7 and len(t[t.study == "mask0"]) == 2 * 3
    untrained = t[(t.study == "supermask") & ~t.trained]
    assert len(untrained) == 2 * 11 * 2 and (untrained.early_stop_iter == 0).all()
    learned = t[t.criterion == "learned"]
    assert sorted(learned.mask_eval.unique()) == ["sampled", "threshold"] and len(learned) == 2 * 2 * 2
    # training helps: the retrained large_final ticket beats the same mask untrained
    trained_lf = crit[crit.criterion == "large_final"].test_acc.mean()
    untrained_lf = untrained[(untrained.criterion == "large_final") & (untrained.ablation == "init")].test_acc.mean()
    assert trained_lf > untrained_lf
    for f in ("table.md", "overlap.csv", "sign_flips.csv", "criteria.png", "mask1.png", "mask0.png", "supermask.png"):
        assert (out / f).exists(), f
    ov = pd.read_csv(out / "overlap.csv")
    same = ov[ov.criterion_a == ov.criterion_b]
    assert (same.jaccard == 1).all() and ov.jaccard.between(0, 1).all()
    lf_sm = ov[(ov.criterion_a == "large_final") & (ov.criterion_b == "small_final")]
    assert (lf_sm.jaccard == 0).all()  # complementary masks at 21% kept


def test_trials_are_wandb_runs_with_study_stages(smoke):
    runs = offline_runs(smoke)
    assert {r["run"].run_group for r in runs} == {"lottery_ablation"}
    assert {r["run"].job_type for r in runs} == {"train", "prune", "evaluate", "supermask"}
    hashes = {r["config"]["config_hash"] for r in runs}
    t = pd.read_csv(smoke / "results" / "lottery_ablation" / "smoke" / "trials.csv")
    assert set(t.run) == hashes  # shared trials (large_final/rewind/zero) ran once


@pytest.mark.parametrize("args,field", [
    (["--criteria", "large_final,biggest"], "criteria"), (["--ablations", "flip"], "ablations"),
    (["--mask0", "one"], "mask0"), (["--studies", "all"], "studies"), (["--levels", "0"], "levels"),
    (["--mode", "twoshot"], "mode"), (["--levels", "a,b"], "levels"),
])
def test_unknown_names_are_one_line_errors(args, field, tmp_path):
    res = run_cli(*args, base=tmp_path, check=False)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {field}: ")
    assert res.stderr.strip().count("\n") == 0
    if "unknown" in res.stderr:
        assert "choose from" in res.stderr
    assert not (tmp_path / "runs").exists()


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    monkeypatch.setenv("LAB_RESULTS_DIR", str(smoke / "results"))
    nb = execute("lottery_ablation", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "best criterion" in text and "dense test accuracy" in text


def test_iterative_mode_chains_levels(tmp_path):
    """Iterative (paper) mode: level 2 prunes from level 1's retrained weights of the same chain."""
    import json

    import torch

    run_cli("--scale", "smoke", "--seeds", "1", "--mode", "iterative", "--levels", "1,2",
            "--criteria", "large_final,random", "--ablations", "rewind,signed_constant",
            "--mask0", "zero", "--studies", "criteria,mask1", base=tmp_path)
    t = pd.read_csv(tmp_path / "results" / "lottery_ablation" / "smoke" / "trials.csv")
    assert set(t.study) == {"dense", "criteria", "mask1"} and (t["mode"] == "iterative").all()
    assert t[t.level == 2].weights_left.round(4).unique().tolist() == [0.6406]
    runs = tmp_path / "runs" / "smoke" / "lottery_ablation"
    by = {}
    for p in runs.glob("*/config.json"):
        c = json.loads(p.read_text())
        by[(c["criterion"], c["ablation"], c["level"])] = p.parent
    for chain in (("large_final", "rewind"), ("large_final", "signed_constant")):
        f1 = torch.load(by[(*chain, 1)] / "final.pt", weights_only=True)
        f2 = torch.load(by[(*chain, 2)] / "final.pt", weights_only=True)
        alive2 = f2["net.1.weight"] != 0
        alive1 = f1["net.1.weight"] != 0
        assert not torch.any(alive2 & ~alive1)  # nothing pruned at level 1 comes back
        # level 2 keeps the largest level-1 survivors of this chain's own retrained weights
        w = f1["net.1.weight"]
        assert w[alive2].abs().min() >= w[alive1 & ~alive2].abs().max()
