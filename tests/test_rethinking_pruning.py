"""Smoke run of experiments.rethinking_pruning: rows, shrunk sizes, budgets, masks, reuse; the
ticket init; and the committed default trials' hashes."""
from __future__ import annotations

import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from cli import ROOT, assert_report, assert_reused, smoke_fixture, smoke_run

COLUMNS = ["method", "prune_ratio", "seed", "params", "macs", "test_acc", "variant", "lr", "epochs",
           "budget", "run"]
VARIANTS = {"baseline", "baseline_long", "pruned", "finetune", "scratch_e", "scratch_b",
            "ticket_init", "random_init"}
PRUNED = ["pruned", "finetune", "scratch_e", "scratch_b", "ticket_init", "random_init"]


smoke = smoke_fixture("rethinking_pruning")


@pytest.mark.smoke
def test_columns_variants_and_files(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.variant) == VARIANTS
    assert set(trials.method) == {"unpruned", "l1", "slimming", "unstructured"}
    assert set(trials.seed) == {0, 1}
    # per seed: 3 large models (lr 0.1, lr 0.01, slimming), the lr-0.1 one trained for
    # Scratch-B's budget, 3 methods x 4 variants, and 2 methods x 2 lrs x (ticket, random)
    assert (trials.groupby("seed").size() == 3 + 1 + 12 + 8).all()
    lottery = trials[trials.variant.isin(["ticket_init", "random_init"])]
    assert set(lottery.method) == {"l1", "unstructured"} and set(lottery.lr) == {0.01, 0.1}
    table = assert_report(out, "rethinking_pruning", 46,
                          "finetune_vs_scratch.png", "ticket_vs_random.png")
    for heading in ("## Fine-tuned vs trained from scratch", "## Winning-ticket init vs random init",
                    "| method | prune ratio | params | MACs | baseline | pruned | fine-tuned | Scratch-E"):
        assert heading in table
    # 48 rows, 46 runs: at lr 0.1, the unstructured random init is the Scratch-E run
    assert trials.run.nunique() == len(trials) - 2
    assert f"Trials: {len(trials) - 2}; summed training time" in table
    assert (out / "claims.md").exists() and (out / "claims.csv").exists()


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
        if method == "unstructured":  # a mask: random init *is* Scratch-E's start
            assert v.loc[("random_init", 0.1)].run == e.run
        if method == "l1":  # Scratch-E starts from the smaller architecture's own init
            assert v.loc[("random_init", 0.1)].run != e.run
            # the random init has the ticket's per-layer scale; Scratch-E's is larger
            tick, rand = v.loc[("ticket_init", 0.1)].init_std, v.loc[("random_init", 0.1)].init_std
            assert rand == pytest.approx(tick, rel=0.1) and e.init_std > 1.25 * rand
        if method in ("l1", "unstructured"):
            assert v.loc[("ticket_init", 0.1)].run != e.run
            assert v.loc[("ticket_init", 0.01)].run != v.loc[("random_init", 0.01)].run
    assert trials[trials.variant == "baseline"].run.nunique() == 3 * 2
    long = trials[trials.variant == "baseline_long"].set_index("seed")
    large = trials[(trials.variant == "baseline") & (trials.method == "unpruned")
                   & (trials.lr == 0.1)].set_index("seed")
    assert (long.epochs == 2 * large.epochs).all() and len(long) == 2


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
    assert "Produced by 1 invocation that trained 46 trials" in (out / "table.md").read_text()


@pytest.mark.smoke
def test_lottery_only_run_reuses_its_trials_and_has_no_scratch_section(smoke, tmp_path):
    """`--methods none` (the lottery follow-ups) trains nothing new here and its table has the
    ticket-vs-random section but no empty fine-tuned-vs-scratch table."""
    base, _, _ = smoke
    out = tmp_path / "lottery"
    assert_reused("rethinking_pruning", base, "--methods", "none", "--out", str(out))
    table = (out / "table.md").read_text()
    assert "## Winning-ticket init vs random init" in table
    assert "## Fine-tuned vs trained from scratch" not in table and "|  |" not in table
    again = pd.read_csv(out / "trials.csv")
    assert {"ticket_init", "random_init"} <= set(again.variant)
    assert not set(again.variant) & {"finetune", "scratch_e", "scratch_b", "pruned"}


@pytest.mark.smoke
def test_packed_trials_equal_trials_run_alone(smoke, tmp_path_factory):
    """The smoke grid trains packed by default (--pack 0): each recipe's trials of one shape, of
    both seeds, as one stacked model. Seed 0's l1 arms, long baseline and unstructured inits at
    lr 0.1, each trained alone (--pack 1), are the same trials (hashes) with the same curves, to
    float tolerance."""
    alone = smoke_run(tmp_path_factory, "rethinking_pruning", "--pack", "1", "--seeds", "1",
                      "--methods", "l1", "--lottery-methods", "unstructured",
                      "--lottery-lrs", "0.1")
    key = ["seed", "method", "variant", "lr"]
    both = alone.trials.merge(smoke.trials, on=key, suffixes=("_alone", "_packed"))
    assert len(both) == len(alone.trials) == 8 and set(both.seed) == {0}
    assert (both.run_alone == both.run_packed).all()
    assert (alone.trials.pack_size == 1).all()
    trained = both[both.variant != "pruned"]
    # packs of the seeds' trials: Scratch-E, Scratch-B, fine-tuned, large, ticket / random...
    assert (trained.pack_size_packed >= 2).all(), trained[["variant", "pack_size_packed"]]
    # ...and the long baseline shares its recipe and shape with unstructured Scratch-B (a mask)
    assert (smoke.trials[smoke.trials.variant == "baseline_long"].pack_size == 4).all()
    # 12-24 steps at lr 0.1 with momentum, in NHWC convs that sum in another order when packed:
    # the loss curves agree to ~1% (1.2% measured), and a few predictions of barely trained
    # models (15% accuracy, near-tied logits) flip: 6 of 1,000 measured, 11 since the packed
    # linear layers multiply feature-major (another summation order again)
    assert (both.test_acc_alone - both.test_acc_packed).abs().max() <= 0.02
    for run in trained.run_alone:
        a, p = (pd.read_csv(b / "runs" / "smoke" / "rethinking_pruning" / run / "metrics.csv")
                for b in (alone.base, smoke.base))
        assert a.step.tolist() == p.step.tolist()
        for col in ("val_loss", "test_loss"):
            assert ((a[col] - p[col]).abs() / a[col]).max() <= 0.03, (run, col)


def test_ticket_init_is_the_original_init_restricted():
    """The structured ticket: the large model's initial filters at the kept indices."""
    from experiments.rethinking_pruning.pruning import RANDOM_INIT_SEED, prune_model
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
    # the random init: another init of the large model, cut the same way (the ticket's scale)
    other = fresh(RANDOM_INIT_SEED)
    assert torch.equal(rand.features[0].weight, other.features[0].weight[keep])
    assert not torch.equal(rand.features[0].weight, ticket.features[0].weight)
    # Scratch-E's start: the half-width VGG's own Kaiming fan-out init, √2 larger per conv
    scratch = pr.start("scratch")
    for a, b in zip(scratch.modules(), rand.modules()):
        if isinstance(a, torch.nn.Conv2d):
            assert a.weight.shape == b.weight.shape
            assert (a.weight.std() / b.weight.std()).item() == pytest.approx(2 ** 0.5, rel=0.2)
    un = prune_model("unstructured", 0.8, final, init, fresh, seed=0, input_shape=(1, 28, 28))
    t, f = un.ticket().features[0].weight, final.features[0].weight
    kept = t != 0
    assert torch.equal(t[kept], init.features[0].weight[kept])
    assert kept.sum() == 144 - round(0.8 * 144)
    assert (f.abs()[kept].min() >= f.abs()[~kept].max())  # the largest final magnitudes are kept


def committed_trial(row, cfg):
    """The Trial of a committed trials.csv row, rebuilt from the preset as SeedGrid builds it."""
    from experiments.rethinking_pruning.config import Trial, scaled

    s, lr0 = cfg.setup, cfg.setup.train.lr
    lr = row.lr if row.variant in ("baseline", "ticket_init", "random_init") else lr0
    large = Trial(s, int(row.seed), base_lr=0.0 if lr == lr0 else lr,
                  base_lam=cfg.lam if row.method == "slimming" else 0.0)
    if row.variant == "baseline":
        return large
    if row.variant == "baseline_long":
        return replace(large, retrain=scaled(s.train, cfg.scratch_b_cap))
    retrain = {"pruned": None, "finetune": cfg.finetune, "scratch_e": s.train,
               "scratch_b": scaled(s.train, min(row.budget, cfg.scratch_b_cap))}
    scratch = "random" if row.method == "unstructured" else "scratch"
    start = {"pruned": "trained", "finetune": "trained", "ticket_init": "ticket",
             "random_init": "random", "scratch_e": scratch, "scratch_b": scratch}
    return replace(large, method=row.method, prune_ratio=row.prune_ratio,
                   min_keep=cfg.min_keep if row.method == "slimming" else 1,
                   start=start[row.variant], retrain=retrain.get(row.variant, replace(s.train, lr=lr)))


def test_committed_default_hashes():
    """The default preset still names the committed trials' run folders (no behaviour change):
    every row of results/rethinking_pruning/default/trials.csv (the default runs l1 only for
    fine-tuned vs scratch, so it has no slimming rows)."""
    from experiments.rethinking_pruning.config import for_scale
    from lib.runs import config_hash

    cfg = for_scale("default")
    rows = pd.read_csv(ROOT / "results" / "rethinking_pruning" / "default" / "trials.csv")
    assert set(rows.variant) == VARIANTS and cfg.long_baseline  # with its convergence control
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


# ---- the paper's claims (experiments/rethinking_pruning/claims.py) on hand-made tables

NOISE = (0.000, 0.002, -0.002)  # per-seed wobble: differences vary, so the se is not zero


def claims_table(acc: dict) -> pd.DataFrame:
    """Rows of 3 seeds from {(method, variant, lr): accuracy}; ratios l1 0.5, unstructured 0.8."""
    rows = []
    for (method, variant, lr), a in acc.items():
        ratio = {"l1": 0.5, "unstructured": 0.8, "slimming": 0.5}.get(method, 0.0)
        for seed, e in enumerate(NOISE):
            rows.append({"seed": seed, "method": method, "prune_ratio": ratio, "variant": variant,
                         "lr": lr, "test_acc": a + e * (1 + (variant == "finetune"))})
    return pd.DataFrame(rows)


def verdicts(trials: pd.DataFrame) -> dict:
    from experiments.claims import evaluate
    from experiments.rethinking_pruning.claims import CLAIMS

    return dict(zip(*evaluate(CLAIMS, trials)[["id", "verdict"]].T.values))


PAPER = {("unpruned", "baseline", 0.1): 0.91, ("unpruned", "baseline", 0.01): 0.88,
         ("l1", "finetune", 0.001): 0.89, ("l1", "scratch_e", 0.1): 0.895,
         ("l1", "scratch_b", 0.1): 0.90,
         ("l1", "ticket_init", 0.1): 0.895, ("l1", "random_init", 0.1): 0.896,
         ("l1", "ticket_init", 0.01): 0.87, ("l1", "random_init", 0.01): 0.872,
         ("unstructured", "finetune", 0.001): 0.90, ("unstructured", "scratch_b", 0.1): 0.905,
         ("unstructured", "ticket_init", 0.1): 0.90, ("unstructured", "random_init", 0.1): 0.901,
         ("unstructured", "ticket_init", 0.01): 0.88, ("unstructured", "random_init", 0.01): 0.86}


def test_claims_of_the_paper_as_it_states_them():
    v = verdicts(claims_table(PAPER))
    assert v == {"l1_scratch_e_matches_finetune": "reproduced",
                 "l1_scratch_b_matches_finetune": "reproduced",
                 "slimming_scratch_b_matches_finetune": "not tested at this scale",
                 "unstructured_scratch_b_matches_finetune": "reproduced",
                 "ticket_no_gain_structured": "reproduced",
                 "ticket_helps_unstructured_small_lr_only": "reproduced",
                 "small_lr_is_worse": "reproduced"}


def test_claims_fail_or_partly_hold_when_the_table_says_so():
    # fine-tuning well ahead of scratch; the structured ticket ahead at lr 0.01 only; the
    # unstructured ticket ahead at both lrs; lr 0.01 as good as 0.1 for the large model
    t = claims_table({**PAPER, ("l1", "finetune", 0.001): 0.92,
                      ("l1", "ticket_init", 0.01): 0.90,
                      ("unstructured", "ticket_init", 0.1): 0.93,
                      ("unpruned", "baseline", 0.01): 0.91})
    v = verdicts(t)
    assert v["l1_scratch_e_matches_finetune"] == v["l1_scratch_b_matches_finetune"] == "not reproduced"
    assert v["ticket_no_gain_structured"] == "partly"  # no gain at 0.1, a gain at 0.01
    assert v["ticket_helps_unstructured_small_lr_only"] == "partly"  # helps at 0.1 too
    # the large model: lr 0.01 = 0.1 (not worse); the arms: random at 0.1 beats ticket at 0.01
    assert v["small_lr_is_worse"] == "partly"
    t = claims_table({**PAPER, ("unstructured", "ticket_init", 0.01): 0.85})
    assert verdicts(t)["ticket_helps_unstructured_small_lr_only"] == "partly"  # hurts at 0.01


def test_claims_untested_without_their_trials():
    t = claims_table({k: a for k, a in PAPER.items() if k[0] != "unstructured" and k[1] != "scratch_e"})
    v = verdicts(t)
    assert v["l1_scratch_e_matches_finetune"] == "not tested at this scale"
    assert v["unstructured_scratch_b_matches_finetune"] == "not tested at this scale"
    assert v["ticket_helps_unstructured_small_lr_only"] == "not tested at this scale"
    assert v["l1_scratch_b_matches_finetune"] == "reproduced"
    slim = claims_table({**PAPER, ("slimming", "finetune", 0.001): 0.90,
                         ("slimming", "scratch_b", 0.1): 0.80})
    assert verdicts(slim)["slimming_scratch_b_matches_finetune"] == "not reproduced"
