"""Smoke run of experiments.filter_importance: equal MACs per ratio, saved pruned models, bad input."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from cli import assert_rejected, run_experiment

COLUMNS = ["method", "prune_ratio", "seed", "params", "macs", "test_acc", "stage",
           "macs_reduction", "params_reduction", "size_bytes"]
CRITERIA = {"l1", "l2", "fpgm", "apoz", "bn_gamma", "random"}
RATIOS = [0.3, 0.6]  # the smoke scale's


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("filters")
    run_experiment("filter_importance", "--scale", "smoke", base=base)
    out = base / "results" / "filter_importance" / "smoke"
    return base, out, pd.read_csv(out / "trials.csv")


def test_columns_stages_and_accuracies(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.seed) == {0, 1}
    # per seed: the baseline, then 2 ratios x 6 criteria x {pruned, finetuned}
    assert (trials.groupby("seed").size() == 1 + 2 * 6 * 2).all()
    assert set(trials.method) == CRITERIA | {"dense"}
    assert set(trials.stage) == {"baseline", "pruned", "finetuned"}
    assert trials.test_acc.between(0, 1).all()
    assert (trials[trials.stage == "baseline"].test_acc > 0.5).all()  # trained, far above chance
    table = (out / "table.md").read_text()
    assert "| ratio per layer | criterion | params | MACs | MACs reduction %" in table
    assert "Machine:" in table
    for png in ("accuracy_pruned.png", "accuracy_finetuned.png"):
        assert (out / png).stat().st_size > 10_000


def expected_params(ratio: float) -> int:
    """vgg_narrow with n - round(ratio·n) filters left in every conv, built from scratch."""
    from lib.metrics import count_params
    from lib.models import build

    widths = tuple(v if v == "M" else v - round(ratio * v) for v in (16, "M", 32, "M", 64, 64, "M"))
    return count_params(build("vgg_narrow", (1, 28, 28), 10, widths=widths))


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


@pytest.mark.parametrize("args, msg", [
    (("--criteria", "l1,nope"), "criteria: unknown 'nope'"),
    (("--ratios", "0.3,0.99"), "ratio: pruning 0.99 of layer 'features.0' (16 channels) leaves none"),
    (("--ratios", "0"), "ratios: each must be in (0, 1), got 0.0"),
    (("--model", "conv2"), "surgery: unsupported model type 'ConvNet'"),
    (("--model", "nope"), "model: unknown 'nope'"),
    (("--scale", "x"), "scale: unknown 'x'")])
def test_bad_input_fails_in_one_line_before_compute(tmp_path, args, msg):
    assert_rejected("filter_importance", args, msg, tmp_path)


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import execute

    _, out, _ = smoke
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))  # <root>/filter_importance/smoke
    nb = execute("filter_importance", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "baseline test accuracy" in text and "equal MACs: yes" in text
