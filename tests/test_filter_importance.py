"""Smoke run of experiments.filter_importance: equal MACs per ratio, saved pruned models, reuse
(bad input: test_bad_input.py)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from cli import ROOT, assert_report, assert_reused, smoke_fixture

COLUMNS = ["method", "prune_ratio", "seed", "params", "macs", "test_acc", "stage",
           "macs_reduction", "params_reduction", "size_bytes"]
CRITERIA = {"l1", "l2", "fpgm", "apoz", "bn_gamma", "random"}
RATIOS = [0.3, 0.6]  # the smoke scale's


smoke = smoke_fixture("filter_importance")


@pytest.mark.smoke
def test_columns_stages_and_accuracies(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.seed) == {0, 1}
    # per seed: the baseline, then 2 ratios x 6 criteria x {pruned, finetuned}
    assert (trials.groupby("seed").size() == 1 + 2 * 6 * 2).all()
    assert set(trials.method) == CRITERIA | {"dense"}
    assert set(trials.stage) == {"baseline", "pruned", "finetuned"}
    assert (trials[trials.stage == "baseline"].test_acc > 0.5).all()  # trained, far above chance
    table = assert_report(out, "filter_importance", 50,
                          "accuracy_pruned.png", "accuracy_finetuned.png")
    assert "| ratio per layer | criterion | params | MACs | MACs reduction %" in table


def expected_params(ratio: float) -> int:
    """vgg_narrow with n - round(ratio·n) filters left in every conv, built from scratch."""
    return count_params_of(tuple(v if v == "M" else v - round(ratio * v) for v in (16, "M", 32, "M", 64, 64, "M")))


def count_params_of(widths: tuple) -> int:
    """Parameters of vgg_narrow built from scratch with these widths."""
    from lib.metrics import count_params
    from lib.models import build

    return count_params(build("vgg_narrow", (1, 28, 28), 10, widths=widths))


@pytest.mark.smoke
def test_finetuning_starts_from_the_pruned_model(smoke):
    """A fine-tuned trial's curve starts at its pruned model's accuracy and ends at the reported
    one (final weights); at the mild ratio the short fine-tuning recovers accuracy."""
    base, _, trials = smoke
    keys = ["seed", "method", "prune_ratio"]
    pruned = trials[trials.stage == "pruned"].set_index(keys)
    finetuned = trials[trials.stage == "finetuned"].set_index(keys)
    for key, r in finetuned.iterrows():
        curve = pd.read_csv(base / "runs" / "smoke" / "filter_importance" / r.run / "metrics.csv")
        assert (curve.step.iloc[0], curve.test_acc.iloc[0]) == (0, pruned.test_acc[key]), key
        assert curve.test_acc.iloc[-1] == r.test_acc, key
    mild = finetuned.xs(0.3, level="prune_ratio").test_acc
    assert mild.mean() > pruned.xs(0.3, level="prune_ratio").test_acc.mean()


@pytest.mark.smoke
def test_every_criterion_has_the_same_macs_at_a_ratio(smoke):
    _, _, trials = smoke
    pruned = trials[trials.stage != "baseline"]
    per_ratio = pruned.groupby("prune_ratio")[["params", "macs", "macs_reduction"]].nunique()
    assert (per_ratio == 1).all().all()  # every criterion, seed and stage: one architecture
    dense = trials[trials.stage == "baseline"]
    assert (dense.macs_reduction == 0).all() and dense.params.nunique() == 1
    red = pruned.groupby("prune_ratio").macs_reduction.first()
    assert red.index.tolist() == RATIOS and 0 < red[0.3] < red[0.6] < 1
    for r in RATIOS:  # ~ 1 - (1-r)^2 for the convs between two pruned layers
        assert abs(red[r] - (1 - (1 - r) ** 2)) < 0.08, (r, red[r])
        assert pruned[pruned.prune_ratio == r].params.iloc[0] == expected_params(r)
    assert (dense.params == expected_params(0.0)).all()


@pytest.mark.smoke
def test_saved_pruned_model_loads_with_its_shapes_and_accuracy(smoke):
    """The experiment's own pruned.pt: load_pruned rebuilds the smaller widths and, evaluated
    on the smoke test split, gives exactly the accuracy the trial recorded."""
    from experiments.filter_importance.config import Trial, for_scale
    from lib import data
    from lib.metrics import count_params
    from lib.prune.surgery import load_pruned, widths
    from lib.runs import Run
    from lib.train import evaluate

    base, _, trials = smoke
    setup = for_scale("smoke").setup
    splits = data.load(setup.dataset, val_size=setup.val_size, train_limit=setup.train_limit,
                       test_limit=setup.test_limit)
    for crit in ("fpgm", "apoz"):
        row = trials[(trials.stage == "pruned") & (trials.method == crit) & (trials.seed == 1)
                     & (trials.prune_ratio == 0.6)].iloc[0]
        trial = Trial(setup, 1, "pruned", crit, 0.6, apoz_samples=256 if crit == "apoz" else 0)
        run = Run("filter_importance", trial, root=base / "runs", scale="smoke")
        assert run.hash == row.run
        model = load_pruned(run.path("pruned.pt"))
        assert list(widths(model).values()) == [6, 13, 26, 26]  # 16, 32, 64, 64 less 60%
        assert count_params(model) == row.params
        torch.manual_seed(0)
        assert evaluate(model, splits.test_x, splits.test_y)[1] == row.test_acc


@pytest.mark.smoke
def test_listed_layers_alone_are_pruned_and_sensitivity_agrees(smoke, tmp_path):
    """--layers features.8 prunes that conv alone (its 64 filters to 32; the next conv loses
    the matching inputs, every other layer keeps its filters), on the same baselines;
    --sensitivity prunes each layer alone at 10%..90%, and its (features.8, 0.5) row is the
    same model as the l1 trial's: same MACs, same test accuracy, by another code path."""
    from cli import run_experiment
    from experiments.filter_importance.__main__ import SENSITIVITY_RATIOS
    from lib.prune.surgery import load_pruned, widths

    base, _, first = smoke
    out = tmp_path / "layers"
    run_experiment("filter_importance", "--scale", "smoke", "--criteria", "l1,random", "--ratios", "0.5",
                   "--layers", "features.8", "--sensitivity", "--out", str(out), base=base, wandb=False)
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials.stage) == {"baseline", "pruned", "finetuned"}  # no sensitivity rows here
    dense = first[first.stage == "baseline"].set_index("seed").run
    assert trials[trials.stage == "baseline"].set_index("seed").run.equals(dense)  # reused
    pruned = trials[trials.stage == "pruned"]
    assert pruned.params.nunique() == 1 and pruned.params.iloc[0] == count_params_of((16, "M", 32, "M", 32, 64, "M"))
    for run in pruned.run:
        path = base / "runs" / "smoke" / "filter_importance" / run / "pruned.pt"
        assert list(widths(load_pruned(path)).values()) == [16, 32, 32, 64]
    assert "of the listed layers (features.8; the others keep every filter)" in (out / "table.md").read_text()

    sens = pd.read_csv(out / "sensitivity.csv")
    assert len(sens) == 2 * 4 * len(SENSITIVITY_RATIOS)  # seeds x layers x fractions
    assert all(tuple(g) == SENSITIVITY_RATIOS for _, g in sens.groupby(["seed", "layer"]).prune_ratio)
    alone = sens[(sens.layer == "features.8") & (sens.prune_ratio == 0.5)].set_index("seed")
    l1 = pruned[pruned.method == "l1"].set_index("seed")
    assert (alone.macs == l1.macs).all() and (alone.test_acc == l1.test_acc).all()
    first_layer = sens[sens.layer == "features.0"].groupby("prune_ratio").macs.first()
    assert first_layer.is_monotonic_decreasing and first_layer.iloc[0] < trials.macs.max()
    assert "| fraction of the layer's filters removed | features.0 | features.4 | features.8 | features.11 |" \
        in (out / "sensitivity.md").read_text()
    assert (out / "sensitivity.png").stat().st_size > 10_000

    # a rerun reads each baseline's sensitivity.json back instead of pruning again: a value
    # planted in seed 0's record reaches the table, and a damaged record is recomputed
    import json
    runs = base / "runs" / "smoke" / "filter_importance"
    cache = [runs / r / "sensitivity.json" for r in dense.sort_index()]
    planted = json.loads(cache[0].read_text())
    planted[0]["test_acc"] = 0.123456
    cache[0].write_text(json.dumps(planted))
    cache[1].write_text("{not json")
    run_experiment("filter_importance", "--scale", "smoke", "--criteria", "l1,random", "--ratios", "0.5",
                   "--layers", "features.8", "--sensitivity", "--out", str(out), base=base, wandb=False)
    again = pd.read_csv(out / "sensitivity.csv")
    assert (again.test_acc == 0.123456).sum() == 1
    assert len(json.loads(cache[1].read_text())) == len(sens[sens.seed == 1])  # rewritten
    assert again[again.seed == 1].test_acc.tolist() == sens[sens.seed == 1].test_acc.tolist()


@pytest.mark.smoke
def test_rerun_reuses_finished_trials(smoke):
    base, out, _ = smoke
    footer = (out / "table.md").read_text().split("\nTrials: ")[1]
    assert_reused("filter_importance", base)
    # the footer still names the invocation that trained (the dense row's latency is measured
    # again on every invocation, so the table itself may differ)
    assert (out / "table.md").read_text().split("\nTrials: ")[1] == footer


@pytest.mark.smoke
def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import smoke_output_text

    text = smoke_output_text("filter_importance", smoke.out, monkeypatch)
    assert "baseline test accuracy" in text and "equal MACs: yes" in text


def test_committed_default_hashes():
    """Every committed default trial keeps its run folder: its Trial, rebuilt from the default
    preset and the row's fields, hashes to the row's `run` (baseline, pruned with and without
    APoZ samples, fine-tuned alike)."""
    from experiments.filter_importance.config import Trial, for_scale
    from lib.runs import config_hash

    cfg = for_scale("default")
    rows = pd.read_csv(ROOT / "results" / "filter_importance" / "default" / "trials.csv")
    assert set(rows.stage) == {"baseline", "pruned", "finetuned"} and "apoz" in set(rows.method)
    for r in rows.itertuples():
        if r.stage == "baseline":
            trial = Trial(cfg.setup, int(r.seed))
        else:
            trial = Trial(cfg.setup, int(r.seed), r.stage, r.method, float(r.prune_ratio),
                          apoz_samples=cfg.apoz_samples if r.method == "apoz" else 0,
                          finetune=cfg.finetune if r.stage == "finetuned" else None)
        assert config_hash(trial) == r.run, r


# ---- the papers' claims (experiments/filter_importance/claims.py) on hand-made tables

def claims_table(acc: dict, pruned: dict | None = None) -> pd.DataFrame:
    """3 seeds: the dense baseline (0.90) and each criterion at ratios 0.2 (35% of the MACs
    removed) and 0.6 (83%), fine-tuned to `acc[criterion]` (minus 0.05 at 0.6) and, right
    after pruning, to `pruned[criterion]` (default 0.3)."""
    rows = []
    for seed, e in enumerate((0.0, 0.002, -0.002)):
        rows.append({"seed": seed, "method": "dense", "stage": "baseline", "prune_ratio": 0.0,
                     "macs_reduction": 0.0, "test_acc": 0.90 + e})
        for crit, a in acc.items():
            for ratio, macs, drop in ((0.2, 0.35, 0.0), (0.6, 0.83, 0.05)):
                common = {"seed": seed, "method": crit, "prune_ratio": ratio, "macs_reduction": macs}
                rows.append({**common, "stage": "pruned",
                             "test_acc": (pruned or {}).get(crit, 0.3) + e})
                rows.append({**common, "stage": "finetuned", "test_acc": a - drop + 2 * e})
    return pd.DataFrame(rows)


def verdicts(trials: pd.DataFrame) -> dict:
    from experiments.claims import evaluate
    from experiments.filter_importance.claims import CLAIMS

    return dict(zip(*evaluate(CLAIMS, trials)[["id", "verdict"]].T.values))


PAPERS = {"l1": 0.90, "l2": 0.90, "fpgm": 0.91, "apoz": 0.89, "bn_gamma": 0.90, "random": 0.88}


def test_claims_of_the_papers_as_they_state_them():
    v = verdicts(claims_table(PAPERS, pruned={"l1": 0.5, "random": 0.2}))
    assert v == {"l1_prunes_34pct_without_loss": "reproduced", "l1_beats_random": "reproduced",
                 "l2_similar_to_l1": "reproduced", "fpgm_beats_norm": "reproduced",
                 "apoz_beats_random": "reproduced",
                 "bn_gamma_after_sparsity_training": "not tested at this scale"}


def test_claims_fail_or_partly_hold_when_the_table_says_so():
    # every criterion lands together (what Adam without decay gave); l1 ahead only before
    # fine-tuning; l1 below the dense model at 35% of the MACs
    same = {c: 0.88 for c in PAPERS}
    v = verdicts(claims_table(same, pruned={"l1": 0.5, "random": 0.2}))
    assert v["l1_prunes_34pct_without_loss"] == "not reproduced"
    assert v["l1_beats_random"] == "partly"
    assert v["fpgm_beats_norm"] == v["apoz_beats_random"] == "not reproduced"
    assert v["l2_similar_to_l1"] == "reproduced"
    assert verdicts(claims_table({**same, "l2": 0.95}))["l2_similar_to_l1"] == "partly"


def test_claims_untested_without_their_trials():
    t = claims_table({"l1": 0.90, "random": 0.88})
    v = verdicts(t)
    assert v["fpgm_beats_norm"] == v["apoz_beats_random"] == "not tested at this scale"
    t = t[t.prune_ratio != 0.2]  # no ratio near Li et al.'s 34% of the MACs
    assert verdicts(t)["l1_prunes_34pct_without_loss"] == "not tested at this scale"
