"""Smoke run of experiments.network_slimming: stages, sizes, saved pruned models, bad input."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from cli import assert_rejected, run_experiment

COLUMNS = ["method", "stage", "lam", "prune_ratio", "seed", "params", "macs", "test_acc",
           "latency_ms", "latency_cl_ms", "widths"]
STAGES = {"baseline", "sparse", "pruned", "finetuned"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    base = tmp_path_factory.mktemp("slim")
    run_experiment("network_slimming", "--scale", "smoke", base=base)
    out = base / "results" / "network_slimming" / "smoke"
    return base, out, pd.read_csv(out / "trials.csv")


def vgg_params(widths: str, in_ch: int = 1, classes: int = 10) -> int:
    """Parameters of a bias-free conv3x3-BN VGG with these conv widths and a Linear head."""
    total, c = 0, in_ch
    for w in map(int, widths.split("-")):
        total += 9 * c * w + 2 * w  # kernel, BN γ and β
        c = w
    return total + c * classes + classes


def test_columns_stages_and_sizes(smoke):
    _, out, trials = smoke
    assert set(COLUMNS) <= set(trials.columns)
    assert set(trials.stage) == STAGES and set(trials.seed) == {0, 1}
    assert set(trials.lam) == {0.0, 0.01} and set(trials.prune_ratio) == {0.0, 0.3, 0.7}
    # per seed: 2 trained models, each pruned at 2 ratios and fine-tuned
    assert (trials.groupby("seed").size() == 2 * (1 + 2 * 2)).all()
    assert trials.test_acc.between(0, 1).all()
    assert (trials.latency_ms > 0).all() and (trials.latency_cl_ms > 0).all()
    # the physically pruned model's parameter count is the formula's for its widths
    assert (trials.params == trials.widths.map(vgg_params)).all()
    for _, g in trials.groupby(["seed", "lam"]):
        by_ratio = g.groupby("prune_ratio")
        assert (by_ratio.params.nunique() == 1).all()  # fine-tuning keeps the pruned shapes
        params, macs = by_ratio.params.first(), by_ratio.macs.first()
        assert params.is_monotonic_decreasing and params.is_unique
        assert macs.is_monotonic_decreasing and macs.is_unique
    table = (out / "table.md").read_text()
    assert "| λ | λ at paper budget | pruned | trained acc % | pruned acc %" in table
    assert "Polarisation" in table and "Machine:" in table
    for png in ("gamma_hist.png", "accuracy_vs_ratio.png"):
        assert (out / png).stat().st_size > 10_000


def test_training_learns_and_penalty_shrinks_gammas(smoke):
    _, out, trials = smoke
    trained = trials[trials.prune_ratio == 0]
    assert (trained.test_acc > 0.5).all()
    gammas = pd.read_csv(out / "gammas.csv")
    median = gammas.groupby(["lam", "seed"]).gamma.median().unstack("lam")
    assert (median[0.01] < median[0.0] - 0.05).all()  # λ·sign(γ) pulls every γ towards 0
    low = trials[trials.prune_ratio == 0.3]
    pruned = low[low.stage == "pruned"].set_index(["seed", "lam"]).test_acc
    tuned = low[low.stage == "finetuned"].set_index(["seed", "lam"]).test_acc
    assert tuned.mean() > pruned.mean() + 0.1  # fine-tuning recovers what pruning lost


def test_saved_pruned_model_reloads_with_its_shapes_and_outputs(smoke):
    from lib import models
    from lib.prune import structured
    from lib.prune.surgery import channel_mask_model, load_pruned, prune_channels

    base, _, trials = smoke
    runs = base / "runs" / "smoke" / "network_slimming"
    sparse = trials[(trials.stage == "sparse") & (trials.seed == 0)].iloc[0]
    model = models.build("vgg_narrow", (1, 28, 28), 10)
    model.load_state_dict(torch.load(runs / sparse.run / "final.pt", weights_only=True))
    model.eval()
    x = torch.randn(8, 1, 28, 28)
    for stage, name in (("pruned", "pruned.pt"), ("finetuned", "final.pt")):
        row = trials[(trials.stage == stage) & (trials.seed == 0) & (trials.lam == sparse.lam)
                     & (trials.prune_ratio == 0.7)].iloc[0]
        loaded = load_pruned(runs / row.run / name).eval()
        convs = [m.out_channels for m in loaded.features if isinstance(m, torch.nn.Conv2d)]
        assert "-".join(map(str, convs)) == row.widths
        assert sum(p.numel() for p in loaded.parameters()) == row.params
    # the saved pruned model is exactly the surgery of the trained one, and its masked twin's
    keep = structured.select_global(structured.importance("bn_gamma", model), 0.7, 0.1)
    pruned = load_pruned(runs / trials[(trials.stage == "pruned") & (trials.seed == 0) & (
        trials.lam == sparse.lam) & (trials.prune_ratio == 0.7)].iloc[0].run / "pruned.pt").eval()
    with torch.no_grad():
        assert torch.allclose(pruned(x), prune_channels(model, keep).eval()(x), atol=1e-5)
        assert torch.allclose(pruned(x), channel_mask_model(model, keep).eval()(x), atol=1e-4)


@pytest.mark.parametrize("args, msg", [
    (("--model", "nope"), "model: unknown 'nope'"),
    (("--model", "lenet_300_100"), "criterion: 'bn_gamma' needs a BatchNorm"),
    (("--ratios", "0.3,1.0"), "ratio: must be in [0, 1)"),
    (("--ratios", "0.97"), "ratio: 0.97 prunes"),
    (("--lams", "0,1e-3"), "lams: each λ must be > 0"),
    (("--lams", "abc"), "lams: expected comma-separated numbers"),
    (("--min-keep", "0"), "min_keep: must be"),
])
def test_bad_input_fails_in_one_line_before_compute(tmp_path, args, msg):
    assert_rejected("network_slimming", args, msg, tmp_path)


def test_notebook_runs_on_smoke_results(smoke, monkeypatch):
    from notebooks import execute

    _, out, _ = smoke
    monkeypatch.setenv("LAB_RESULTS_DIR", str(out.parents[1]))  # <root>/network_slimming/smoke
    nb = execute("network_slimming", scale="smoke")
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "baseline test accuracy" in text and "fine-tuning recovers" in text
