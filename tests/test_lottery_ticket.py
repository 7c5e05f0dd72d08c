"""Smoke runs of experiments.lottery_ticket: outputs, wandb records, resume after a kill."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from cli import ROOT, assert_report, assert_reused, lab_env, run_experiment, smoke_fixture, smoke_run
from notebooks import smoke_output_text
from wandb_records import offline_runs

NUMBERS = ["seed", "level", "variant", "weights_left", "early_stop_iter", "test_acc",
           "final_test_acc", "val_acc"]


smoke = smoke_fixture("lottery_ticket", wandb=True)  # its tests read the offline wandb records


@pytest.mark.smoke
def test_smoke_outputs(smoke):
    _, out, trials = smoke
    assert set(NUMBERS) <= set(trials.columns) and {"train.lr", "prune.rate_fc", "model"} <= set(trials.columns)
    # 2 seeds x (dense + 3 levels x {ticket, reinit})
    assert len(trials) == 2 * (1 + 3 * 2)
    assert trials.test_acc.min() > 0.5  # far above chance (0.1) on Fashion-MNIST after 120 steps
    # test accuracy is the one at the selected (best-validation) evaluation of its curve
    for t in trials.itertuples():
        curve = pd.read_csv(smoke.base / "runs" / "smoke" / "lottery_ticket" / t.run / "metrics.csv")
        best = curve.loc[curve.val_loss.idxmin()]
        assert (best.step, best.test_acc) == (t.early_stop_iter, t.test_acc)
    left = trials.groupby("level").weights_left.agg(["min", "max"])
    assert (left["min"] == left["max"]).all()  # ticket and reinit share the mask's sparsity
    assert left["min"].round(4).tolist() == [1.0, 0.8004, 0.6406, 0.5128]
    table = assert_report(out, "lottery_ticket", 14,
                          "test_acc.png", "early_stop.png", "learning_curves.png")
    assert "| level | variant | weights left %" in table
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves.step) == {0, 40, 80, 120}


@pytest.mark.smoke
def test_every_trial_is_an_offline_wandb_run(smoke):
    runs = offline_runs(smoke.base)
    assert len(runs) == 14
    assert {r["run"].run_group for r in runs} == {"lottery_ticket"}
    assert {r["run"].job_type for r in runs} == {"train", "prune"}
    assert all(list(r["run"].tags) == ["smoke"] for r in runs)
    trials = smoke.trials
    by_hash = {r["config"]["config_hash"]: r for r in runs}
    assert set(by_hash) == set(trials.run)
    for t in trials.itertuples():
        rec = by_hash[t.run]
        assert rec["summary"]["test_acc"] == pytest.approx(t.test_acc)
        assert rec["config"]["seed"] == t.seed and rec["config"]["variant"] == t.variant
        assert len(rec["history"]) == 4


@pytest.mark.smoke
def test_rerun_reuses_finished_trials(smoke):
    table = (smoke.out / "table.md").read_text()
    assert_reused("lottery_ticket", smoke.base)
    # the footer still names the invocation that trained the trials, not the report-only rerun
    assert (smoke.out / "table.md").read_text() == table


@pytest.mark.smoke
def test_killed_run_finishes_with_the_same_numbers(smoke, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "experiments.lottery_ticket", "--scale", "smoke"],
                            cwd=ROOT, env=lab_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs" / "smoke" / "lottery_ticket"
    deadline = time.time() + 120
    # kill in the middle of a trial: some trials done, one with a checkpoint but no done marker
    while time.time() < deadline and proc.poll() is None:
        if len(list(runs.glob("*/done"))) >= 3 and any(
                not (c.parent / "done").exists() for c in runs.glob("*/checkpoint.pt")):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "results" / "lottery_ticket" / "smoke" / "trials.csv").exists()
    run_experiment("lottery_ticket", "--scale", "smoke", base=tmp_path)
    ref = pd.read_csv(smoke.out / "trials.csv")[NUMBERS]
    got = pd.read_csv(tmp_path / "results" / "lottery_ticket" / "smoke" / "trials.csv")[NUMBERS]
    pd.testing.assert_frame_equal(ref, got)


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    text = smoke_output_text("lottery_ticket", smoke.out, monkeypatch)
    assert "14 trials" in text and "dense test accuracy" in text


@pytest.mark.smoke
def test_late_rewinding_and_random_mask_control(tmp_path_factory):
    """--rewind-step k: level-1 tickets start from the weights after k steps of the dense run;
    random_mask keeps exactly the ticket's per-layer sparsity."""
    import torch

    run = smoke_run(tmp_path_factory, "lottery_ticket", "--seeds", "1", "--levels", "1",
                    "--rewind-step", "40", "--variants", "ticket,reinit,random_mask")
    runs = run.base / "runs" / "smoke" / "lottery_ticket"
    configs = {p.parent: __import__("json").loads(p.read_text()) for p in runs.glob("*/config.json")}
    by = {(c["level"], c["variant"]): d for d, c in configs.items()}
    dense_curve = pd.read_csv(by[(0, "ticket")] / "metrics.csv")
    rewind = torch.load(by[(0, "ticket")] / "rewind.pt", weights_only=True)
    init_acc = dense_curve.loc[dense_curve.step == 0, "test_acc"].item()
    assert dense_curve.loc[dense_curve.step == 40, "test_acc"].item() > init_acc  # k steps trained
    masks = {v: torch.load(by[(1, v)] / "mask.pt", weights_only=True) for v in ("ticket", "random_mask")}
    for name, m in masks["ticket"].items():
        assert m.sum() == masks["random_mask"][name].sum()  # same per-layer sparsity
        assert not torch.equal(m, masks["random_mask"][name])
    # the ticket keeps the largest of the dense run's final weights
    final = torch.load(by[(0, "ticket")] / "final.pt", weights_only=True)
    m = masks["ticket"]["net.1.weight"]
    assert final["net.1.weight"][m].abs().min() >= final["net.1.weight"][~m].abs().max()
    assert not torch.equal(rewind["net.1.weight"], final["net.1.weight"])
    trials = run.trials
    assert sorted(trials.variant.unique()) == ["random_mask", "reinit", "ticket"]
    assert (trials.rewind_step == 40).all()


def test_paper_presets():
    from experiments.lottery_ticket.config import for_scale

    lenet = for_scale("paper")
    assert (lenet.setup.dataset, lenet.setup.train.lr, lenet.setup.train.batch_size,
            lenet.setup.train.iterations) == ("mnist", 1.2e-3, 60, 50_000)
    conv6 = for_scale("paper", "conv6")
    assert (conv6.setup.dataset, conv6.setup.train.lr, conv6.setup.prune.rate_conv) == ("cifar10", 3e-4, 0.15)


@pytest.mark.smoke
def test_packed_grid_equals_trials_run_alone(tmp_path_factory):
    """--pack 0 (every level's trials as one stacked model) and --pack 1 (each alone): the same
    trials (hashes) with the same numbers, to a test image or two."""
    args = ("--seeds", "2", "--levels", "1", "--iterations", "40", "--eval-every", "20")
    packed = smoke_run(tmp_path_factory, "lottery_ticket", *args).trials
    alone = smoke_run(tmp_path_factory, "lottery_ticket", *args, "--pack", "1").trials
    key = ["seed", "level", "variant"]
    packed, alone = packed.sort_values(key).reset_index(), alone.sort_values(key).reset_index()
    assert packed.run.tolist() == alone.run.tolist() and len(packed) == 6
    assert (packed.pack_size > 1).all() and "pack_size" not in alone
    assert (packed.test_acc - alone.test_acc).abs().max() <= 0.003  # 3 of 1,000 test images
    assert (packed.weights_left == alone.weights_left).all()


# ---- claims on hand-made tables ---------------------------------------------------------------

def table(ticket: dict[int, float], reinit: dict[int, float], stop: dict[tuple[str, int], int],
          noise: float = 0.001) -> pd.DataFrame:
    """Three seeds per (level, variant): accuracy = the given mean ± noise, same early stop."""
    left = {0: 1.0, 3: 0.5128, 7: 0.2107, 15: 0.0358}
    rows = []
    for seed, e in enumerate((-noise, 0.0, noise)):
        for lv, acc in ticket.items():
            rows.append(dict(seed=seed, level=lv, variant="ticket", test_acc=acc + e,
                             early_stop_iter=stop[("ticket", lv)], weights_left=left[lv]))
        for lv, acc in reinit.items():
            rows.append(dict(seed=seed, level=lv, variant="reinit", test_acc=acc - e,
                             early_stop_iter=stop[("reinit", lv)], weights_left=left[lv]))
    return pd.DataFrame(rows)


def verdicts(t: pd.DataFrame) -> dict[str, str]:
    from experiments.claims import evaluate
    from experiments.lottery_ticket.claims import CLAIMS

    return dict(zip(*evaluate(CLAIMS, t)[["id", "verdict"]].T.values))


def test_claims_of_the_paper_as_it_states_them():
    stop = {("ticket", 0): 9000, ("ticket", 3): 4000, ("ticket", 7): 3000, ("ticket", 15): 6000,
            ("reinit", 3): 7000, ("reinit", 7): 8000, ("reinit", 15): 11000}
    paper = table({0: 0.880, 3: 0.885, 7: 0.890, 15: 0.880}, {3: 0.884, 7: 0.880, 15: 0.860}, stop)
    assert verdicts(paper) == {"tickets_beat_dense": "reproduced", "tickets_learn_faster": "reproduced",
                               "ticket_at_3.6_back_to_dense": "reproduced",
                               "reinit_falls_behind": "reproduced", "reinit_learns_slower": "reproduced",
                               "sparsity_schedule": "reproduced"}


def test_claims_fail_or_partly_hold_when_the_table_says_so():
    stop = {("ticket", 0): 9000, ("ticket", 3): 9500, ("ticket", 7): 3000, ("ticket", 15): 6000,
            ("reinit", 3): 10000, ("reinit", 7): 2000, ("reinit", 15): 1000}
    # the ticket at 51% is worse than dense, at 3.6% far above it; reinit equals the ticket at 21%
    t = table({0: 0.880, 3: 0.870, 7: 0.890, 15: 0.900}, {3: 0.860, 7: 0.890, 15: 0.860}, stop)
    v = verdicts(t)
    assert v["tickets_beat_dense"] == "partly" and v["tickets_learn_faster"] == "partly"
    assert v["ticket_at_3.6_back_to_dense"] == "partly"  # not below dense, but above it
    assert v["reinit_falls_behind"] == "partly" and v["reinit_learns_slower"] == "partly"
    t.loc[t.level == 7, "weights_left"] = 0.25  # a schedule that is not the paper's
    assert verdicts(t)["sparsity_schedule"] == "partly"
    assert verdicts(t[t.level < 15])["ticket_at_3.6_back_to_dense"] == "not tested at this scale"
