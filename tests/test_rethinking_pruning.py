"""Smoke run of experiments.rethinking_pruning: rows, shrunk sizes, budgets, masks, reuse, bad input."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from cli import assert_rejected, run_experiment

COLUMNS = ["method", "prune_ratio", "seed", "params", "macs", "test_acc", "variant", "lr", "epochs",
           "budget", "run"]
VARIANTS = {"baseline", "pruned", "finetune", "scratch_e", "scratch_b", "ticket_init", "random_init"}
PRUNED = ["pruned", "finetune", "scratch_e", "scratch_b", "ticket_init", "random_init"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("rethink")
    run_experiment("rethinking_pruning", "--scale", "smoke", base=base)
    out = base / "results" / "rethinking_pruning" / "smoke"
    return base, out, pd.read_csv(out / "trials.csv")


def test_columns_variants_and_files(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.variant) == VARIANTS
    assert set(trials.method) == {"unpruned", "l1", "slimming", "unstructured"}
    assert set(trials.seed) == {0, 1} and trials.test_acc.between(0, 1).all()
    # per seed: 3 large models (lr 0.1, lr 0.01, slimming), 3 methods x 4 variants, and
    # 2 methods x 2 lrs x (ticket, random)
    assert (trials.groupby("seed").size() == 3 + 12 + 8).all()
    lottery = trials[trials.variant.isin(["ticket_init", "random_init"])]
    assert set(lottery.method) == {"l1", "unstructured"} and set(lottery.lr) == {0.01, 0.1}
    table = (out / "table.md").read_text()
    for heading in ("## Fine-tuned vs trained from scratch", "## Winning-ticket init vs random init",
                    "| method | prune ratio | params | MACs | baseline | pruned | fine-tuned | Scratch-E",
                    "Machine:"):
        assert heading in table
    for png in ("finetune_vs_scratch.png", "ticket_vs_random.png"):
        assert (out / png).stat().st_size > 10_000


def _vgg_params(widths, num_classes=10, in_channels=1) -> int:
    """conv 3x3 (no bias) + BN (γ, β) per layer, then the classifier: the formula, by hand."""
    total, c = 0, in_channels
    for w in (v for v in widths if v != "M"):
        total += c * w * 9 + 2 * w
        c = w
    return total + c * num_classes + num_classes


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


def test_finished_trials_are_reused(smoke, tmp_path):
    base, _, trials = smoke
    shutil.copytree(base / "runs", tmp_path / "runs")
    before = sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_dir())
    run_experiment("rethinking_pruning", "--scale", "smoke", "--seeds", "1", base=tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_dir()) == before
    again = pd.read_csv(tmp_path / "results" / "rethinking_pruning" / "smoke" / "trials.csv")
    first = trials[trials.seed == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(again[["variant", "method", "lr", "run", "test_acc", "params"]],
                                  first[["variant", "method", "lr", "run", "test_acc", "params"]])


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


@pytest.mark.parametrize("args, msg", [
    (("--model", "nope"), "model: unknown 'nope'"),
    (("--model", "conv2"), "model: 'conv2' is not supported by channel surgery"),
    (("--model", "lenet_300_100"), "model: 'lenet_300_100' has no BatchNorm"),
    (("--l1-ratios", "1.0"), "l1_ratios: each must be in (0, 1), got 1.0"),
    (("--l1-ratios", "0.97"), "l1_ratios: ratio: pruning 0.97 of layer 'features.0' (16 channels) leaves none"),
    (("--slimming-ratios", "0.99"), "slimming_ratios: ratio: 0.99 prunes 174 of 176 channels"),
    (("--lottery-lrs", "x"), "lottery_lrs: expected comma-separated numbers"),
])
def test_bad_input_fails_in_one_line(tmp_path, args, msg):
    assert_rejected("rethinking_pruning", args, msg, tmp_path)


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import execute

    _, out, _ = smoke
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))
    nb = execute("rethinking_pruning", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "scratch vs fine-tuned" in text and "ticket vs random" in text
