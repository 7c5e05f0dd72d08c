"""Smoke run of experiments.rethinking_pruning: rows, shrunk sizes, budgets, masks, reuse; the
ticket init; and the committed default trials' hashes."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from cli import ROOT, assert_report, assert_reused, smoke_fixture

COLUMNS = ["method", "prune_ratio", "seed", "params", "macs", "test_acc", "variant", "lr", "epochs",
           "budget", "run"]
VARIANTS = {"baseline", "pruned", "finetune", "scratch_e", "scratch_b", "ticket_init", "random_init"}
PRUNED = ["pruned", "finetune", "scratch_e", "scratch_b", "ticket_init", "random_init"]


smoke = smoke_fixture("rethinking_pruning")


@pytest.mark.smoke
def test_columns_variants_and_files(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.variant) == VARIANTS
    assert set(trials.method) == {"unpruned", "l1", "slimming", "unstructured"}
    assert set(trials.seed) == {0, 1}
    # per seed: 3 large models (lr 0.1, lr 0.01, slimming), 3 methods x 4 variants, and
    # 2 methods x 2 lrs x (ticket, random)
    assert (trials.groupby("seed").size() == 3 + 12 + 8).all()
    lottery = trials[trials.variant.isin(["ticket_init", "random_init"])]
    assert set(lottery.method) == {"l1", "unstructured"} and set(lottery.lr) == {0.01, 0.1}
    table = assert_report(out, "rethinking_pruning", 42,
                          "finetune_vs_scratch.png", "ticket_vs_random.png")
    for heading in ("## Fine-tuned vs trained from scratch", "## Winning-ticket init vs random init",
                    "| method | prune ratio | params | MACs | baseline | pruned | fine-tuned | Scratch-E"):
        assert heading in table
    # 46 rows, 42 runs: at lr 0.1, random init is the Scratch-E run (l1 and unstructured)
    assert trials.run.nunique() == len(trials) - 2 * 2
    assert f"Trials: {len(trials) - 4}; summed training time" in table


@pytest.mark.smoke
def test_accuracies_are_those_of_the_logged_curves(smoke):
    """test_acc is the last evaluation of the trial's metrics.csv, early_stop_test_acc the one at
    minimum validation loss; a pruned net without retraining is evaluated once. (No accuracy
    bound: 12 smoke steps leave every model near chance.)"""
    base, _, trials = smoke
    for t in trials.itertuples():
        curve = pd.read_csv(base / "runs" / "smoke" / "rethinking_pruning" / t.run / "metrics.csv")
        assert curve.test_acc.iloc[-1] == t.test_acc
        assert curve.loc[curve.val_loss.idxmin()].test_acc == t.early_stop_test_acc
        assert len(curve) == 1 if t.variant == "pruned" else len(curve) > 1


def _vgg_params(widths, num_classes=10, in_channels=1) -> int:
    """conv 3x3 (no bias) + BN (γ, β) per layer, then the classifier: the formula, by hand."""
    total, c = 0, in_channels
    for w in (v for v in widths if v != "M"):
        total += c * w * 9 + 2 * w
        c = w
    return total + c * num_classes + num_classes


@pytest.mark.smoke
def test_l1_pruned_net_is_physically_smaller(smoke):
    from lib.models.vgg import CONFIGS

    _, _, trials = smoke
    full = _vgg_params(CONFIGS["vgg_narrow"])
    half = _vgg_params([v if v == "M" else v - round(0.5 * v) for v in CONFIGS["vgg_narrow"]])
    base = trials[trials.method == "unpruned"]
    assert (base.params == full).all()
    l1 = trials[trials.method == "l1"]
    assert (l1.params == half).all() and (l1.macs < base.macs.min() / 3).all()
    slim = trials[trials.method == "slimming"]
    assert (slim[slim.variant != "baseline"].params < full / 2).all()
    for _, t in slim[slim.variant != "baseline"].groupby("seed"):  # one architecture per seed
        assert t.params.nunique() == 1 and t.macs.nunique() == 1


@pytest.mark.smoke
def test_unstructured_masks_hold_through_training(smoke):
    """Non-zero parameters measured after training = the mask's count: MaskHook kept zeros."""
    from lib import models
    from lib.prune.mask import prunable_layers

    _, _, trials = smoke
    m = models.build("vgg_narrow", (1, 28, 28), 10)
    params = dict(m.named_parameters())
    pruned = sum(round(0.8 * params[n].numel()) for n in prunable_layers(m))
    total = sum(p.numel() for p in m.parameters())
    un = trials[trials.method == "unstructured"]
    assert set(un.variant) == set(PRUNED)
    assert (un.params == total - pruned).all()
    assert (un.macs == trials[trials.method == "unpruned"].macs.max()).all()  # dense shape
    assert un.budget.round(6).eq(round(total / (total - pruned), 6)).all()


@pytest.mark.smoke
def test_scratch_b_budget_and_shared_runs(smoke):
    _, _, trials = smoke
    for (method, seed), t in trials[trials.method != "unpruned"].groupby(["method", "seed"]):
        v = t.set_index(["variant", "lr"])
        e, b = v.loc[("scratch_e", 0.1)], v.loc[("scratch_b", 0.1)]
        if method != "unstructured":  # MACs ratio of the large model over the pruned one
            large = trials[(trials.variant == "baseline") & (trials.seed == seed) & (trials.lr == 0.1)]
            assert b.budget == pytest.approx(large.macs.iloc[0] / b.macs)
        factor = min(b.budget, 2.0)
        assert b.epochs / e.epochs == pytest.approx(factor, abs=0.05)
        assert b.epochs > e.epochs > v.loc[("finetune", 0.001)].epochs
        if method in ("l1", "unstructured"):
            # at the large model's lr, random init *is* Scratch-E; the ticket is another run
            assert v.loc[("random_init", 0.1)].run == e.run
            assert v.loc[("ticket_init", 0.1)].run != e.run
            assert v.loc[("ticket_init", 0.01)].run != v.loc[("random_init", 0.01)].run
    assert trials[trials.variant == "baseline"].run.nunique() == 3 * 2


@pytest.mark.smoke
def test_finished_trials_are_reused(smoke, tmp_path):
    """A rerun with fewer seeds (on a copy: the others keep the full results) trains nothing, and
    its table still names the invocation that trained the trials."""
    base, _, trials = smoke
    shutil.copytree(base, tmp_path / "copy")
    assert_reused("rethinking_pruning", tmp_path / "copy", "--seeds", "1")
    out = tmp_path / "copy" / "results" / "rethinking_pruning" / "smoke"
    again = pd.read_csv(out / "trials.csv")
    first = trials[trials.seed == 0].reset_index(drop=True)
    cols = ["variant", "method", "lr", "run", "test_acc", "params"]
    pd.testing.assert_frame_equal(again[cols], first[cols])
    assert "Produced by 1 invocation that trained 42 trials" in (out / "table.md").read_text()


def test_ticket_init_is_the_original_init_restricted():
    """The structured ticket: the large model's initial filters at the kept indices."""
    from experiments.rethinking_pruning.pruning import prune_model
    from lib import models

    def fresh(s=0):
        torch.manual_seed(s)
        return models.build("vgg_narrow", (1, 28, 28), 10)

    init, final = fresh(), fresh(7)  # "final" stands for trained weights
    pr = prune_model("l1", 0.5, final, init, fresh, seed=0, input_shape=(1, 28, 28))
    ticket, rand, trained = pr.ticket(), pr.random(), pr.trained()
    first = final.features[0].weight.detach().flatten(1).abs().sum(1)
    keep = torch.argsort(first, descending=True, stable=True)[:8].sort().values
    assert torch.equal(ticket.features[0].weight, init.features[0].weight[keep])
    assert torch.equal(trained.features[0].weight, final.features[0].weight[keep])
    assert rand.features[0].weight.shape == ticket.features[0].weight.shape
    assert not torch.equal(rand.features[0].weight, ticket.features[0].weight)
    un = prune_model("unstructured", 0.8, final, init, fresh, seed=0, input_shape=(1, 28, 28))
    t, f = un.ticket().features[0].weight, final.features[0].weight
    kept = t != 0
    assert torch.equal(t[kept], init.features[0].weight[kept])
    assert kept.sum() == 144 - round(0.8 * 144)
    assert (f.abs()[kept].min() >= f.abs()[~kept].max())  # the largest final magnitudes are kept


def committed_trial(row, cfg):
    """The Trial of a committed trials.csv row, rebuilt from the preset as run_seed builds it."""
    from experiments.rethinking_pruning.config import Trial, scaled

    s, lr0 = cfg.setup, cfg.setup.train.lr
    lr = row.lr if row.variant in ("baseline", "ticket_init", "random_init") else lr0
    large = Trial(s, int(row.seed), base_lr=0.0 if lr == lr0 else lr,
                  base_lam=cfg.lam if row.method == "slimming" else 0.0)
    if row.variant == "baseline":
        return large
    retrain = {"pruned": None, "finetune": cfg.finetune, "scratch_e": s.train,
               "scratch_b": scaled(s.train, min(row.budget, cfg.scratch_b_cap))}
    start = {"pruned": "trained", "finetune": "trained", "ticket_init": "ticket"}
    return replace(large, method=row.method, prune_ratio=row.prune_ratio,
                   min_keep=cfg.min_keep if row.method == "slimming" else 1,
                   start=start.get(row.variant, "random"),
                   retrain=retrain.get(row.variant, replace(s.train, lr=lr)))


def test_committed_default_hashes():
    """The default preset still names the committed trials' run folders (no behaviour change):
    every row of results/rethinking_pruning/default/trials.csv, all seven variants."""
    from experiments.rethinking_pruning.config import for_scale
    from lib.runs import config_hash

    cfg = for_scale("default")
    rows = pd.read_csv(ROOT / "results" / "rethinking_pruning" / "default" / "trials.csv")
    assert set(rows.variant) == VARIANTS
    for r in rows.itertuples():
        assert config_hash(committed_trial(r, cfg)) == r.run, r


def test_paper_scale_defaults_to_vgg16_on_cifar10():
    from experiments.rethinking_pruning.__main__ import EXPERIMENT

    cfg, scale, _ = EXPERIMENT.parse(["--scale", "paper", "--device", "cpu"])
    assert (scale, cfg.setup.model, cfg.setup.dataset) == ("paper", "vgg16", "cifar10")


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("rethinking_pruning", smoke.out, monkeypatch)
    assert "scratch vs fine-tuned" in text and "ticket vs random" in text
