"""Smoke run of experiments.lottery_ablation: every study, its outputs, the notebook."""
from __future__ import annotations

import pandas as pd
import pytest

from cli import ROOT, assert_report, assert_reused, smoke_fixture, smoke_run
from notebooks import smoke_output_text
from wandb_records import offline_runs


smoke = smoke_fixture("lottery_ablation", wandb=True)  # its tests read the offline wandb records


@pytest.mark.smoke
def test_smoke_covers_every_study(smoke):
    out, t = smoke.out, smoke.trials
    assert {"study", "criterion", "ablation", "seed", "weights_left", "trained", "test_acc"} <= set(t.columns)
    assert set(t.study) == {"dense", "criteria", "mask1", "mask0", "supermask"}
    crit = t[t.study == "criteria"]
    assert len(crit) == 2 * 11 and crit.weights_left.round(4).eq(0.2107).all()
    assert len(t[t.study == "mask1"]) == 2 * 7 and len(t[t.study == "mask0"]) == 2 * 3
    untrained = t[(t.study == "supermask") & ~t.trained]
    assert len(untrained) == 2 * 11 * 2 and (untrained.early_stop_iter == 0).all()
    learned = t[t.criterion == "learned"]
    assert sorted(learned.mask_eval.unique()) == ["sampled", "threshold"] and len(learned) == 2 * 2 * 2
    retrained = t[t.study.isin(["dense", "criteria", "mask1", "mask0"])]
    assert retrained.test_acc.min() > 0.5  # far above chance (0.1) after 60 steps
    # training helps: the retrained large_final ticket beats the same mask untrained
    trained_lf = crit[crit.criterion == "large_final"].test_acc.mean()
    untrained_lf = untrained[(untrained.criterion == "large_final") & (untrained.ablation == "init")].test_acc.mean()
    assert trained_lf > untrained_lf
    for f in ("table.md", "overlap.csv", "sign_flips.csv", "criteria.png", "mask1.png", "mask0.png", "supermask.png"):
        assert (out / f).exists(), f
    table = assert_report(out, "lottery_ablation", 88)
    assert "Trials: 88; summed training time" in table and "(96 table rows)" in table


@pytest.mark.smoke
def test_summary_pivots_the_same_numbers(smoke):
    """summary.md (what the README includes) holds each study's mean test accuracy per level,
    the same numbers as trials.csv."""
    text, t = (smoke.out / "summary.md").read_text(), smoke.trials
    for title in ("Mask criteria", "Mask-1 actions", "Mask-0 actions", "Supermasks", "Learned"):
        assert f"**{title}" in text, title
    lf = t[(t.study == "criteria") & (t.criterion == "large_final")].test_acc
    row = next(ln for ln in text.splitlines() if ln.startswith("| large_final |"))
    assert f"{100 * lf.mean():.2f} ± {100 * lf.std():.2f}" in row
    left = t[t.study == "criteria"].weights_left.mean()
    assert f"{left:.1%} left" in text


@pytest.mark.smoke
def test_reported_accuracy_is_the_selected_evaluation(smoke):
    """A trained row's test_acc is its curve's at the early-stop point (minimum validation loss;
    maximum validation accuracy for a learned supermask's thresholded mask), and so are a
    retrained row's train_loss and val_loss (how well it fits, beside how well it generalises)."""
    t = smoke.trials
    rows = t[t.trained & (t.mask_eval != "sampled")]
    assert len(rows) == 2 * (1 + 11 + 7 + 3 + 2)  # per seed: dense, studies, learned (threshold)
    for r in rows.itertuples():
        curve = pd.read_csv(smoke.base / "runs" / "smoke" / "lottery_ablation" / r.run / "metrics.csv")
        best = curve.loc[curve.val_acc.idxmax() if r.criterion == "learned" else curve.val_loss.idxmin()]
        assert (best.step, best.test_acc) == (r.early_stop_iter, r.test_acc), r.run
        if r.criterion != "learned":
            assert (r.train_loss, r.val_loss) == pytest.approx((best.train_loss, best.val_loss)), r.run
            assert r.train_loss > 0


@pytest.mark.smoke
def test_mask_overlaps(smoke):
    ov = pd.read_csv(smoke.out / "overlap.csv")
    same = ov[ov.criterion_a == ov.criterion_b]
    assert (same.jaccard == 1).all()
    pair = ov[ov.criterion_a == "large_final"].set_index(["seed", "criterion_b"])
    assert (pair.xs("small_final", level=1).jaccard == 0).all()  # complementary masks at 21% kept
    # a random mask of density d meets any other of density d in d^2: Jaccard d / (2 - d)
    rand = pair.xs("random", level=1)
    assert ((rand.jaccard - rand.weights_left / (2 - rand.weights_left)).abs() < 0.01).all()


@pytest.mark.smoke
def test_trials_are_wandb_runs_with_study_stages(smoke):
    runs = offline_runs(smoke.base)
    assert {r["run"].run_group for r in runs} == {"lottery_ablation"}
    assert {r["run"].job_type for r in runs} == {"train", "prune", "evaluate", "supermask"}
    hashes = {r["config"]["config_hash"] for r in runs}
    assert set(smoke.trials.run) == hashes  # shared trials (large_final/rewind/zero) ran once


@pytest.mark.smoke
def test_rerun_reuses_finished_trials(smoke):
    table = smoke.out / "table.md"
    before = table.read_text()
    assert_reused("lottery_ablation", smoke.base)
    assert table.read_text() == before  # the footer still names the invocation that trained


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    text = smoke_output_text("lottery_ablation", smoke.out, monkeypatch)
    assert "best criterion" in text and "dense test accuracy" in text


@pytest.mark.smoke
def test_iterative_mode_chains_levels(tmp_path_factory):
    """Iterative (paper) mode: level 2 prunes from level 1's retrained weights of the same chain."""
    import json

    import torch

    run = smoke_run(tmp_path_factory, "lottery_ablation", "--seeds", "1", "--mode", "iterative",
                    "--levels", "1,2", "--criteria", "large_final,random",
                    "--ablations", "rewind,signed_constant", "--mask0", "zero",
                    "--studies", "criteria,mask1")
    t = run.trials
    assert set(t.study) == {"dense", "criteria", "mask1"} and (t["mode"] == "iterative").all()
    assert t[t.level == 2].weights_left.round(4).unique().tolist() == [0.6406]
    runs = run.base / "runs" / "smoke" / "lottery_ablation"
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


def test_committed_default_hashes():
    """Every committed default trial keeps its run folder: its Trial, rebuilt from the default
    preset and the row's fields, hashes to the row's `run` (dense, criteria, mask-1, mask-0,
    untrained and learned supermasks alike)."""
    from experiments.lottery_ablation.config import Trial, for_scale
    from lib.runs import config_hash

    setup = for_scale("default").setup
    rows = pd.read_csv(ROOT / "results" / "lottery_ablation" / "default" / "trials.csv")
    assert set(rows.study) == {"dense", "criteria", "mask1", "mask0", "supermask"}
    for r in rows.itertuples():
        seed, level = int(r.seed), int(r.level)
        trial = (Trial(setup, seed) if r.study == "dense" else
                 Trial(setup, seed, r.criterion, r.ablation, r.mask0, level, bool(r.trained)))
        assert config_hash(trial) == r.run, r


# ---- claims on hand-made tables ---------------------------------------------------------------

def ablation_table(acc: dict[tuple, float], levels=(7, 15), noise=0.001) -> pd.DataFrame:
    """Trials of every study at `levels`, 3 seeds; accuracy `acc[(study, name)]` (default 0.85)."""
    from lib.prune.ablations import MASK0, MASK1
    from lib.prune.criteria import CRITERIA

    rows = []
    for seed, e in enumerate((-noise, 0.0, noise)):
        for lv in levels:
            base = dict(seed=seed, level=lv, weights_left=0.8 ** lv, mask_eval="")
            arms = [("criteria", dict(criterion=c, ablation="rewind", mask0="zero")) for c in CRITERIA]
            arms += [("mask1", dict(criterion="large_final", ablation=a, mask0="zero")) for a in MASK1]
            arms += [("mask0", dict(criterion="large_final", ablation="rewind", mask0=m)) for m in MASK0]
            for study, key in arms:
                name = key["criterion"] if study == "criteria" else key["ablation"] if study == "mask1" else key["mask0"]
                rows.append({**base, **key, "study": study, "trained": True,
                             "test_acc": acc.get((study, name), 0.85) + e})
            for c in CRITERIA:
                for values in ("init", "signed_constant"):
                    rows.append({**base, "study": "supermask", "trained": False, "criterion": c,
                                 "ablation": values, "mask0": "zero",
                                 "test_acc": acc.get(("supermask", c), 0.3) + e})
        for w in ("init", "signed_constant"):
            for mode in ("threshold", "sampled"):
                rows.append(dict(seed=seed, level=0, weights_left=0.5, study="supermask", trained=True,
                                 criterion="learned", ablation=w, mask0="zero", mask_eval=mode,
                                 test_acc=acc.get(("learned", w), 0.8) + e))
    return pd.DataFrame(rows)


def ablation_verdicts(t: pd.DataFrame) -> dict[str, str]:
    from experiments.claims import evaluate
    from experiments.lottery_ablation.claims import CLAIMS

    return dict(zip(*evaluate(CLAIMS, t)[["id", "verdict"]].T.values))


PAPER = {("criteria", "large_final"): 0.88, ("criteria", "magnitude_increase"): 0.88,
         ("criteria", "random"): 0.84, ("criteria", "small_final"): 0.83,
         ("criteria", "small_init"): 0.83, ("criteria", "small_init_small_final"): 0.83,
         ("mask1", "rewind"): 0.88, ("mask1", "signed_constant"): 0.88,
         ("mask1", "signed_reinit"): 0.88, ("mask1", "signed_reshuffle"): 0.88,
         ("mask1", "random_reinit"): 0.86, ("mask1", "random_reshuffle"): 0.86,
         ("mask1", "random_signed_constant"): 0.86, ("mask0", "zero"): 0.88,
         ("mask0", "freeze_init"): 0.86, ("mask0", "freeze_init_zero_mask"): 0.88,
         ("supermask", "large_final_same_sign"): 0.7, ("supermask", "large_final"): 0.5}


def test_ablation_claims_reproduced_on_a_table_shaped_like_the_paper():
    assert set(ablation_verdicts(ablation_table(PAPER)).values()) == {"reproduced"}


def test_ablation_claims_fail_where_the_table_contradicts_them():
    worse = {**PAPER, ("criteria", "movement"): 0.90,  # a criterion above large_final
             ("mask1", "signed_constant"): 0.84,  # signs alone no longer enough
             ("mask0", "freeze_init"): 0.88,  # freezing at init costs nothing
             ("supermask", "large_final_same_sign"): 0.09,  # at chance
             ("learned", "init"): 0.4, ("learned", "signed_constant"): 0.4}
    v = ablation_verdicts(ablation_table(worse))
    assert v["best_criteria"] == "partly" and v["signs_suffice"] == "partly"
    assert v["zeros_matter"] == "not reproduced" and v["supermasks_above_chance"] == "not reproduced"
    assert v["same_sign_helps"] == "not reproduced" and v["learned_beats_pruned"] == "not reproduced"
    assert v["random_signs_fail"] == "reproduced" and v["zero_mask_recovers"] == "reproduced"
    no_supermasks = ablation_table(PAPER).query("study != 'supermask'")
    assert ablation_verdicts(no_supermasks)["learned_beats_pruned"] == "not tested at this scale"
